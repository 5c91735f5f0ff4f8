"""Defects found by probing, each pinned: objects past 32-bit positions,
integer and bool values, bad offsets, non-finite object values at the
edge of a footprint, and a held object inside `tf.data`."""

import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from oracle import asymmetric_object, oracle_patches, oracle_place
from ptycho_layers import extract_patches, place_patches, reassemble
from ptycho_layers import PatchExtraction, get_image_patches, reassemble_position


def numpy(x):
    return ops.convert_to_numpy(x)


# ---------------------------------------------------------------------------
# Objects past 2**31 pixels: the XLA implementation's positions are int32.

# 600000 x 4096 = 2.46e9 pixels, past 2**31; as a broadcast view of one
# byte, nothing that size is allocated before the check.
HUGE = (1, 600_000, 4096)


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch indexes objects in int64")
def test_extraction_from_an_object_past_int32_positions_is_refused():
    """Before: rows past 524,288 came back as row 0's data, silently."""
    images = np.broadcast_to(np.uint8(1), HUGE)
    offsets = np.array([[[100.0, 599_990.0]]], "float32")
    with pytest.raises(ValueError, match=r"`images` is too large for 32-bit positions.*"
                       r"images.shape=\(1, 600000, 4096\)"):
        extract_patches(images, offsets, 8)


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch indexes objects in int64")
def test_placement_into_an_object_past_int32_positions_is_refused():
    """Before: JAX put patches at rows 550,000 and 599,990 into row 0,
    TensorFlow dropped them."""
    patches = np.ones((1, 8, 8, 1), "float32")
    offsets = np.array([[[100.0, 599_990.0]]], "float32")
    with pytest.raises(ValueError, match=r"`image_shape` is too large.*image_shape=\(600000, 4096\)"):
        place_patches(patches, offsets, HUGE[1:])
    with pytest.raises(ValueError, match="image_shape"):
        PatchExtraction(8, image_shape=HUGE[1:], image_dtype="float32")


def test_objects_at_the_limit_are_accepted():
    """The bound is the objects' pixels with a window's margin, not less:
    a long thin object well inside it is placed exactly."""
    patches = np.ones((1, 4, 4, 1), "float32")
    offsets = np.array([[[2.0, 99_990.0]]], "float32")
    placed = numpy(place_patches(patches, offsets, (100_000, 8)))
    assert placed[0, 99_988:99_992, :4].sum() == 16 and placed.sum() == 16


# ---------------------------------------------------------------------------
# Integer and bool values: computed, and returned, in float32.


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_integer_and_bool_objects_give_float32_patches(dtype):
    """Before: an int32 object at [3.5, 2] gave truncated integers, a bool
    one bool patches (JAX, PyTorch) or an AutoGraph TypeError
    (TensorFlow)."""
    image = (asymmetric_object(9, 10, "float64") * 3).astype(dtype)[None]
    offsets = np.array([[[3.5, 2.0], [4.25, 5.75]]], "float32")
    patches = numpy(extract_patches(image, offsets, 4))
    assert patches.dtype == np.float32
    expected = oracle_patches(image.astype("float64"), offsets, 4).real
    np.testing.assert_allclose(patches, expected, rtol=0, atol=1e-5 * max(1, np.abs(expected).max()))


def test_integer_held_object_gives_float32_patches():
    image = np.arange(64, dtype="int32").reshape(8, 8)
    layer = PatchExtraction(3, image=image)
    patches = numpy(layer(np.array([[[3.5, 2.0]]], "float32")))
    assert patches.dtype == np.float32
    expected = oracle_patches(image[None].astype("float64"), [[[3.5, 2.0]]], 3).real
    np.testing.assert_allclose(patches, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_reassemble_of_integer_and_bool_patches(dtype):
    """Before: PyTorch and JAX returned 89 of 480 pixels inf/NaN (the
    coverage cast to int before the division), TensorFlow raised."""
    rng = np.random.default_rng(3)
    patches = rng.integers(0, 2, (3, 6, 6, 2)).astype(dtype)
    offsets = rng.uniform(2, 18, (3, 2, 2)).astype("float32")
    image, coverage = reassemble(patches, offsets, (20, 24), return_coverage=True)
    image = numpy(image)
    assert image.dtype == np.float32 and np.isfinite(image).all()
    total = oracle_place(patches.astype("float64"), offsets, (20, 24))
    weights = oracle_place(np.ones(patches.shape), offsets, (20, 24))
    expected = np.where(weights > 0, total / np.where(weights > 0, weights, 1), 0)
    np.testing.assert_allclose(image, expected.real, rtol=0, atol=1e-5)
    placed = numpy(place_patches(patches, offsets, (20, 24)))
    assert placed.dtype == np.float32
    np.testing.assert_allclose(placed, total.real, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------
# Bad offsets: a ValueError naming the argument and quoting what came.


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_reassemble_position_refuses_non_finite_offsets(value):
    """Before: `cannot convert float NaN to integer`."""
    patches = np.ones((3, 8, 8, 1), "complex64")
    offsets = np.zeros((3, 1, 1, 2))
    offsets[1, 0, 0, 1] = value
    with pytest.raises(ValueError, match=r"`global_offsets` must be finite.*\[0.0, (nan|inf|-inf)\]"):
        reassemble_position(patches, offsets, M=4)


def test_reassemble_position_refuses_offsets_spread_too_far():
    """Before: OverflowError, or `TypeError: in user code:` on TensorFlow."""
    patches = np.ones((2, 8, 8, 1), "complex64")
    offsets = np.array([0.0, 0.0, 1e30, 0.0]).reshape(2, 1, 1, 2)
    with pytest.raises(ValueError, match=r"`global_offsets` spreads too far.*5e\+29"):
        reassemble_position(patches, offsets, M=4)


@pytest.mark.parametrize(
    "offsets,dtype",
    [([[["1", "2"]]], "str|<U1"), (np.array([[[1 + 2j, 3]]]), "complex128"),
     (np.array([[[True, False]]]), "bool")],
    ids=["strings", "complex", "bool"],
)
def test_offsets_must_be_real_numbers(offsets, dtype):
    """Before: strings reached XLA (`DT_STRING` on TensorFlow); complex
    offsets lost their imaginary part silently."""
    image = np.ones((1, 8, 8), "float32")
    with pytest.raises(ValueError, match=rf"`offsets` must .*Received: offsets of dtype ({dtype})"):
        extract_patches(image, offsets, 2)
    with pytest.raises(ValueError, match=r"`offsets` must"):
        place_patches(np.ones((1, 2, 2, 1), "float32"), offsets, (8, 8))
    with pytest.raises(ValueError, match=r"`global_offsets` must"):
        reassemble_position(np.ones((1, 4, 4, 1), "complex64"), np.reshape(offsets, (1, 1, 1, 2)))
    with pytest.raises(ValueError, match=r"`local_offsets` must"):
        get_image_patches(image[0], np.zeros((1, 1, 2, 1)), np.reshape(offsets, (1, 1, 2, 1)), 2, 1)


def test_images_must_be_numbers():
    with pytest.raises(ValueError, match=r"`images` must hold numbers.*dtype (str|<U1)"):
        extract_patches([[["a", "b"], ["c", "d"]]], [[[1.0, 1.0]]], 2)


# ---------------------------------------------------------------------------
# Non-finite object values: a weight that is exactly zero reads and writes
# nothing, so a NaN or an infinity stays inside the footprint it is in.


@pytest.fixture(params=["default", "whole", "clipped"])
def torch_form(request, monkeypatch):
    """On PyTorch, each form of the kernels (in pieces from the object or
    from a padded copy, or the whole batch at once); elsewhere, once."""
    if request.param != "default":
        if BACKEND != "torch":
            pytest.skip("PyTorch's forms")
        from ptycho_layers.torch import pieces as torch_pieces
        from ptycho_layers.torch import windows as torch_windows

        if request.param == "whole":
            monkeypatch.setattr(torch_windows, "_form", lambda values: "whole")
        else:
            monkeypatch.setattr(torch_pieces, "EDGE_WINDOW_PIXELS", 0)
    return request.param


@pytest.mark.parametrize("shape", [(12, 14), (12, 5)], ids=["wide", "narrow"])
def test_a_nan_beside_the_footprint_stays_out_of_the_patch(torch_form, shape):
    """Before: at integer offsets a NaN just right of or below the patch
    made its last column or row NaN (0 * NaN in the window's unused last
    column and row). The narrow object is read element by element on
    TensorFlow and JAX."""
    height, width = shape
    image = asymmetric_object(height, width, "complex64")[None]
    n = 4
    x, y = 2, 3  # the patch covers rows 1..4, columns 0..3
    image[0, y - n // 2 + n, :] = np.nan   # the row just below
    image[0, :, x - n // 2 + n] = np.nan   # the column just right
    patches = numpy(extract_patches(image, np.array([[[x, y]]], "float32"), n))
    expected = image[0, y - n // 2:y - n // 2 + n, x - n // 2:x - n // 2 + n]
    np.testing.assert_array_equal(patches[0, :, :, 0], expected)


def test_a_nan_at_the_edge_of_a_narrow_object_stays_in_place(torch_form):
    """A window sticking out of the object reads no pixel twice: the NaN
    in the object's last column reaches only the patch entries over it."""
    image = np.ones((1, 8, 5), "float32")
    image[0, :, 4] = np.nan
    # Columns 3 to 6: 1, NaN, then two outside the object.
    patches = numpy(extract_patches(image, np.array([[[5.0, 4.0]]], "float32"), 4))
    expected = np.tile(np.array([1, np.nan, 0, 0], "float32"), (4, 1))
    np.testing.assert_array_equal(patches[0, :, :, 0], expected)


@pytest.mark.parametrize("shape", [(12, 14), (12, 5)], ids=["wide", "narrow"])
def test_an_infinite_patch_value_is_placed_inside_its_footprint(torch_form, shape):
    """Before: a patch holding one inf placed at an integer offset wrote
    NaN one pixel beyond its footprint (0 * inf)."""
    n = 4
    patches = np.ones((1, n, n, 1), "float32")
    patches[0, n - 1, n - 1, 0] = np.inf
    placed = numpy(place_patches(patches, np.array([[[2.0, 3.0]]], "float32"), shape))[0]
    expected = np.zeros(shape, "float32")
    expected[1:5, 0:4] = patches[0, :, :, 0]
    np.testing.assert_array_equal(placed, expected)


# ---------------------------------------------------------------------------
# A held object inside tf.data reads its current values.


@pytest.mark.parametrize("dtype", ["complex64", "float32"])
def test_tf_data_reads_the_held_object_as_it_is_now(dtype):
    """Before: under JAX and PyTorch the pipeline kept the object's values
    from when `.map` traced it; new values assigned to the weight were
    ignored (TensorFlow saw them)."""
    import tensorflow as tf

    image = asymmetric_object(10, 12, dtype)
    offsets = np.array([[[4.5, 5.0]], [[6.0, 3.25]]], "float32")
    layer = PatchExtraction(4, image=image)
    pipeline = tf.data.Dataset.from_tensor_slices(offsets).batch(2).map(layer)
    before = numpy(next(iter(pipeline)))
    np.testing.assert_allclose(before, oracle_patches(image[None], offsets, 4), atol=1e-5)
    changed = 3 * image + 1
    pairs = np.stack([changed.real, changed.imag], -1) if dtype == "complex64" else changed
    layer.image_variable.assign(pairs.astype("float32"))
    after = numpy(next(iter(pipeline)))
    np.testing.assert_allclose(after, oracle_patches(changed[None], offsets, 4), atol=1e-5)
