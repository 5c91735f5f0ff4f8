"""Extraction: the vectorized kernel and the legacy loop against each other
and against the float64 oracle."""

import itertools

import numpy as np
import pytest
from keras import ops

from _fresh_process import TESTS_DIR, run_python
from conftest import BACKEND, covering, requires
from oracle import asymmetric_object, oracle_patches
from ptycho_layers.legacy import extract_patches_legacy
from ptycho_layers.operators import coordinate_dtype
from ptycho_layers.operators import extract_patches_batched
from ptycho_layers.xla.extraction import batch_pieces


def numpy(x):
    return ops.convert_to_numpy(x)


def make_offsets(kind, batch, groups, height, width, patch_size, seed=0):
    """Offsets [x, y] (float32) of one kind, for a (height, width) object."""
    rng = np.random.default_rng(seed)
    shape = (batch, groups)
    if kind == "fractional":
        x = rng.uniform(0, width, shape)
        y = rng.uniform(0, height, shape)
    elif kind == "integer":
        x = rng.integers(0, width, shape)
        y = rng.integers(0, height, shape)
    elif kind == "edges":
        # Patches that straddle every edge and corner, on and just beyond.
        half = patch_size // 2
        x = rng.choice([-half - 0.5, -0.25, 0.0, width - 1, width - 0.5, width + half - 0.25], shape)
        y = rng.choice([-half - 0.75, -0.5, 0.0, height - 1, height - 0.25, height + half - 0.5], shape)
    elif kind == "far":
        x = rng.choice([-1e4, 1e6, -3.0 * patch_size], shape)
        y = rng.choice([-1e4, 1e6, 5.0 * height + patch_size], shape)
    else:
        raise AssertionError(kind)
    return np.stack([x, y], axis=-1).astype("float32")


DTYPES = ["complex64", "complex128", "float32", "float64"]
SIZES = [1, 7, 32, 64]
GRIDSIZES = [1, 2, 3]
OBJECTS = [(40, 40), (37, 53)]
KINDS = ["fractional", "integer", "edges", "far"]


def _cases():
    # Every size, gridsize, object and offset kind with every dtype by
    # default (covering); the product of the axes, dtypes cycling, with
    # -m slow.
    cases = [
        (size, gridsize, obj, kind, DTYPES[i % len(DTYPES)])
        for i, (size, gridsize, obj, kind) in enumerate(
            itertools.product(SIZES, GRIDSIZES, OBJECTS, KINDS)
        )
    ]
    return covering(cases, lambda case: [(axis, case[axis], case[4]) for axis in range(4)])


@pytest.mark.parametrize("patch_size,gridsize,obj,kind,dtype", _cases())
def test_batched_matches_legacy_and_oracle(patch_size, gridsize, obj, kind, dtype):
    height, width = obj
    image = asymmetric_object(height, width, dtype)[None]
    offsets = make_offsets(kind, 2, gridsize**2, height, width, patch_size, seed=patch_size + gridsize)
    expected = oracle_patches(image, offsets, patch_size)
    scale = np.abs(image).max()

    batched = numpy(extract_patches_batched(image, offsets, patch_size))
    legacy = numpy(extract_patches_legacy(image, offsets, patch_size))

    assert batched.shape == (2, patch_size, patch_size, gridsize**2)
    assert batched.dtype == np.dtype(dtype)
    assert legacy.dtype == np.dtype(dtype)
    # The vectorized path keeps the offsets' own precision: a few ulps.
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-6 * scale)
    # The legacy path works in whole-image float32 coordinates (its
    # transform is float32 on every backend), which costs about 1e-5 of the
    # object's range at these sizes; 1e-4 is the documented bar for it.
    np.testing.assert_allclose(legacy, expected, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(batched, legacy, rtol=0, atol=1e-4 * scale)


def test_float64_images_get_float64_precision():
    image = asymmetric_object(30, 30, "complex128")[None]
    # A sub-pixel position that float32 cannot hold.
    offsets = np.array([[[15.123456789012, 14.987654321098]]], "float64")
    batched = numpy(extract_patches_batched(image, offsets, 8))
    expected = oracle_patches(image, offsets, 8)
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-12)
    assert coordinate_dtype("complex128") == "float64"
    assert coordinate_dtype("complex64") == "float32"
    assert coordinate_dtype("float16") == "float32"


@pytest.mark.parametrize("patch_size", [1, 6, 7])
@pytest.mark.parametrize("batched", [True, False])
def test_integer_offsets_equal_slicing_exactly(patch_size, batched):
    height, width = 23, 31
    image = asymmetric_object(height, width, "complex64")
    padded = np.zeros((height + 4 * patch_size, width + 4 * patch_size), "complex64")
    pad = 2 * patch_size
    padded[pad : pad + height, pad : pad + width] = image
    offsets = make_offsets("integer", 3, 4, height, width, patch_size, seed=5)
    offsets[0, 0] = [0, 0]
    offsets[1, 1] = [width - 1, height - 1]
    kernel = extract_patches_batched if batched else extract_patches_legacy
    patches = numpy(kernel(image[None], offsets, patch_size))
    half = patch_size // 2
    for b, k in itertools.product(range(3), range(4)):
        x, y = offsets[b, k].astype(int)
        expected = padded[pad + y - half : pad + y - half + patch_size,
                          pad + x - half : pad + x - half + patch_size]
        if batched:
            np.testing.assert_array_equal(patches[b, :, :, k], expected)
        else:
            # Integer translations land on pixel centres: the legacy op
            # reproduces them to the last bit too, away from rounding.
            np.testing.assert_allclose(patches[b, :, :, k], expected, atol=1e-6)


@pytest.mark.parametrize("kernel", [extract_patches_batched, extract_patches_legacy])
def test_offsets_are_x_then_y(kernel):
    # A non-square object with distinct rows and columns: swapping x and y
    # samples a different place (or outside the object) and fails here.
    image = asymmetric_object(20, 45, "float32")
    offsets = np.array([[[37.0, 5.0]]], "float32")
    patches = numpy(kernel(image[None], offsets, 4))
    np.testing.assert_allclose(patches[0, :, :, 0], image[3:7, 35:39], atol=1e-6)
    swapped = numpy(kernel(image[None], offsets[..., ::-1].copy(), 4))
    assert not np.allclose(swapped[0, :, :, 0], image[3:7, 35:39])


@pytest.mark.parametrize("kernel", [extract_patches_batched, extract_patches_legacy])
def test_non_finite_offsets_give_nan_for_that_patch_alone(kernel):
    image = asymmetric_object(16, 16, "complex64")[None]
    offsets = np.array([[[8.0, 8.0], [np.nan, 3.0]], [[np.inf, 2.0], [4.5, -np.inf]], [[3.0, 3.0], [9.25, 7.5]]], "float32")
    patches = numpy(kernel(image, offsets, 5))
    finite = np.isfinite(offsets).all(axis=-1)
    for b, k in itertools.product(range(3), range(2)):
        if finite[b, k]:
            expected = oracle_patches(image, offsets[b : b + 1, k : k + 1], 5)[0, :, :, 0]
            np.testing.assert_allclose(patches[b, :, :, k], expected, atol=1e-4)
        else:
            assert np.isnan(patches[b, :, :, k]).all()


@pytest.mark.parametrize("kernel", [extract_patches_batched, extract_patches_legacy])
def test_far_outside_gives_zeros(kernel):
    image = asymmetric_object(16, 12, "complex64")[None]
    offsets = np.array([[[1e30, 4.0], [-1e30, -1e30], [5.0, 2e9], [-40.0, 3.0]]], "float32")
    patches = numpy(kernel(image, offsets, 6))
    np.testing.assert_array_equal(patches, 0)


@pytest.mark.parametrize("kernel", [extract_patches_batched, extract_patches_legacy])
def test_one_image_per_row(kernel):
    images = np.stack([asymmetric_object(18, 21, "complex64", seed=s) for s in range(3)])
    offsets = make_offsets("fractional", 3, 4, 18, 21, 6, seed=2)
    patches = numpy(kernel(images, offsets, 6))
    np.testing.assert_allclose(patches, oracle_patches(images, offsets, 6), atol=1e-4)


@pytest.mark.parametrize("kernel", [extract_patches_batched, extract_patches_legacy])
def test_empty_batch(kernel):
    image = asymmetric_object(10, 10, "complex64")[None]
    patches = kernel(image, np.zeros((0, 4, 2), "float32"), 5)
    assert tuple(patches.shape) == (0, 5, 5, 4)


@requires("scipy")
def test_oracle_agrees_with_scipy():
    """The oracle itself, checked against scipy's order-1 spline on the
    zero-extended grid (mode 'grid-constant')."""
    from scipy import ndimage

    image = asymmetric_object(19, 26, "complex128")
    offsets = make_offsets("edges", 2, 4, 19, 26, 7, seed=3)
    offsets[0] = make_offsets("fractional", 1, 4, 19, 26, 7, seed=4)[0]
    ours = oracle_patches(image[None], offsets, 7)
    steps = np.arange(7.0)
    for b, k in itertools.product(range(2), range(4)):
        x, y = offsets[b, k].astype(np.float64)
        rows, cols = np.meshgrid(y - 3 + steps, x - 3 + steps, indexing="ij")
        sample = [ndimage.map_coordinates(part, [rows, cols], order=1, mode="grid-constant", cval=0.0) for part in (image.real, image.imag)]
        np.testing.assert_allclose(ours[b, :, :, k], sample[0] + 1j * sample[1], atol=1e-12)


@pytest.mark.parametrize("patch_size", [1, 2, 8, 64])
@pytest.mark.parametrize("batch", [1, 2, 3, 256])
def test_batch_pieces_cover_the_batch_and_bound_the_windows(batch, patch_size):
    pieces = batch_pieces(batch, 4, patch_size, patch_size + 1)
    if pieces == [(0, None)]:
        return  # one piece (torch, or a batch too small to split)
    covered = [row for start, stop in pieces for row in range(start, stop)]
    assert covered == list(range(batch))
    largest = max(stop - start for start, stop in pieces)
    # A piece's (N+1)^2 windows take at most 3/4 of the whole output, unless
    # a single row of offsets already does.
    window_to_output = (patch_size + 1) ** 2 / patch_size**2
    assert largest == 1 or largest * window_to_output <= 0.75 * batch


@pytest.mark.skipif(BACKEND == "torch", reason="XLA's buffer assignment: TensorFlow and JAX")
def test_compiled_working_memory_is_below_the_output_size(tmp_path):
    """The structural fact behind the memory target: the compiled forward
    pass holds less than the output's size beyond its inputs and output
    (the gathered windows alone would be (N+1)^2/N^2 of it)."""
    groups, channels, n = 64, 4, 32
    output_bytes = groups * channels * n * n * 8  # complex64
    # The benchmark is a folder of the repository, outside the package.
    code = f"""
        import os, sys, tempfile
        sys.path.insert(0, {str(TESTS_DIR.parent)!r})
        dump = tempfile.mkdtemp()
        from benchmarks import working_memory
        os.environ.update(working_memory.dump_flags(dump))
        import numpy as np
        from keras import ops
        from oracle import asymmetric_object
        from ptycho_layers.functional import extract_patches
        from ptycho_layers.backends import batch_sizes
        # Compiled at the first call, as it would be were it larger than
        # what runs on the host.
        batch_sizes.HOST_ELEMENTS = -1
        rng = np.random.default_rng(0)
        image = asymmetric_object(96, 96, "complex64")[None]
        offsets = rng.uniform(0, 96, ({groups}, {channels}, 2)).astype("float32")
        images, offsets = ops.convert_to_tensor(image), ops.convert_to_tensor(offsets)
        ops.convert_to_numpy(extract_patches(images, offsets, {n}))
        print("TEMP", working_memory.compiled_temp_bytes(images, offsets, {n}))
    """
    out = run_python(code, tmp_path)
    temp = int(out.split("TEMP")[-1].split()[0])
    assert 0 < temp <= 0.8 * output_bytes, (temp, output_bytes)
