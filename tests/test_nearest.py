"""interpolation="nearest" through the public API: extraction and placement
against the float64 oracle (each window read pixel by pixel), rounding
half up, their adjointness, non-finite offsets, 16-bit objects, gradients
(zero for the offsets, the adjoint's for the values), the layers' configs
and saved models, and the legacy loop's refusal."""

import itertools
import re

import keras
import numpy as np
import pytest
from keras import ops

from conftest import covering
from oracle import asymmetric_object, oracle_nearest_patches, oracle_nearest_place
from ptycho_layers import PatchExtraction, PatchPlacement, extract_patches, place_patches
from test_fourier import (
    CALLS,
    HEIGHT,
    ROUNDOFF,
    WIDE,
    WIDTH,
    far_positions,
    gradients,
    mixed_offsets,
    real_inner,
)
from test_placement import inner, random_patches


def numpy(x):
    return ops.convert_to_numpy(x)


NEAREST = dict(interpolation="nearest")

DTYPES = ["complex64", "complex128", "float32", "float64"]
SIZES = [5, 6, 8]
GROUPS = [1, 4]


def _cases():
    """(patch size, groups, dtype, per_row): every value of every axis by
    default, each dtype once, from hand-picked cases (whose shapes the
    other tests reuse: on TensorFlow each new one compiles XLA programs,
    about a second each); the rest of the product with -m slow."""
    first = [
        (5, 4, "complex64", False),
        (6, 1, "complex128", True),
        (8, 4, "float32", True),
        (6, 1, "float64", False),
    ]
    rest = [case for case in itertools.product(SIZES, GROUPS, DTYPES, [False, True])
            if case not in first]
    return covering(first + rest, lambda case: [(axis, case[axis]) for axis in range(4)])


@pytest.mark.parametrize("patch_size,groups,dtype,per_row", _cases())
def test_extraction_and_placement_match_the_oracle(patch_size, groups, dtype, per_row):
    """Patches are the oracle's windows exactly (no arithmetic: a copy),
    placed objects the oracle's sums, a shared object or one per row, at
    fractional, edge (half-pixel ties among them), whole-pixel and far
    offsets; and Re<extract(x), p> = Re<x, place(p)>."""
    batch = 2
    wide = dtype in WIDE
    real = np.dtype(dtype).kind == "f"
    offsets = mixed_offsets(batch, groups, HEIGHT, WIDTH, patch_size, wide, seed=patch_size)
    images = np.stack([
        asymmetric_object(HEIGHT, WIDTH, dtype, seed=s) for s in range(batch if per_row else 1)
    ])

    patches = numpy(extract_patches(images, offsets, patch_size, **NEAREST))
    assert patches.shape == (batch, patch_size, patch_size, groups)
    assert patches.dtype == np.dtype(dtype)
    expected = oracle_nearest_patches(images, offsets, patch_size, real=real)
    np.testing.assert_array_equal(patches, expected)
    for b, k in far_positions(batch, groups):
        np.testing.assert_array_equal(patches[b, :, :, k], 0)

    upstream = random_patches(patches.shape, dtype, seed=1)
    placed = numpy(place_patches(upstream, offsets, (HEIGHT, WIDTH), per_row=per_row, **NEAREST))
    assert placed.shape == images.shape and placed.dtype == np.dtype(dtype)
    expected = oracle_nearest_place(upstream, offsets, (HEIGHT, WIDTH), per_row, real=real)
    # Overlapping patches are summed in the dtype: its rounding of the sums.
    tolerance = 1e-12 if wide else 1e-5
    np.testing.assert_allclose(placed, expected, rtol=0, atol=tolerance * max(1.0, np.abs(expected).max()))

    # Relative to |extract(x)| |p|, the Cauchy-Schwarz bound of either side.
    bound = np.linalg.norm(patches) * np.linalg.norm(upstream)
    gap = abs(inner(patches, upstream) - inner(images, placed))
    assert gap <= (1e-12 if wide else 1e-6) * bound, (gap, bound)


def test_positions_round_half_up():
    """The window's top-left is (floor(y + 1/2) - N//2, floor(x + 1/2) -
    N//2): a half rounds up (towards +inf, below zero too), anything less
    down, with plain slices of the zero-padded object as the reference.
    (The shapes of the first case: compiled already.)"""
    n = 5
    image = asymmetric_object(HEIGHT, WIDTH, "complex64")

    def just_below(value):
        return float(np.nextafter(np.float32(value), np.float32(0)))

    offsets = np.array([
        [[2.5, 3.0], [4.0, 6.5], [-0.5, -1.5], [just_below(7.5), just_below(5.5)]],
        [[8.49, 2.51], [-2.5, 14.5], [16.5, 0.5], [3.75, 9.25]],
    ], "float32")
    rounded = np.array([
        [[3, 3], [4, 7], [0, -1], [7, 5]],
        [[8, 3], [-2, 15], [17, 1], [4, 9]],
    ])
    pad = 2 * n
    padded = np.pad(image, pad)
    patches = numpy(extract_patches(image[None], offsets, n, **NEAREST))
    for b, k in itertools.product(range(2), range(4)):
        x, y = rounded[b, k] - n // 2 + pad
        np.testing.assert_array_equal(patches[b, :, :, k], padded[y:y + n, x:x + n], err_msg=str((b, k)))


def test_non_finite_offsets_give_nan_and_place_nothing():
    n = 5  # the shapes of the first case: compiled already
    image = asymmetric_object(HEIGHT, WIDTH, "complex64")[None]
    offsets = mixed_offsets(2, 4, HEIGHT, WIDTH, n, wide=False, seed=3)
    offsets[0, 1] = [np.nan, 3.0]
    offsets[1, 2] = [2.5, -np.inf]
    offsets[1, 3] = [np.inf, np.nan]
    finite = np.isfinite(offsets).all(axis=-1)
    patches = numpy(extract_patches(image, offsets, n, **NEAREST))
    expected = oracle_nearest_patches(image, offsets, n)
    for b, k in itertools.product(range(2), range(4)):
        if finite[b, k]:
            np.testing.assert_array_equal(patches[b, :, :, k], expected[b, :, :, k])
        else:
            assert np.isnan(patches[b, :, :, k]).all(), (b, k)

    upstream = random_patches((2, n, n, 4), "complex64", seed=4)
    np.moveaxis(upstream, 3, 1)[~finite] = np.nan  # its values must not leak either
    placed = numpy(place_patches(upstream, offsets, (HEIGHT, WIDTH), **NEAREST))
    assert np.isfinite(placed).all()
    expected = oracle_nearest_place(upstream, offsets, (HEIGHT, WIDTH))
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_placement_into_a_small_object_drops_non_finite_and_repeated_rows():
    """Many patches on a small object: placement adds into the padded
    table (`padded_table.fits`), in pieces whose last one, moved back to
    end with the batch, repeats rows the one before placed; those rows and
    the non-finite offsets' NaN patches must add nothing."""
    from ptycho_layers import backends
    from ptycho_layers.xla import extraction, padded_table

    n, batch, groups = 5, 23, 4
    if backends.current().take_runs is not None:
        # The path under test, and pieces that do not divide the batch.
        assert padded_table.fits((1, HEIGHT, WIDTH), batch, groups, n, n)
        pieces = extraction.batch_pieces(batch, groups, n, n, share=0.1)
        assert len(pieces) > 1 and batch % (pieces[0][1] - pieces[0][0])
    offsets = mixed_offsets(batch, groups, HEIGHT, WIDTH, n, wide=False, seed=5)
    offsets[3, 1] = [np.nan, 3.0]
    offsets[batch - 1, 2] = [2.5, -np.inf]
    finite = np.isfinite(offsets).all(axis=-1)
    upstream = random_patches((batch, n, n, groups), "complex64", seed=6)
    np.moveaxis(upstream, 3, 1)[~finite] = np.nan
    placed = numpy(place_patches(upstream, offsets, (HEIGHT, WIDTH), **NEAREST))
    expected = oracle_nearest_place(upstream, offsets, (HEIGHT, WIDTH))
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_objects(dtype):
    """16-bit objects and patches run and keep their dtype; patches are
    copies (exact), placed objects the oracle's to the dtype's rounding."""
    n, batch, groups = 5, 2, 4
    offsets = mixed_offsets(batch, groups, HEIGHT, WIDTH, n, wide=False, seed=5)
    image = ops.cast(asymmetric_object(HEIGHT, WIDTH, "float32")[None], dtype)
    exact = numpy(ops.cast(image, "float32")).astype("float64")

    patches = extract_patches(image, offsets, n, **NEAREST)
    assert keras.backend.standardize_dtype(patches.dtype) == dtype
    found = numpy(ops.cast(patches, "float32"))
    np.testing.assert_array_equal(found, oracle_nearest_patches(exact, offsets, n, real=True))

    upstream = ops.cast(random_patches((batch, n, n, groups), "float32", seed=6), dtype)
    placed = place_patches(upstream, offsets, (HEIGHT, WIDTH), **NEAREST)
    assert keras.backend.standardize_dtype(placed.dtype) == dtype
    found = numpy(ops.cast(placed, "float32"))
    exact = numpy(ops.cast(upstream, "float32")).astype("float64")
    expected = oracle_nearest_place(exact, offsets, (HEIGHT, WIDTH), real=True)
    # Up to batch * groups patches overlap a pixel, their sum rounded to
    # the dtype after each addition where the implementation adds in the
    # dtype (the XLA one does): at most one unit roundoff of the largest
    # value per patch, plus the final rounding.
    np.testing.assert_allclose(
        found, expected, rtol=0,
        atol=(batch * groups + 1) * ROUNDOFF[dtype] * np.abs(expected).max(),
    )


def fractional(batch, groups, seed):
    """float64 offsets, some half-pixel ties and some windows across an
    edge: the patch is piecewise constant in them."""
    rng = np.random.default_rng(seed)
    offsets = rng.uniform([-3, -3], [WIDTH + 3, HEIGHT + 3], (batch, groups, 2))
    offsets[0, 0] = [4.5, 7.5]
    return offsets


# The shapes of the complex128 case: its forward programs are compiled.
@pytest.mark.parametrize("patch_size,groups,per_row", [(6, 1, True), pytest.param(5, 4, False, marks=pytest.mark.slow)])
def test_extraction_gradients(patch_size, groups, per_row):
    """d Re <w, patches>: zero for the offsets, exactly; for the object
    the oracle's placement of w (complex128 object, float64 offsets)."""
    batch = 2
    images = np.stack([
        asymmetric_object(HEIGHT, WIDTH, "complex128", seed=s) for s in range(batch if per_row else 1)
    ])
    offsets = fractional(batch, groups, seed=7)
    weights = random_patches((batch, patch_size, patch_size, groups), "complex128", seed=8)
    d_images, d_offsets = gradients(
        lambda im, off: real_inner(weights, extract_patches(im, off, patch_size, **NEAREST)),
        images, offsets,
    )
    assert d_offsets.shape == offsets.shape
    np.testing.assert_array_equal(d_offsets, 0)
    expected = oracle_nearest_place(weights, offsets, (HEIGHT, WIDTH), per_row)
    assert d_images.shape == expected.shape
    np.testing.assert_allclose(d_images, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("patch_size,groups,per_row", [(6, 1, True), pytest.param(5, 4, False, marks=pytest.mark.slow)])
def test_placement_gradients(patch_size, groups, per_row):
    """d Re <u, place(patches)>: zero for the offsets, exactly; for the
    patches the oracle's extraction of u."""
    batch = 2
    patches = random_patches((batch, patch_size, patch_size, groups), "complex128", seed=9)
    offsets = fractional(batch, groups, seed=10)
    upstream = random_patches((batch if per_row else 1, HEIGHT, WIDTH), "complex128", seed=11)
    d_patches, d_offsets = gradients(
        lambda p, off: real_inner(
            upstream, place_patches(p, off, (HEIGHT, WIDTH), per_row=per_row, **NEAREST)
        ),
        patches, offsets,
    )
    assert d_offsets.shape == offsets.shape
    np.testing.assert_array_equal(d_offsets, 0)
    expected = oracle_nearest_patches(upstream, offsets, patch_size)
    assert d_patches.shape == expected.shape
    np.testing.assert_allclose(d_patches, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_layers_keep_the_kernel_in_configs_and_saved_models(tmp_path):
    """(The shapes of the float32 case.)"""
    extraction = PatchExtraction(8, interpolation="nearest")
    placement = PatchPlacement((HEIGHT, WIDTH), interpolation="nearest")
    for layer in (extraction, placement):
        config = layer.get_config()
        assert config["interpolation"] == "nearest"
        clone = type(layer).from_config(config)
        assert clone.interpolation == "nearest" and clone.get_config() == config
        restored = keras.layers.deserialize(keras.layers.serialize(layer))
        assert isinstance(restored, type(layer)) and restored.interpolation == "nearest"

    images_in = keras.Input((HEIGHT, WIDTH), name="images")
    offsets_in = keras.Input((4, 2), name="offsets")
    patches = extraction((images_in, offsets_in))
    model = keras.Model([images_in, offsets_in], [patches, placement((patches, offsets_in))])
    images = np.stack([asymmetric_object(HEIGHT, WIDTH, "float32", seed=s) for s in range(2)])
    offsets = mixed_offsets(2, 4, HEIGHT, WIDTH, 8, wide=False, seed=12)
    path = str(tmp_path / "nearest.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    kernels = [layer.interpolation for layer in loaded.layers
               if isinstance(layer, (PatchExtraction, PatchPlacement))]
    assert kernels == ["nearest", "nearest"]
    before = [numpy(x) for x in model([images, offsets])]
    after = [numpy(x) for x in loaded([images, offsets])]
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(before[0], oracle_nearest_patches(images, offsets, 8, real=True))
    expected = oracle_nearest_place(before[0], offsets, (HEIGHT, WIDTH), per_row=True, real=True)
    np.testing.assert_allclose(before[1], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("call", sorted(CALLS))
def test_legacy_loop_is_bilinear_only(call):
    with pytest.raises(
        ValueError, match=r"`interpolation` must be 'bilinear' with batched=False.*"
        + re.escape("Received: interpolation='nearest', batched=False"),
    ):
        CALLS[call](interpolation="nearest", batched=False)
