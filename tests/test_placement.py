"""Placement: the exact adjoint of extraction, against the float64 oracle,
in both paths and both forms (one shared object, one object per row)."""

import itertools

import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from oracle import asymmetric_object, oracle_patches, oracle_place
from ptycho_layers import extract_patches, place_patches, reassemble
from test_extraction import make_offsets


def numpy(x):
    return ops.convert_to_numpy(x)


def random_patches(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=shape)
    if np.dtype(dtype).kind == "c":
        values = values + 1j * rng.normal(size=shape)
    return values.astype(dtype)


def inner(a, b):
    """Re <a, b> in float64."""
    return float(np.real(np.vdot(np.asarray(a, np.complex128), np.asarray(b, np.complex128))))


DTYPES = ["complex64", "complex128", "float32", "float64"]
KINDS = ["fractional", "integer", "edges", "far"]
SIZES = [1, 6, 9]
GRIDSIZES = [1, 2, 3]
OBJECTS = [(23, 23), (19, 31)]


def _cases():
    """The whole matrix: every size, gridsize, object and kind, the dtypes
    and both forms in turn. A dozen of them run by default (each value of
    every axis at least once); the rest are marked slow (each case
    compiles its own XLA programs, about a second)."""
    for i, (size, gridsize, obj, kind) in enumerate(
        itertools.product(SIZES, GRIDSIZES, OBJECTS, KINDS)
    ):
        turn = i // 6
        case = (size, gridsize, obj, kind, DTYPES[turn % len(DTYPES)], bool(turn % 2))
        # One case in six by default, chosen so that every axis's every
        # value is among them.
        yield case if i % 6 == turn % 6 else pytest.param(*case, marks=pytest.mark.slow)


@pytest.mark.parametrize("patch_size,gridsize,obj,kind,dtype,per_row", list(_cases()))
def test_adjoint_of_extraction_and_oracle(patch_size, gridsize, obj, kind, dtype, per_row):
    """Re<extract(x), p> = Re<x, place(p)>, and place(p) is the oracle's."""
    height, width = obj
    batch, groups = 2, gridsize**2
    offsets = make_offsets(kind, batch, groups, height, width, patch_size, seed=patch_size + gridsize)
    patches = random_patches((batch, patch_size, patch_size, groups), dtype, seed=1)
    images = np.stack([asymmetric_object(height, width, dtype, seed=s) for s in range(batch if per_row else 1)])
    expected = oracle_place(patches, offsets, obj, per_row)
    scale = max(1.0, np.abs(expected).max())
    extracted = numpy(extract_patches(images, offsets, patch_size))
    bound = max(1e-30, np.linalg.norm(extracted) * np.linalg.norm(patches))
    wide = "128" in dtype or dtype == "float64"
    for batched in (True, False):
        placed = numpy(place_patches(patches, offsets, obj, batched=batched, per_row=per_row))
        assert placed.shape == images.shape and placed.dtype == np.dtype(dtype)
        lhs, rhs = inner(extracted, patches), inner(images, placed)
        # Relative to |extract(x)| |p|, the Cauchy-Schwarz bound of either
        # side (random patches make the sums cancel, so relative to the
        # sum itself would measure the cancellation): 1e-6 is a few float32
        # ulps of the terms summed.
        assert abs(lhs - rhs) <= 1e-6 * bound, (batched, lhs, rhs)
        # Both paths form their weights from the offsets' integer part and
        # fraction, exactly; the legacy path's weights are float32 even for
        # 64-bit patches.
        tolerance = 1e-12 if wide and batched else 1e-5
        np.testing.assert_allclose(placed, expected, rtol=0, atol=tolerance * scale)
        if kind == "far":
            np.testing.assert_array_equal(placed, 0)
    # The legacy pair: PtychoPINN's extraction forms whole-image float32
    # coordinates (about 1e-5 of the range at these sizes, its documented
    # 1e-4 bar), so the two loops are adjoint to that precision.
    legacy = numpy(extract_patches(images, offsets, patch_size, batched=False))
    assert abs(inner(legacy, patches) - rhs) <= 1e-4 * bound


@pytest.mark.parametrize("batched", [True, False])
def test_integer_offsets_are_slice_adds(batched):
    height, width, n = 12, 15, 4
    offsets = np.array([[[2, 2], [7, 3], [13, 10], [5, 11]]], "int32")
    patches = random_patches((1, n, n, 4), "float32", seed=2)
    expected = np.zeros((height + 2 * n, width + 2 * n), "float32")
    for k, (x, y) in enumerate(offsets[0]):
        top, left = y - n // 2 + n, x - n // 2 + n
        expected[top:top + n, left:left + n] += patches[0, :, :, k]
    placed = numpy(place_patches(patches, offsets, (height, width), batched=batched))
    np.testing.assert_array_equal(placed[0], expected[n:n + height, n:n + width])


def test_integer_extract_then_reassemble_gives_the_object_back():
    height, width, n = 20, 24, 6
    image = asymmetric_object(height, width, "complex64")[None]
    # Columns 19 to 23 stay uncovered.
    grid = [[x, y] for y in range(2, height, 4) for x in range(1, width - 6, 5)]
    offsets = np.array(grid, "float32")[None]
    patches = extract_patches(image, offsets, n)
    stitched, coverage = reassemble(patches, offsets, (height, width), return_coverage=True)
    stitched, coverage = numpy(stitched), numpy(coverage)
    covered = coverage > 0
    assert covered.mean() > 0.7 and not covered[..., 19:].any()
    # Integer coverage is a sum of ones, the division exact up to rounding
    # of an average of equal values.
    np.testing.assert_allclose(stitched[covered], image[covered], rtol=2e-7, atol=0)
    np.testing.assert_array_equal(stitched[~covered], 0)


def test_reassemble_averages_over_the_crop_and_is_zero_uncovered():
    n = 6
    patches = np.stack([np.full((n, n), 2.0), np.full((n, n), 4.0)], -1)[None].astype("float64")
    offsets = np.array([[[5.0, 5.0], [6.0, 5.0]]])
    image, coverage = reassemble(patches, offsets, (12, 12), crop=2, return_coverage=True)
    image, coverage = numpy(image)[0], numpy(coverage)[0]
    # Crops: rows 4..5; columns 4..5 (first) and 5..6 (second).
    np.testing.assert_array_equal(coverage[4:6, 4:7], [[1, 2, 1], [1, 2, 1]])
    np.testing.assert_array_equal(image[4:6, 4:7], [[2, 3, 4], [2, 3, 4]])
    assert np.count_nonzero(coverage) == 6 and np.count_nonzero(image) == 6


@pytest.mark.parametrize("batched", [True, False])
def test_non_finite_offsets_add_nothing(batched):
    height, width, n = 14, 13, 5
    offsets = make_offsets("fractional", 2, 4, height, width, n, seed=3)
    patches = random_patches((2, n, n, 4), "complex64", seed=4)
    bad = offsets.copy()
    bad[0, 1] = [np.nan, 3.0]
    bad[1, 2] = [2.0, -np.inf]
    patches_bad = patches.copy()
    patches_bad[0, :, :, 1] = np.nan  # its values must not leak either
    kept = patches.copy()
    kept[0, :, :, 1] = 0
    kept[1, :, :, 2] = 0
    placed = numpy(place_patches(patches_bad, bad, (height, width), batched=batched))
    expected = numpy(place_patches(kept, offsets, (height, width), batched=batched))
    assert np.all(np.isfinite(placed))
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-6)


class TestBadInput:
    def call(self, **changes):
        args = dict(patches=np.zeros((2, 4, 4, 3), "float32"), offsets=np.zeros((2, 3, 2), "float32"), image_shape=(8, 8))
        args.update(changes)
        return place_patches(**args)

    @pytest.mark.parametrize("image_shape", [(8,), (0, 8), (8, 2.5), "8x8", (True, 8)])
    def test_image_shape(self, image_shape):
        with pytest.raises(ValueError, match="image_shape"):
            self.call(image_shape=image_shape)

    def test_patches_not_square(self):
        with pytest.raises(ValueError, match=r"patches.shape=\(2, 4, 5, 3\)"):
            self.call(patches=np.zeros((2, 4, 5, 3), "float32"))

    @pytest.mark.parametrize("shape", [(3, 3, 2), (2, 4, 2)])
    def test_batch_or_groups_disagree(self, shape):
        with pytest.raises(ValueError, match="agree on B and c"):
            self.call(offsets=np.zeros(shape, "float32"))

    def test_flags(self):
        with pytest.raises(ValueError, match="per_row"):
            self.call(per_row="yes")
        with pytest.raises(ValueError, match="batched"):
            self.call(batched=1)

    @pytest.mark.parametrize("crop", [0, 5, 2.0])
    def test_crop(self, crop):
        with pytest.raises(ValueError, match="crop"):
            reassemble(np.zeros((2, 4, 4, 3), "float32"), np.zeros((2, 3, 2), "float32"), (8, 8), crop=crop)


# ---------------------------------------------------------------------------
# Gradients: placement's w.r.t. the patches is extraction; w.r.t. the
# offsets it matches central differences of the oracle.


def vjp(fn, x, upstream):
    """d <upstream, fn(x)> / dx by the backend's own autodiff (real values)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return numpy(tape.gradient(y, x, output_gradients=tf.constant(upstream)))
    if BACKEND == "jax":
        import jax

        _, pullback = jax.vjp(fn, x)
        return np.asarray(pullback(upstream)[0])
    import torch

    x = torch.tensor(x, requires_grad=True)
    (grad,) = torch.autograd.grad(fn(x), x, grad_outputs=torch.tensor(upstream))
    return grad.numpy()


def test_gradient_wrt_patches_is_extraction():
    height, width, n = 13, 11, 5
    offsets = make_offsets("edges", 2, 4, height, width, n, seed=5)
    offsets[:, :2] = make_offsets("fractional", 2, 2, height, width, n, seed=6)
    patches = random_patches((2, n, n, 4), "float64", seed=7)
    upstream = random_patches((2, height, width), "float64", seed=8)
    found = vjp(lambda p: place_patches(p, offsets, (height, width), per_row=True), patches, upstream)
    expected = oracle_patches(upstream, offsets, n).real
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)


def test_gradient_wrt_offsets_matches_oracle_differences():
    """Inside one bilinear cell the placed object is linear in each offset,
    so central differences of the oracle are exact up to rounding."""
    height, width, n = 12, 11, 5
    rng = np.random.default_rng(9)
    whole = rng.integers(-2, [width + 2, height + 2], (2, 3, 2))
    offsets = whole + rng.uniform(0.25, 0.75, (2, 3, 2))
    patches = random_patches((2, n, n, 3), "float64", seed=10)
    upstream = random_patches((1, height, width), "float64", seed=11)
    found = vjp(lambda o: place_patches(patches, o, (height, width)), offsets, upstream)

    def loss(o):
        return inner(upstream, oracle_place(patches, o, (height, width)))

    step = 0.125
    expected = np.zeros_like(offsets)
    for position in np.ndindex(offsets.shape):
        up, down = offsets.copy(), offsets.copy()
        up[position] += step
        down[position] -= step
        expected[position] = (loss(up) - loss(down)) / (2 * step)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(found, expected, rtol=1e-9, atol=1e-9)


def test_extraction_gradient_ignores_patches_at_non_finite_offsets():
    """A NaN or inf offset's patch reads nothing, so the object's gradient
    takes nothing from it, whatever its upstream values (it used to land on
    the object's corner, at the sanitized offset (0, 0))."""
    height, width, n = 10, 12, 4
    offsets = make_offsets("fractional", 2, 3, height, width, n, seed=12)
    image = random_patches((1, height, width), "float64", seed=13)
    upstream = random_patches((2, n, n, 3), "float64", seed=14)
    expected = vjp(lambda im: extract_patches(im, offsets, n), image, upstream * [1, 1, 0])
    offsets[:, 2] = [[np.nan, 1.0], [3.0, np.inf]]
    found = vjp(lambda im: extract_patches(im, offsets, n), image, upstream)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-12)


@pytest.mark.skipif(BACKEND == "torch", reason="XLA's run scatter: TensorFlow and JAX")
@pytest.mark.parametrize("reader", ["object", "padded"])
# Edge offsets read the object's interior too; each case compiles two
# programs (about 2 s on TensorFlow), so fractional offsets are left to the
# tests above.
@pytest.mark.parametrize("kind", ["edges", "far"])
@pytest.mark.parametrize("obj,per_row", [((19, 31), False), ((9, 5), True)])
def test_both_window_adders_match_the_oracle(monkeypatch, reader, kind, obj, per_row):
    """Windows added into the object itself and into its padded table
    (`padded_table.fits`), forced either way, compiled as the operator runs
    them: both against the float64 oracle, and the adjoint of extraction
    read the same way. A 9x5 object is narrower than the windows: only the
    padded table takes them as runs."""
    from ptycho_layers.operators import extract_patches_batched, place_patches_batched
    from ptycho_layers.xla import padded_table
    from test_xla_runs import compiled

    monkeypatch.setattr(padded_table, "PADDED_SHARE", float("inf") if reader == "padded" else 0.0)
    height, width = obj
    batch, groups, size = 3, 4, 7
    count = batch if per_row else 1
    assert padded_table.fits((count, height, width), batch, groups, size, size + 1) == (reader == "padded")
    offsets = make_offsets(kind, batch, groups, height, width, size, seed=5)
    patches = random_patches((batch, size, size, groups), "complex64", seed=2)
    images = np.stack([asymmetric_object(height, width, "complex64", seed=s) for s in range(count)])
    placed = numpy(compiled(lambda p, o: place_patches_batched(p, o, (count, height, width)))(patches, offsets))
    expected = oracle_place(patches, offsets, obj, per_row)
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5 * max(1.0, np.abs(expected).max()))
    extracted = numpy(compiled(lambda x, o: extract_patches_batched(x, o, size))(images, offsets))
    bound = max(1e-30, np.linalg.norm(extracted) * np.linalg.norm(patches))
    assert abs(inner(extracted, patches) - inner(images, placed)) <= 1e-6 * bound


@pytest.mark.skipif(BACKEND == "torch", reason="XLA's pieces: TensorFlow and JAX")
@pytest.mark.parametrize("reader", ["object", "padded"])
def test_pieces_that_do_not_divide_the_batch(monkeypatch, reader):
    """XLA places a large batch in pieces, one loop over them; where the
    pieces do not divide the batch the last one is moved back to end with
    it, and the rows it shares with the piece before must be added once.
    Against the float64 oracle, with non-finite offsets among the shared
    rows (they add nothing, NaN included)."""
    from ptycho_layers.operators import place_patches_batched
    from ptycho_layers.xla import padded_table
    from ptycho_layers.xla.extraction import batch_pieces
    from test_xla_runs import compiled

    monkeypatch.setattr(padded_table, "PADDED_SHARE", float("inf") if reader == "padded" else 0.0)
    height, width, batch, groups, size = 21, 26, 47, 4, 5
    share = 0.1 if reader == "padded" else 0.3
    pieces = batch_pieces(batch, groups, size, size + 1, share=share)
    step = pieces[0][1]
    assert len(pieces) > 2 and batch % step != 0, pieces
    offsets = make_offsets("fractional", batch, groups, height, width, size, seed=3)
    offsets[batch - step, 1] = np.nan  # in the rows both last pieces cover
    offsets[batch - 1, 2, 0] = np.inf
    patches = random_patches((batch, size, size, groups), "complex64", seed=4)
    placed = numpy(compiled(lambda p, o: place_patches_batched(p, o, (1, height, width)))(patches, offsets))
    expected = oracle_place(patches, offsets, (height, width), False)
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5 * max(1.0, np.abs(expected).max()))


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch compiles nothing per shape")
def test_reassemble_first_call_places_the_masks_with_the_patches_program(compiled_programs):
    """At a shape's first eager call the masks are placed as complex
    values by the patches' program (nothing more compiled); at the second,
    by their own real one. Both calls give the oracle's average and
    coverage, the coverage real."""
    from ptycho_layers import backends, operators

    height, width, size, batch, groups = 15, 18, 5, 6, 4
    operators.placement.cache_clear()
    operator = operators.placement(height, width, False, "bilinear", backends.current())
    patches = random_patches((batch, size, size, groups), "complex64", seed=5)
    offsets = make_offsets("fractional", batch, groups, height, width, size, seed=6)
    total = oracle_place(patches, offsets, (height, width), False)
    ones = oracle_place(np.ones(patches.shape, "float32"), offsets, (height, width), False)
    expected = np.where(ones > 0, total / np.where(ones > 0, ones, 1), 0)
    for programs in (1, 2):
        image, coverage = reassemble(patches, offsets, (height, width), return_coverage=True)
        assert compiled_programs(operator) == programs
        assert numpy(coverage).dtype == np.float32
        np.testing.assert_allclose(numpy(coverage), ones, rtol=0, atol=1e-5 * ones.max())
        np.testing.assert_allclose(numpy(image), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
