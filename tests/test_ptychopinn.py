"""`get_image_patches` and `reassemble_position`, the drop-ins for
PtychoPINN's functions."""

import numpy as np
import pytest
from keras import ops

from oracle import asymmetric_object, oracle_patches, oracle_place
from ptycho_layers import PatchExtraction, get_image_patches, reassemble_position

numpy = ops.convert_to_numpy


def channel_offsets(batch, gridsize, seed=0):
    """PtychoPINN's layout: global (B, 1, 2, 1) and local (B, 1, 2, c)."""
    rng = np.random.default_rng(seed)
    global_offsets = rng.uniform(10, 30, (batch, 1, 2, 1)).astype("float32")
    local_offsets = rng.uniform(-4, 4, (batch, 1, 2, gridsize**2)).astype("float32")
    return global_offsets, local_offsets


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_equals_layer_on_summed_transposed_offsets(gridsize, batched):
    image = asymmetric_object(40, 44, "complex64")
    global_offsets, local_offsets = channel_offsets(3, gridsize)
    patches = numpy(get_image_patches(image, global_offsets, local_offsets, 8, gridsize, batched=batched))
    assert patches.shape == (3, 8, 8, gridsize**2) and patches.dtype == np.complex64

    offsets = np.transpose((global_offsets + local_offsets)[:, 0], (0, 2, 1))
    layer = numpy(PatchExtraction(8, batched=batched)((image[None], offsets)))
    np.testing.assert_array_equal(patches, layer)


def test_flat_order_is_b_major_c_minor():
    """Row i of PtychoPINN's flat offsets (B*c, 1, 2, 1) is patch
    [i // c, :, :, i % c] — the loop's own bookkeeping."""
    gridsize, c = 2, 4
    image = asymmetric_object(40, 44, "complex64")
    global_offsets, local_offsets = channel_offsets(3, gridsize, seed=1)
    patches = numpy(get_image_patches(image, global_offsets, local_offsets, 6, gridsize))
    summed = global_offsets + local_offsets  # (B, 1, 2, c)
    flat = np.transpose(summed, (0, 3, 1, 2)).reshape(-1, 1, 2, 1)  # (B*c, 1, 2, 1)
    for i in range(flat.shape[0]):
        x, y = flat[i, 0, :, 0]  # [x, y] lives on axis 2
        expected = oracle_patches(image[None], np.array([[[x, y]]]), 6)[0, :, :, 0]
        np.testing.assert_allclose(patches[i // c, :, :, i % c], expected, atol=1e-6)


def test_real_image_becomes_complex64():
    image = asymmetric_object(20, 20, "float64")
    global_offsets, local_offsets = channel_offsets(2, 1)
    patches = numpy(get_image_patches(image, global_offsets - 5, local_offsets, 4, 1))
    assert patches.dtype == np.complex64
    np.testing.assert_array_equal(patches.imag, 0)


def test_bad_input():
    image = np.zeros((20, 20), "complex64")
    global_offsets, local_offsets = channel_offsets(2, 2)
    with pytest.raises(ValueError, match=r"gridsize\*\*2"):
        get_image_patches(image, global_offsets, local_offsets, 4, 3)
    with pytest.raises(ValueError, match="`gridsize`"):
        get_image_patches(image, global_offsets, local_offsets, 4, 0)
    with pytest.raises(ValueError, match="`gt_image`"):
        get_image_patches(image[None], global_offsets, local_offsets, 4, 2)
    with pytest.raises(ValueError, match=r"`N`.*Received: N=0"):
        get_image_patches(image, global_offsets, local_offsets, 0, 2)


# ---------------------------------------------------------------------------
# reassemble_position


def upstream_rule(obj_tensor, global_offsets, M):
    """PtychoPINN's reassemble_position, written from its description in
    float64: the central crop (rows and columns N//2 - M//2 to
    N//2 + M//2), offsets centred on their mean, a canvas of side
    crop + 2 * pad with pad = ceil(max |centred|) made even, each crop
    translated by its centred offset from the canvas's centre, the sum over
    1e-9 + the same sum of ones."""
    n, half = obj_tensor.shape[1], M // 2
    crops = obj_tensor[:, n // 2 - half:n // 2 + half, n // 2 - half:n // 2 + half, 0]
    offsets = global_offsets[:, 0, 0, :].astype(np.float64)
    centred = offsets - offsets.mean(axis=0)
    as_float32 = global_offsets[:, 0, 0, :].astype(np.float32)
    pad = int(np.ceil(np.abs(as_float32 - as_float32.mean(axis=0)).max()))
    pad += pad % 2
    side = 2 * half + 2 * pad
    # The crop's pixel (i, j) at canvas (pad + i + dy, pad + j + dx): a
    # patch of size 2*half at [x, y] = centred + pad + half.
    positions = (centred + pad + half)[:, None, :]
    total = oracle_place(crops[..., None], positions, (side, side), per_row=False)
    ones = oracle_place(np.ones_like(crops)[..., None], positions, (side, side), per_row=False)
    return (total / (1e-9 + ones))[0, :, :, None]


def scan(count, seed, grid=None):
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(10, 30, (count, 1, 1, 2))
    if grid:
        offsets = np.round(offsets * grid) / grid
    return offsets


@pytest.mark.parametrize(
    "M", [10, pytest.param(8, marks=pytest.mark.slow)]  # ~8 s each on TensorFlow
)
def test_reassemble_position_follows_the_upstream_rule(M):
    patches = asymmetric_object(12, 12, "complex64")[None, :, :, None] * np.ones((12, 1, 1, 1), "complex64")
    patches = patches * np.exp(1j * np.arange(12))[:, None, None, None].astype("complex64")
    offsets = scan(12, seed=M)
    found = ops.convert_to_numpy(reassemble_position(patches, offsets, M=M))
    expected = upstream_rule(patches, offsets, M)
    assert found.shape == expected.shape and found.dtype == np.complex64
    side = found.shape[0]
    assert side % 2 == 0 and (side - 2 * (M // 2)) % 4 == 0  # the pad is even
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow  # ~10 s on TensorFlow: the per-patch loop
def test_reassemble_position_shift_and_sum_agrees_on_a_sixteenth_pixel_grid():
    """Positions on a 1/16-pixel grid are exact in float32 too, so the
    per-patch shift-and-sum and the vectorized path agree to rounding."""
    patches = np.exp(1j * np.random.default_rng(1).uniform(-1, 1, (6, 12, 12, 1))).astype("complex64")
    offsets = scan(6, seed=2, grid=16)
    fast = ops.convert_to_numpy(reassemble_position(patches, offsets, M=8))
    slow = ops.convert_to_numpy(reassemble_position(patches, offsets, M=8, batched=False))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5 * np.abs(fast).max())


def test_reassemble_position_bad_input():
    with pytest.raises(ValueError, match="obj_tensor"):
        reassemble_position(np.zeros((3, 8, 8), "complex64"), np.zeros((3, 1, 1, 2)))
    with pytest.raises(ValueError, match="global_offsets"):
        reassemble_position(np.zeros((3, 8, 8, 1), "complex64"), np.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match="M"):
        reassemble_position(np.zeros((3, 8, 8, 1), "complex64"), np.zeros((3, 1, 1, 2)), M=1)


def test_reassemble_position_canvases_of_nearby_sides_share_programs():
    """The canvas's side follows the offsets; sides within the same
    multiple of 32 are placed into one canvas size, cut out of its centre,
    so a second dataset compiles no new placement. Each against the
    upstream rule."""
    from ptycho_layers import operators

    patches = np.exp(1j * np.random.default_rng(3).uniform(-1, 1, (9, 12, 12, 1))).astype("complex64")
    wide, narrow = scan(9, seed=4), scan(9, seed=4) * 0.8
    operators.placement.cache_clear()
    sides = []
    for offsets in (wide, narrow):
        found = ops.convert_to_numpy(reassemble_position(patches, offsets, M=10))
        expected = upstream_rule(patches, offsets, 10)
        np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
        sides.append(found.shape[0])
    assert sides[0] != sides[1] and sides[0] % 32 and sides[1] % 32, sides
    assert operators.placement.cache_info().currsize == 1
