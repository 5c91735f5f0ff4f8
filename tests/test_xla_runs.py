"""The run gather of whole windows and the run scatter, its adjoint,
against windows cut from (and added into) a zero-padded copy in numpy, for
every way a window can lie across the object's edges."""

import itertools

import numpy as np
import pytest

from conftest import BACKEND
from ptycho_layers import backends
from ptycho_layers.xla import padded_table
from ptycho_layers.xla import runs

pytestmark = pytest.mark.skipif(
    backends.current().take_runs is None,
    reason="XLA's run gather and scatter: TensorFlow and JAX",
)


def expected_windows(images, image_index, x_start, y_start, size):
    """(B, c, size, size) windows of the zero-extended images, in numpy."""
    count, height, width = images.shape
    pad = 2 * size + 2
    padded = np.zeros((count, height + 2 * pad, width + 2 * pad), images.dtype)
    padded[:, pad:pad + height, pad:pad + width] = images
    batch, groups = x_start.shape
    out = np.zeros((batch, groups, size, size), images.dtype)
    for b, k in itertools.product(range(batch), range(groups)):
        # Starts beyond [-size - 2, extent + 2] read zeros in both.
        y = np.clip(y_start[b, k], -size - 2, height + 2) + pad
        x = np.clip(x_start[b, k], -size - 2, width + 2) + pad
        out[b, k] = padded[image_index[b], y:y + size, x:x + size]
    return out


def compiled(fn):
    """`fn` compiled as the layer runs it: XLA's run gather and scatter
    exist only in compiled code."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


def _from_padded_table(images, image_index, x_start, y_start, size):
    _, height, width = images.shape
    starts = padded_table.starts(image_index, x_start, y_start, size, height, width)
    return backends.current().take_runs(padded_table.table(images, size), starts, size)


# The two ways windows are read: from the object itself (masks, and rows
# moved to the padded first and last rows) and from its padded table.
READERS = {"object": runs.gather_windows, "padded": _from_padded_table}


def gather(images, image_index, x_start, y_start, size, reader="object"):
    """Windows read by `reader` with this backend's run gather, compiled."""
    found = compiled(lambda *args: READERS[reader](*args, size))(
        images, image_index, x_start, y_start
    )
    return np.asarray(found)


def every_start(extent, size):
    """Starts wholly before, across the first edge, inside, across the last
    edge and wholly beyond, each at the boundary and one either side."""
    return sorted({
        -size - 5, -size - 1, -size, -size + 1, -1, 0, 1,
        extent - size - 1, extent - size, extent - size + 1,
        extent - 1, extent, extent + 1, extent + 9,
    })


@pytest.mark.parametrize(
    "height,width,size",
    [
        (9, 11, 4),  # wider and taller than a window
        (11, 5, 5),  # exactly one window wide
        (1, 7, 3),  # a single object row is both the first and the last
        (3, 8, 6),  # fewer rows than a window has
        (4, 6, 6),  # both
        (5, 3, 6),  # narrower than a window (padded table only)
    ],
)
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_windows_equal_zero_padded_slices(height, width, size, dtype, reader):
    if reader == "object" and width < size:
        pytest.skip("runs of the object itself need width >= size")
    rng = np.random.default_rng(height * width + size)
    images = (
        rng.normal(size=(2, height, width)) + 1j * rng.normal(size=(2, height, width))
    ).astype(dtype)
    pairs = np.array(list(itertools.product(every_start(width, size), every_start(height, size))))
    # Two rows of offsets, each reading its own image.
    x_start = np.stack([pairs[:, 0], pairs[::-1, 0]]).astype("int32")
    y_start = np.stack([pairs[:, 1], pairs[::-1, 1]]).astype("int32")
    image_index = np.array([0, 1], "int32")

    found = gather(images, image_index, x_start, y_start, size, reader)
    assert found.dtype == images.dtype
    np.testing.assert_array_equal(
        found, expected_windows(images, image_index, x_start, y_start, size)
    )


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_window_reads_nothing_outside_itself(reader):
    """Row runs that stick out of the object read the neighbouring object
    row there (or, from the padded table, zeros); those entries must come
    back as zeros, not as what is read (here NaN and inf along the left
    and right edges would show)."""
    height, width, size = 10, 12, 5
    images = np.arange(height * width, dtype="float32").reshape(1, height, width)
    images[0, :, 0] = np.nan
    images[0, :, -1] = np.inf
    starts = every_start(width, size)
    pairs = np.array(list(itertools.product(starts, every_start(height, size))))
    x_start = pairs[None, :, 0].astype("int32")
    y_start = pairs[None, :, 1].astype("int32")
    image_index = np.zeros(1, "int32")

    found = gather(images, image_index, x_start, y_start, size, reader)
    expected = expected_windows(images, image_index, x_start, y_start, size)
    np.testing.assert_array_equal(found, expected)
    # The test has teeth: some windows do hold the NaN and inf columns.
    assert np.isnan(expected).any() and np.isinf(expected).any()


def expected_sums(contributions, image_index, x_start, y_start, shape):
    """Windows added into zeros, in numpy, entries outside dropped."""
    count, height, width = shape
    size = contributions.shape[-1]
    pad = 2 * size + 2
    padded = np.zeros((count, height + 2 * pad, width + 2 * pad), contributions.dtype)
    batch, groups = x_start.shape
    for b, k in itertools.product(range(batch), range(groups)):
        y = np.clip(y_start[b, k], -size - 2, height + 2) + pad
        x = np.clip(x_start[b, k], -size - 2, width + 2) + pad
        padded[image_index[b], y:y + size, x:x + size] += contributions[b, k]
    return padded[:, pad:pad + height, pad:pad + width]


@pytest.mark.parametrize(
    "height,width,size",
    [(9, 11, 4), (11, 5, 5), (1, 7, 3), (3, 8, 6), (4, 6, 6)],
)
def test_added_windows_equal_numpy_sums(height, width, size):
    """add_windows drops what falls outside the object, whatever it is
    (NaN included), and adds the rest where gather_windows reads it."""
    pairs = np.array(list(itertools.product(every_start(width, size), every_start(height, size))))
    x_start = np.stack([pairs[:, 0], pairs[::-1, 0]]).astype("int32")
    y_start = np.stack([pairs[:, 1], pairs[::-1, 1]]).astype("int32")
    image_index = np.array([0, 1], "int32")
    rng = np.random.default_rng(size)
    contributions = rng.normal(size=x_start.shape + (size, size))
    contributions = contributions + 1j * rng.normal(size=contributions.shape)
    # Non-finite values where windows stick out must not reach the object.
    outside = expected_windows(
        np.ones((2, height, width)), image_index, x_start, y_start, size
    ) == 0
    contributions[outside] = np.nan
    shape = (2, height, width)

    found = np.asarray(compiled(lambda *args: runs.add_windows(*args, shape))(
        contributions, image_index, x_start, y_start
    ))
    contributions[outside] = 0
    np.testing.assert_allclose(
        found, expected_sums(contributions, image_index, x_start, y_start, shape),
        rtol=0, atol=1e-12,
    )
