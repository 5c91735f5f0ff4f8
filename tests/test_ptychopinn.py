"""`get_image_patches`, the drop-in for PtychoPINN's function."""

import numpy as np
import pytest
from keras import ops

from oracle import asymmetric_object, oracle_patches
from ptycho_layers import PatchExtraction, get_image_patches

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
