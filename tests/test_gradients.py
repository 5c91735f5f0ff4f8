"""The written-out gradients against the float64 oracle and against each
backend's own autodiff of the vectorized kernel."""

import itertools

import numpy as np
import pytest
from keras import ops

from conftest import BACKEND, covering, tensorflow_only
from oracle import asymmetric_object, oracle_patches
from ptycho_layers import backends
from ptycho_layers.operators import extract_patches_batched
from ptycho_layers.operators import offsets_gradient
from ptycho_layers.operators import place_patches_batched
from test_extraction import make_offsets


def numpy(x):
    return ops.convert_to_numpy(x)


def run(fn, *args):
    """`fn(*args)`; on TensorFlow XLA-compiled, as the layer runs it (the
    windowed scatter exists only under XLA)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)(*args)
    return fn(*args)


def random_like(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        values = values + 1j * rng.standard_normal(shape)
    return values.astype(dtype)


def inner(a, b):
    """Re <a, b> = Re sum(conj(a) * b), in float64."""
    return float(np.real(np.vdot(np.asarray(a, np.complex128), np.asarray(b, np.complex128))))


def offsets_for(kind, height, width, patch_size, seed):
    offsets = make_offsets(kind, 3, 4, height, width, patch_size, seed=seed)
    return offsets.astype("float64")


@pytest.mark.parametrize(
    "patch_size,dtype,kind",
    # Every (kind, dtype) and (patch size, dtype) pair by default.
    covering(
        itertools.product(
            [1, 6, 9], ["complex128", "float64"], ["fractional", "integer", "edges", "far"]
        ),
        lambda case: [(case[0], case[1]), (case[2], case[1])],
    ),
)
def test_images_gradient_is_the_adjoint_of_the_oracle(kind, dtype, patch_size):
    """The patches are linear in the object: patches = A(offsets) obj. The
    gradient of Re <U, patches> is A^T U, so for any V,
    Re <images_gradient(U), V> = Re <U, oracle(V)>, exactly in float64."""
    height, width = 11, 14
    offsets = offsets_for(kind, height, width, patch_size, seed=patch_size)
    image = asymmetric_object(height, width, dtype)[None]
    upstream = random_like((3, patch_size, patch_size, 4), dtype, seed=1)
    probe = random_like(image.shape, dtype, seed=2)

    grad = numpy(run(
        lambda im, off, up: place_patches_batched(up, off, im.shape),
        image, offsets, upstream,
    ))
    assert grad.shape == image.shape and grad.dtype == np.dtype(dtype)
    lhs = inner(grad, probe)
    rhs = inner(upstream, oracle_patches(probe, offsets, patch_size))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(rhs)), (lhs, rhs)
    if kind == "far":
        np.testing.assert_array_equal(grad, 0)


def test_images_gradient_one_object_per_row():
    height, width, n = 9, 10, 5
    offsets = offsets_for("fractional", height, width, n, seed=3)
    images = np.stack([asymmetric_object(height, width, "complex128", seed=s) for s in range(3)])
    upstream = random_like((3, n, n, 4), "complex128", seed=4)
    probe = random_like(images.shape, "complex128", seed=5)
    grad = numpy(run(
        lambda im, off, up: place_patches_batched(up, off, im.shape), images, offsets, upstream
    ))
    lhs = inner(grad, probe)
    rhs = inner(upstream, oracle_patches(probe, offsets, n))
    assert abs(lhs - rhs) <= 1e-10 * abs(rhs)
    # Row b only reads image b: a probe on image 1 alone sees rows 1 only.
    only_one = np.zeros_like(probe)
    only_one[1] = probe[1]
    expected = inner(upstream[1:2], oracle_patches(only_one[1:2], offsets[1:2], n))
    assert abs(inner(grad, only_one) - expected) <= 1e-10 * abs(expected)


@pytest.mark.skipif(
    backends.current().add_runs is None, reason="XLA's run scatter: TensorFlow and JAX"
)
def test_element_scatter_fallback_matches_windowed_scatter(monkeypatch):
    """Without XLA's run scatter the element scatter serves; both add the
    same windows."""
    height, width, n = 12, 13, 6
    offsets = offsets_for("edges", height, width, n, seed=6)
    image = asymmetric_object(height, width, "complex64")[None]
    upstream = random_like((3, n, n, 4), "complex64", seed=7)

    def grad(im, off, up):
        return place_patches_batched(up, off, im.shape)

    windowed = numpy(run(grad, image, offsets, upstream))
    monkeypatch.setattr(backends.current(), "add_runs", None)
    element = numpy(run(grad, image, offsets, upstream))
    np.testing.assert_allclose(element, windowed, rtol=0, atol=1e-5)


def oracle_loss(image, offsets, patch_size, upstream):
    return inner(upstream, oracle_patches(image, offsets, patch_size))


@pytest.mark.parametrize("dtype", ["complex128", "float64"])
@pytest.mark.parametrize("reader", ["object", "padded"])
def test_offsets_gradient_matches_oracle_differences(dtype, reader, monkeypatch):
    """Inside one bilinear cell the patches are linear in each offset, so
    central differences of the oracle are exact up to rounding. Windows
    read from the object and from its padded table (`padded_table.fits`,
    forced either way where the backend has XLA's run gather)."""
    from ptycho_layers.xla import padded_table

    monkeypatch.setattr(padded_table, "PADDED_SHARE", float("inf") if reader == "padded" else 0.0)
    if reader == "padded" and backends.current().take_runs is None:
        pytest.skip("XLA's run gather: TensorFlow and JAX")
    height, width, n = 12, 11, 5
    rng = np.random.default_rng(8)
    # Fractions in [1/4, 3/4], some windows across an edge.
    whole = rng.integers(-2, [width + 2, height + 2], (3, 4, 2))
    offsets = (whole + rng.uniform(0.25, 0.75, (3, 4, 2))).astype("float64")
    image = asymmetric_object(height, width, dtype)[None]
    upstream = random_like((3, n, n, 4), dtype, seed=9)

    grad = numpy(run(
        lambda im, off, up: offsets_gradient(im, off, up), image, offsets, upstream
    ))
    assert grad.shape == offsets.shape and grad.dtype == np.float64
    step = 0.125
    expected = np.zeros_like(offsets)
    for position in np.ndindex(offsets.shape):
        moved = [offsets.copy(), offsets.copy()]
        moved[0][position] += step
        moved[1][position] -= step
        expected[position] = (
            oracle_loss(image, moved[0], n, upstream) - oracle_loss(image, moved[1], n, upstream)
        ) / (2 * step)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-9)


def test_offsets_gradient_is_zero_for_non_finite_offsets():
    height, width, n = 10, 10, 4
    offsets = offsets_for("fractional", height, width, n, seed=10)
    offsets[0, 1] = [np.nan, 2.0]
    offsets[2, 3] = [1.0, np.inf]
    image = asymmetric_object(height, width, "complex128")[None]
    upstream = random_like((3, n, n, 4), "complex128", seed=11)
    grad = numpy(run(
        lambda im, off, up: offsets_gradient(im, off, up), image, offsets, upstream
    ))
    assert np.all(grad[0, 1] == 0) and np.all(grad[2, 3] == 0)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow uses these gradients itself")
@pytest.mark.parametrize(
    "dtype", [pytest.param("complex128", marks=pytest.mark.slow), "float64"]  # ~15 s on JAX
)
def test_written_out_gradients_equal_autodiff(dtype):
    """On JAX and PyTorch the kernel is differentiated by autodiff, pieces
    and all: the written-out gradients agree with it."""
    height, width, n = 13, 12, 6
    offsets = offsets_for("edges", height, width, n, seed=12)
    offsets[:, :2] = offsets_for("fractional", height, width, n, seed=13)[:, :2]
    # Off whole pixels: there bilinear interpolation has a kink, the
    # written-out gradient takes the derivative from the right, and
    # autodiff of the kernel, whose zero weights read nothing, none from
    # the second neighbour; elsewhere the two must agree.
    offsets += 1 / 64
    image = asymmetric_object(height, width, dtype)[None]
    upstream = random_like((3, n, n, 4), dtype, seed=14)

    def loss(real_image, offsets):
        patches = extract_patches_batched(real_image, offsets, n)
        weights = ops.convert_to_tensor(upstream)
        if np.dtype(dtype).kind == "c":
            return ops.sum(ops.real(ops.conj(weights) * patches))
        return ops.sum(weights * patches)

    if BACKEND == "jax":
        import jax

        d_image, d_offsets = jax.grad(loss, argnums=(0, 1))(image, offsets)
        # JAX's cotangent of a complex input is the conjugate of TensorFlow's.
        d_image = np.conj(np.asarray(d_image))
    else:
        import torch

        args = [torch.tensor(image, requires_grad=True), torch.tensor(offsets, requires_grad=True)]
        loss(*args).backward()
        # PyTorch's gradient of a complex input is TensorFlow's convention.
        d_image, d_offsets = args[0].grad.numpy(), args[1].grad.numpy()
    written_image = numpy(place_patches_batched(upstream, offsets, image.shape))
    written_offsets = numpy(offsets_gradient(image, offsets, upstream))
    np.testing.assert_allclose(written_image, d_image, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(written_offsets, np.asarray(d_offsets), rtol=1e-10, atol=1e-10)


def _jax_temp_bytes(fn, *args):
    """XLA's temporary bytes for `fn` compiled by `jax.jit` on `args`."""
    import jax

    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.skipif(BACKEND != "jax", reason="JAX compiles forward and backward together")
def test_jax_backward_waits_for_the_forward_pass():
    """With a loss linear in the placed object the backward pass (an
    extraction) does not depend on the forward one; unordered, XLA
    interleaved their batch pieces and their working memory added up (1.9x
    the larger of the two here). Ordered, the compiled step needs no more
    than the larger of the two passes alone."""
    import jax

    from ptycho_layers.functional import extract_patches
    from ptycho_layers.placement import place_patches

    batch, n, extent = 64, 32, 96
    patches = random_like((batch, n, n, 4), "complex64", seed=20)
    offsets = np.random.default_rng(21).uniform(0, extent, (batch, 4, 2)).astype("float32")
    weights = random_like((1, extent, extent), "complex64", seed=22)

    def loss(patches, offsets):
        placed = place_patches(patches, offsets, (extent, extent))
        return ops.sum(ops.real(ops.conj(weights) * placed))

    step = _jax_temp_bytes(jax.value_and_grad(loss), patches, offsets)
    forward = _jax_temp_bytes(loss, patches, offsets)
    backward = _jax_temp_bytes(
        lambda image, offsets: extract_patches(image, offsets, n), weights, offsets
    )
    # A little slack for the scalars the step adds (the loss, its seed).
    assert step <= 1.02 * max(forward, backward), (step, forward, backward)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX compiles forward and backward together")
def test_jax_extraction_step_holds_no_windows():
    """Extraction's backward pass does not wait for its forward one: the
    patches are fused into the loss, and reading one of them as well made
    XLA materialise the windows (3.5 MB of temporaries here, against 1.9
    for the two passes alone together, and 1.6 unordered)."""
    import jax

    from ptycho_layers.functional import extract_patches
    from ptycho_layers.placement import place_patches

    batch, n, extent = 64, 32, 96
    image = random_like((1, extent, extent), "complex64", seed=23)
    offsets = np.random.default_rng(24).uniform(0, extent, (batch, 4, 2)).astype("float32")
    weights = random_like((batch, n, n, 4), "complex64", seed=25)

    def loss(image, offsets):
        patches = extract_patches(image, offsets, n)
        return ops.sum(ops.real(ops.conj(weights) * patches))

    step = _jax_temp_bytes(jax.value_and_grad(loss), image, offsets)
    forward = _jax_temp_bytes(loss, image, offsets)
    backward = _jax_temp_bytes(
        lambda patches, offsets: place_patches(patches, offsets, (extent, extent)),
        weights, offsets,
    )
    windows = batch * 4 * (n + 1) ** 2 * 8
    assert step <= 1.02 * (forward + backward) < forward + windows, (step, forward, backward)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX backend's ordering helper")
def test_jax_ordering_leaves_offsets_bit_identical():
    """The backward pass's offsets are the forward pass's, bit for bit:
    signed zeros, infinities and NaN included, whatever the flag."""
    import jax.numpy as jnp

    after = backends.current()._after
    offsets = np.array([[[-0.0, 0.0], [np.inf, -np.inf], [np.nan, 2.5]]], "float32")
    for finished in (True, False):
        ordered = np.asarray(after(jnp.asarray(offsets), jnp.asarray(finished)))
        assert ordered.tobytes() == offsets.tobytes()
    integer = np.array([[[3, -4]]], "int32")
    assert np.array_equal(np.asarray(after(jnp.asarray(integer), jnp.asarray(True))), integer)
