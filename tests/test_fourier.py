"""interpolation="fourier" through the public API: extraction and placement
against the float64 oracle (an explicit DFT matrix, one patch at a time),
their adjointness, whole-pixel offsets, non-finite offsets, 16-bit
objects, gradients against central differences of the oracle, the layers'
configs and saved models, and bad arguments."""

import itertools
import re

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKEND, covering
from oracle import (
    asymmetric_object,
    dft_frequencies,
    oracle_fourier_patches,
    oracle_fourier_place,
    read_window,
)
from ptycho_layers import (
    PatchExtraction,
    PatchPlacement,
    extract_patches,
    place_patches,
    reassemble,
)
from test_extraction import make_offsets
from test_placement import inner, random_patches


def numpy(x):
    return ops.convert_to_numpy(x)


# Small objects and patches keep the oracle's loops quick; 13 x 17 has
# distinct rows and columns, so a swapped [x, y] shows. On TensorFlow every
# new combination of shapes, dtype and margin compiles XLA programs (about
# a second each), so the tests below share shapes where they can.
HEIGHT, WIDTH = 13, 17
# In this order, so that two positions already meet the two kinds that
# read part of the object at a fraction.
KINDS = ["fractional", "edges", "integer", "far"]
WIDE = ("complex128", "float64")


def mixed_offsets(batch, groups, height, width, patch_size, wide, seed=0):
    """(batch, groups, 2) offsets [x, y]: position i of the flattened batch
    is of kind KINDS[i % 4] (`test_extraction.make_offsets`'s kinds:
    fractional, straddling an edge or corner, whole-pixel, far outside),
    so four positions meet all four. float64 for `wide`, its fractional
    positions drawn in float64 (float32 cannot hold them, so a kernel that
    rounded the offsets to float32 would show), else float32."""
    count = batch * groups
    pools = [
        make_offsets(kind, 1, count, height, width, patch_size, seed=seed)[0].astype("float64")
        for kind in KINDS
    ]
    if wide:
        rng = np.random.default_rng(seed)
        pools[0] = rng.uniform([0, 0], [width, height], (count, 2))
    offsets = np.stack([pools[i % 4][i] for i in range(count)])
    return offsets.reshape(batch, groups, 2).astype("float64" if wide else "float32")


def far_positions(batch, groups):
    """The (b, k) that `mixed_offsets` put far outside the object."""
    return [divmod(i, groups) for i in range(batch * groups) if i % 4 == 3]


def fourier(margin):
    return dict(interpolation="fourier", fourier_margin=margin)


# ---------------------------------------------------------------------------
# Against the oracle.

DTYPES = ["complex64", "complex128", "float32", "float64"]
SIZES = [5, 6, 8]  # odd, even, even with a Nyquist bin of its own
MARGINS = [1, 3]
GROUPS = [1, 4]


def _cases():
    """(patch size, margin, groups, dtype, per_row): every value of every
    axis by default, each dtype once, from hand-picked cases (whose shapes
    the other tests reuse); the rest of the product (which only repeats
    covered values) with -m slow."""
    first = [
        (5, 1, 4, "complex64", False),
        (6, 3, 1, "complex128", True),
        (6, 3, 4, "float32", True),
        (8, 1, 1, "float64", False),
    ]
    rest = [case for case in itertools.product(SIZES, MARGINS, GROUPS, DTYPES, [False, True])
            if case not in first]
    return covering(first + rest, lambda case: [(axis, case[axis]) for axis in range(5)])


@pytest.mark.parametrize("patch_size,margin,groups,dtype,per_row", _cases())
def test_extraction_and_placement_match_the_oracle(patch_size, margin, groups, dtype, per_row):
    """Patches and placed objects are the oracle's, a shared object or one
    per row, at fractional, whole-pixel, edge and far offsets; far ones
    exactly zero; and Re<extract(x), p> = Re<x, place(p)>. Two rows of
    offsets: with one position per row they are fractional and across an
    edge (more rows compile slowly on TensorFlow); with four, every kind."""
    batch = 2
    wide = dtype in WIDE
    real = np.dtype(dtype).kind == "f"
    offsets = mixed_offsets(batch, groups, HEIGHT, WIDTH, patch_size, wide, seed=patch_size + margin)
    images = np.stack([
        asymmetric_object(HEIGHT, WIDTH, dtype, seed=s) for s in range(batch if per_row else 1)
    ])
    # A few ulps of the FFTs' sums, relative to the object's range: 1e-5
    # for 32-bit values, 1e-12 for 64-bit ones.
    tolerance = 1e-12 if wide else 1e-5

    patches = numpy(extract_patches(images, offsets, patch_size, **fourier(margin)))
    assert patches.shape == (batch, patch_size, patch_size, groups)
    assert patches.dtype == np.dtype(dtype)
    expected = oracle_fourier_patches(images, offsets, patch_size, margin, real=real)
    np.testing.assert_allclose(patches, expected, rtol=0, atol=tolerance * np.abs(images).max())
    for b, k in far_positions(batch, groups):
        np.testing.assert_array_equal(patches[b, :, :, k], 0)

    upstream = random_patches(patches.shape, dtype, seed=1)
    placed = numpy(place_patches(upstream, offsets, (HEIGHT, WIDTH), per_row=per_row, **fourier(margin)))
    assert placed.shape == images.shape and placed.dtype == np.dtype(dtype)
    expected = oracle_fourier_place(upstream, offsets, (HEIGHT, WIDTH), margin, per_row, real=real)
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(placed, expected, rtol=0, atol=tolerance * scale)

    # Relative to |extract(x)| |p|, the Cauchy-Schwarz bound of either side
    # (random patches make the sums cancel): a few ulps of the terms.
    bound = np.linalg.norm(patches) * np.linalg.norm(upstream)
    gap = abs(inner(patches, upstream) - inner(images, placed))
    assert gap <= (1e-12 if wide else 1e-6) * bound, (gap, bound)


def test_oracle_agrees_with_numpy_fft():
    """The oracle itself against the definition written with numpy's FFT
    and a padded slice (another route to the same window and shift), and
    its placement the adjoint of its extraction."""
    image = asymmetric_object(HEIGHT, WIDTH, "complex128")
    for n, m in [(5, 1), (6, 3), (8, 2)]:
        size = n + 2 * m
        offsets = mixed_offsets(2, 4, HEIGHT, WIDTH, n, wide=True, seed=n)
        offsets[1, 3] = [4.0, 5.5]  # the far one: keep it in the padded slice's reach
        ours = oracle_fourier_patches(image[None], offsets, n, m)
        pad = 2 * size
        padded = np.pad(image, pad)
        u = np.fft.fftfreq(size)
        np.testing.assert_allclose(dft_frequencies(size), u, rtol=0, atol=1e-15)
        for b, k in itertools.product(range(2), range(4)):
            x, y = offsets[b, k]
            if abs(x) > 100 or abs(y) > 100:
                np.testing.assert_array_equal(ours[b, :, :, k], 0)
                continue
            top = int(np.floor(y)) - n // 2 - m + pad
            left = int(np.floor(x)) - n // 2 - m + pad
            window = padded[top:top + size, left:left + size]
            np.testing.assert_array_equal(window, read_window(image, top - pad, left - pad, size))
            ramp = np.exp(2j * np.pi * (u[:, None] * (y % 1) + u[None, :] * (x % 1)))
            shifted = np.fft.ifft2(np.fft.fft2(window) * ramp)[m:m + n, m:m + n]
            np.testing.assert_allclose(ours[b, :, :, k], shifted, rtol=0, atol=1e-12)
        upstream = random_patches(ours.shape, "complex128", seed=3)
        placed = oracle_fourier_place(upstream, offsets, (HEIGHT, WIDTH), m)
        lhs, rhs = inner(ours, upstream), inner(image[None], placed)
        assert abs(lhs - rhs) <= 1e-12 * np.linalg.norm(ours) * np.linalg.norm(upstream)


# ---------------------------------------------------------------------------
# Whole pixels, non-finite offsets, 16-bit objects.


# Margin 1: the shapes of the first oracle case, compiled already.
@pytest.mark.parametrize("margin", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_integer_offsets_give_the_plain_slice_with_every_kernel(margin):
    """At whole-pixel offsets bilinear, Fourier and nearest all give the
    plain slice (the README: exactly), and Fourier placement adds it back
    (bilinear's and nearest's slice-adds are theirs to test)."""
    n = 5
    image = asymmetric_object(HEIGHT, WIDTH, "complex64")
    offsets = make_offsets("integer", 2, 4, HEIGHT, WIDTH, n, seed=7)
    offsets[0, 0] = [0, 0]
    offsets[1, 1] = [WIDTH - 1, HEIGHT - 1]
    offsets[1, 2] = [-2, HEIGHT + 1]
    pad = 2 * n
    padded = np.pad(image, pad)
    upstream = random_patches((2, n, n, 4), "complex64", seed=8)
    slices = np.zeros((2, n, n, 4), "complex64")
    added = np.zeros_like(padded)
    for b, k in itertools.product(range(2), range(4)):
        x, y = offsets[b, k].astype(int) - n // 2 + pad
        slices[b, :, :, k] = padded[y:y + n, x:x + n]
        added[y:y + n, x:x + n] += upstream[b, :, :, k]
    added = added[pad:pad + HEIGHT, pad:pad + WIDTH]
    for interpolation in ("bilinear", "fourier", "nearest"):
        kernel = dict(interpolation=interpolation, fourier_margin=margin)
        patches = numpy(extract_patches(image[None], offsets, n, **kernel))
        np.testing.assert_array_equal(patches, slices, err_msg=interpolation)
    placed = numpy(place_patches(upstream, offsets, (HEIGHT, WIDTH), **fourier(margin)))
    # Overlapping patches summed in another order than numpy's: float32
    # rounding of the sums.
    np.testing.assert_allclose(placed[0], added, rtol=0, atol=1e-6 * np.abs(added).max())


def test_non_finite_offsets_give_nan_and_place_nothing():
    """A NaN or infinite offset's patch is NaN, the others the oracle's;
    placed, it adds nothing, NaN values and all."""
    n, margin = 5, 1  # the shapes of the first oracle case: compiled already
    image = asymmetric_object(HEIGHT, WIDTH, "complex64")[None]
    offsets = mixed_offsets(2, 4, HEIGHT, WIDTH, n, wide=False, seed=n + margin)
    offsets[0, 1] = [np.nan, 3.0]
    offsets[1, 2] = [2.5, -np.inf]
    offsets[1, 3] = [np.inf, np.nan]
    finite = np.isfinite(offsets).all(axis=-1)
    patches = numpy(extract_patches(image, offsets, n, **fourier(margin)))
    expected = oracle_fourier_patches(image, offsets, n, margin)
    for b, k in itertools.product(range(2), range(4)):
        if finite[b, k]:
            np.testing.assert_allclose(patches[b, :, :, k], expected[b, :, :, k], rtol=0, atol=1e-5)
        else:
            assert np.isnan(patches[b, :, :, k]).all(), (b, k)

    upstream = random_patches((2, n, n, 4), "complex64", seed=9)
    np.moveaxis(upstream, 3, 1)[~finite] = np.nan  # its values must not leak either
    placed = numpy(place_patches(upstream, offsets, (HEIGHT, WIDTH), **fourier(margin)))
    assert np.isfinite(placed).all()
    expected = oracle_fourier_place(upstream, offsets, (HEIGHT, WIDTH), margin)
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.skipif(BACKEND == "torch", reason="XLA's loop of pieces: TensorFlow and JAX")
@pytest.mark.parametrize("table", ["padded", "object"])
def test_placement_pieces_that_do_not_divide_the_batch(monkeypatch, table):
    """XLA places Fourier patches in a loop of pieces of the kernel's share
    (into the padded table, or into the object itself where the table
    would be large); the last piece moved back to end with the batch masks
    the rows the piece before placed. Against the oracle, with non-finite
    offsets in those rows."""
    from ptycho_layers.operators import kernel_spec, place_patches_batched
    from ptycho_layers.xla import extraction, padded_table
    from test_xla_runs import compiled

    monkeypatch.setattr(padded_table, "PADDED_SHARE", float("inf") if table == "padded" else 0.0)
    n, margin, batch, groups = 5, 1, 47, 4
    pieces = extraction.batch_pieces(batch, groups, n, n + 2 * margin, share=0.1)
    assert len(pieces) >= 2 and batch % (pieces[0][1] - pieces[0][0]) != 0, pieces
    offsets = mixed_offsets(batch, groups, HEIGHT, WIDTH, n, wide=False, seed=12)
    offsets[pieces[-1][0] - 1, 1] = [np.nan, 2.0]  # in the rows both last pieces cover
    offsets[batch - 1, 2] = [np.inf, 3.0]
    upstream = random_patches((batch, n, n, groups), "complex64", seed=13)
    spec = kernel_spec("fourier", margin)
    placed = numpy(compiled(
        lambda p, o: place_patches_batched(p, o, (1, HEIGHT, WIDTH), spec)
    )(upstream, offsets))
    expected = oracle_fourier_place(upstream, offsets, (HEIGHT, WIDTH), margin)
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.skipif(BACKEND == "torch", reason="XLA's loop of pieces: TensorFlow and JAX")
@pytest.mark.parametrize("reader", ["padded", "gathered"])
def test_extraction_pieces_that_do_not_divide_the_batch(monkeypatch, reader):
    """XLA extracts Fourier patches in a loop of pieces; where the pieces
    do not divide the batch the last one is moved back to end with it and
    writes the rows it shares with the piece before again. Against the
    oracle, with non-finite offsets in those rows (their patches NaN), the
    windows read from the padded table or gathered."""
    from ptycho_layers.operators import extract_patches_batched, kernel_spec
    from ptycho_layers.xla import extraction, padded_table
    from test_xla_runs import compiled

    monkeypatch.setattr(padded_table, "PADDED_SHARE", float("inf") if reader == "padded" else 0.0)
    n, margin, batch, groups = 5, 1, 47, 4
    step = extraction._loop_step(
        type("Kernel", (), {"PIECE_SHARE": 0.1}), batch, groups, n, n + 2 * margin
    )
    assert step is not None and batch // step >= 2 and batch % step != 0, step
    image = asymmetric_object(HEIGHT, WIDTH, "complex64")[None]
    offsets = mixed_offsets(batch, groups, HEIGHT, WIDTH, n, wide=False, seed=11)
    offsets[batch - step, 1] = [np.nan, 2.0]  # in the rows both last pieces write
    offsets[batch - 1, 2] = [np.inf, 3.0]
    finite = np.isfinite(offsets).all(axis=-1)
    # Traced afresh (the layer's operator is compiled once per shape,
    # whichever reader it was traced with).
    spec = kernel_spec("fourier", margin)
    patches = numpy(compiled(lambda x, o: extract_patches_batched(x, o, n, spec))(image, offsets))
    expected = oracle_fourier_patches(image, offsets, n, margin)
    assert np.isnan(np.moveaxis(patches, 3, 1)[~finite]).all()
    np.testing.assert_allclose(
        np.moveaxis(patches, 3, 1)[finite], np.moveaxis(expected, 3, 1)[finite],
        rtol=0, atol=1e-5 * np.abs(image).max(),
    )


# Unit roundoff: rounding to nearest moves a value by at most this much of
# itself (float16 keeps 11 significant bits, bfloat16 8).
ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_objects(dtype):
    """16-bit objects and patches run, keep their dtype, and are the
    oracle's (on the 16-bit values themselves) to the dtype's rounding."""
    n, margin, batch, groups = 6, 2, 2, 4
    offsets = mixed_offsets(batch, groups, HEIGHT, WIDTH, n, wide=False, seed=11)
    image = ops.cast(asymmetric_object(HEIGHT, WIDTH, "float32")[None], dtype)
    exact = numpy(ops.cast(image, "float32")).astype("float64")

    patches = extract_patches(image, offsets, n, **fourier(margin))
    assert keras.backend.standardize_dtype(patches.dtype) == dtype
    found = numpy(ops.cast(patches, "float32"))
    expected = oracle_fourier_patches(exact, offsets, n, margin, real=True)
    # Each patch is computed in float32 and rounded once to the dtype: at
    # most one unit roundoff of the largest value, twice that for slack
    # (float32's own error is 1e-7 of it).
    np.testing.assert_allclose(
        found, expected, rtol=0, atol=2 * ROUNDOFF[dtype] * np.abs(expected).max()
    )

    upstream = ops.cast(random_patches((batch, n, n, groups), "float32", seed=12), dtype)
    placed = place_patches(upstream, offsets, (HEIGHT, WIDTH), **fourier(margin))
    assert keras.backend.standardize_dtype(placed.dtype) == dtype
    found = numpy(ops.cast(placed, "float32"))
    exact = numpy(ops.cast(upstream, "float32")).astype("float64")
    expected = oracle_fourier_place(exact, offsets, (HEIGHT, WIDTH), margin, real=True)
    # Placement may add the windows of the batch * groups patches into the
    # object in the dtype itself (the XLA implementation does), each sum
    # rounded: at most one unit roundoff of the largest value per patch,
    # plus the final rounding.
    np.testing.assert_allclose(
        found, expected, rtol=0,
        atol=(batch * groups + 1) * ROUNDOFF[dtype] * np.abs(expected).max(),
    )


# ---------------------------------------------------------------------------
# Gradients, against central differences of the float64 oracle.


def gradients(loss, *args):
    """The gradients of the real scalar `loss(*args)` with respect to each
    of `args`, by the backend's autodiff, as numpy arrays. A complex
    argument's gradient in TensorFlow's convention, d/d re + i d/d im
    (PyTorch's too; JAX's is its conjugate)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        args = [tf.constant(arg) for arg in args]
        with tf.GradientTape() as tape:
            for arg in args:
                tape.watch(arg)
            value = loss(*args)
        return [numpy(grad) for grad in tape.gradient(value, args)]
    if BACKEND == "jax":
        import jax

        grads = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
        return [np.conj(np.asarray(grad)) for grad in grads]
    import torch

    args = [torch.tensor(arg, requires_grad=True) for arg in args]
    loss(*args).backward()
    return [arg.grad.numpy() for arg in args]


def differences(loss, x, step, points=2):
    """Central differences of the real scalar `loss` at every entry of `x`:
    d/d re + i d/d im for complex `x`. `points` 2: (f(h) - f(-h)) / 2h,
    exact up to rounding where `loss` is linear; 4: the fourth-order
    stencil, for the smooth but curved dependence on the offsets' fractions."""
    x = np.asarray(x)
    units = [1, 1j] if np.iscomplexobj(x) else [1]
    grad = np.zeros(x.shape, np.complex128 if np.iscomplexobj(x) else np.float64)
    for position in np.ndindex(x.shape):
        for unit in units:
            def at(t):
                moved = x.copy()
                moved[position] += t * unit
                return loss(moved)

            if points == 2:
                slope = (at(step) - at(-step)) / (2 * step)
            else:
                slope = (8 * (at(step) - at(-step)) - (at(2 * step) - at(-2 * step))) / (12 * step)
            grad[position] += unit * slope
    return grad


def inside_cells(batch, groups, height, width, seed):
    """float64 offsets whose fractions lie in [1/4, 3/4] (the Fourier
    kernel is smooth in them inside one pixel; it jumps where the window
    moves a whole pixel), some windows across an edge."""
    rng = np.random.default_rng(seed)
    whole = rng.integers(-2, [width + 2, height + 2], (batch, groups, 2))
    return whole + rng.uniform(0.25, 0.75, (batch, groups, 2))


def real_inner(weights, values):
    """Re <weights, values> = sum Re(conj(weights) values), as a backend
    scalar: the loss."""
    weights = ops.convert_to_tensor(weights)
    return ops.sum(ops.real(ops.conj(weights) * values))


# (patch size, margin, groups, per_row). The default: the shapes of the
# complex128 oracle case, whose forward programs are compiled already.
GRADIENT_CASES = [(6, 3, 1, True), pytest.param(5, 2, 2, False, marks=pytest.mark.slow)]


@pytest.mark.parametrize("patch_size,margin,groups,per_row", GRADIENT_CASES)
def test_extraction_gradients_match_oracle_differences(patch_size, margin, groups, per_row):
    """d/d object and d/d offsets of Re <w, patches> (complex128 object,
    float64 offsets): the object's by two-point differences (the loss is
    linear in it), the offsets' by the fourth-order stencil."""
    batch = 2
    images = np.stack([
        asymmetric_object(HEIGHT, WIDTH, "complex128", seed=s) for s in range(batch if per_row else 1)
    ])
    offsets = inside_cells(batch, groups, HEIGHT, WIDTH, seed=20)
    weights = random_patches((batch, patch_size, patch_size, groups), "complex128", seed=21)

    d_images, d_offsets = gradients(
        lambda im, off: real_inner(weights, extract_patches(im, off, patch_size, **fourier(margin))),
        images, offsets,
    )
    assert d_images.shape == images.shape and d_offsets.shape == offsets.shape

    def oracle_loss(im, off):
        return inner(weights, oracle_fourier_patches(im, off, patch_size, margin))

    expected = differences(lambda im: oracle_loss(im, offsets), images, step=0.5)
    np.testing.assert_allclose(d_images, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    expected = differences(lambda off: oracle_loss(images, off), offsets, step=1e-3, points=4)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(d_offsets, expected, rtol=0, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("patch_size,margin,groups,per_row", GRADIENT_CASES)
def test_placement_gradients_match_oracle_differences(patch_size, margin, groups, per_row):
    """d/d patches and d/d offsets of Re <u, place(patches)> (complex128),
    as above."""
    batch = 2
    patches = random_patches((batch, patch_size, patch_size, groups), "complex128", seed=22)
    offsets = inside_cells(batch, groups, HEIGHT, WIDTH, seed=23)
    upstream = random_patches((batch if per_row else 1, HEIGHT, WIDTH), "complex128", seed=24)

    def place(p, off):
        return place_patches(p, off, (HEIGHT, WIDTH), per_row=per_row, **fourier(margin))

    d_patches, d_offsets = gradients(lambda p, off: real_inner(upstream, place(p, off)), patches, offsets)
    assert d_patches.shape == patches.shape and d_offsets.shape == offsets.shape

    def oracle_loss(p, off):
        return inner(upstream, oracle_fourier_place(p, off, (HEIGHT, WIDTH), margin, per_row))

    expected = differences(lambda p: oracle_loss(p, offsets), patches, step=0.5)
    np.testing.assert_allclose(d_patches, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    expected = differences(lambda off: oracle_loss(patches, off), offsets, step=1e-3, points=4)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(d_offsets, expected, rtol=0, atol=1e-9 * np.abs(expected).max())


# ---------------------------------------------------------------------------
# The layers.


def test_layers_keep_the_kernel_in_configs_and_saved_models(tmp_path):
    """Both layers keep interpolation and fourier_margin in their configs
    and in a saved model, which computes the same. (The shapes of the
    float32 oracle case.)"""
    extraction = PatchExtraction(6, interpolation="fourier", fourier_margin=3)
    placement = PatchPlacement((HEIGHT, WIDTH), interpolation="fourier", fourier_margin=3)
    for layer in (extraction, placement):
        config = layer.get_config()
        assert (config["interpolation"], config["fourier_margin"]) == ("fourier", 3)
        clone = type(layer).from_config(config)
        assert (clone.interpolation, clone.fourier_margin) == ("fourier", 3)
        assert clone.get_config() == config
        restored = keras.layers.deserialize(keras.layers.serialize(layer))
        assert isinstance(restored, type(layer))
        assert (restored.interpolation, restored.fourier_margin) == ("fourier", 3)

    images_in = keras.Input((HEIGHT, WIDTH), name="images")
    offsets_in = keras.Input((4, 2), name="offsets")
    patches = extraction((images_in, offsets_in))
    model = keras.Model([images_in, offsets_in], [patches, placement((patches, offsets_in))])
    images = np.stack([asymmetric_object(HEIGHT, WIDTH, "float32", seed=s) for s in range(2)])
    offsets = mixed_offsets(2, 4, HEIGHT, WIDTH, 6, wide=False, seed=13)
    path = str(tmp_path / "fourier.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    kernels = [(layer.interpolation, layer.fourier_margin) for layer in loaded.layers
               if isinstance(layer, (PatchExtraction, PatchPlacement))]
    assert kernels == [("fourier", 3), ("fourier", 3)]
    before = [numpy(x) for x in model([images, offsets])]
    after = [numpy(x) for x in loaded([images, offsets])]
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)
    expected = oracle_fourier_patches(images, offsets, 6, 3, real=True)
    np.testing.assert_allclose(before[0], expected, rtol=0, atol=1e-5 * np.abs(images).max())
    expected = oracle_fourier_place(before[0], offsets, (HEIGHT, WIDTH), 3, per_row=True, real=True)
    np.testing.assert_allclose(before[1], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------------------
# Bad arguments: a ValueError naming the argument and quoting the value.

IMAGES = np.zeros((1, 8, 8), "float32")
OFFSETS = np.zeros((1, 2, 2), "float32")
PATCHES = np.zeros((1, 4, 4, 2), "float32")
CALLS = {
    "extract_patches": lambda **kw: extract_patches(IMAGES, OFFSETS, 4, **kw),
    "place_patches": lambda **kw: place_patches(PATCHES, OFFSETS, (8, 8), **kw),
    "reassemble": lambda **kw: reassemble(PATCHES, OFFSETS, (8, 8), **kw),
    "PatchExtraction": lambda **kw: PatchExtraction(4, **kw),
    "PatchPlacement": lambda **kw: PatchPlacement((8, 8), **kw),
}


def received(name, value):
    return rf"`{name}`.*Received: {re.escape(f'{name}={value!r}')}"


@pytest.mark.parametrize("call", sorted(CALLS))
class TestBadArguments:
    def test_unknown_interpolation(self, call):
        with pytest.raises(ValueError, match=received("interpolation", "cubic")):
            CALLS[call](interpolation="cubic")

    @pytest.mark.parametrize("margin", [0, 1.5, "2"])
    def test_margin_not_a_positive_int(self, call, margin):
        with pytest.raises(ValueError, match=received("fourier_margin", margin)):
            CALLS[call](interpolation="fourier", fourier_margin=margin)

    def test_legacy_loop_is_bilinear_only(self, call):
        with pytest.raises(
            ValueError, match=r"`interpolation` must be 'bilinear' with batched=False.*"
            + re.escape("Received: interpolation='fourier', batched=False"),
        ):
            CALLS[call](interpolation="fourier", batched=False)


@pytest.mark.parametrize("layer", [PatchExtraction(4), PatchPlacement((8, 8))])
def test_from_config_with_bad_values(layer):
    config = layer.get_config()
    with pytest.raises(ValueError, match=received("fourier_margin", 0)):
        type(layer).from_config({**config, "interpolation": "fourier", "fourier_margin": 0})
    with pytest.raises(ValueError, match=received("interpolation", "cubic")):
        type(layer).from_config({**config, "interpolation": "cubic"})
