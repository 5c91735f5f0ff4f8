"""The padded table: when the operators use it, and its layout. Windows
read from it and added into it are checked against numpy in
`test_xla_runs.py`, and through the operators against the float64 oracle in
`test_extraction.py`, `test_placement.py` and `test_gradients.py`."""

import numpy as np
import pytest
from keras import ops

from ptycho_layers import backends
from ptycho_layers.xla import padded_table

pytestmark = pytest.mark.skipif(
    backends.current().take_runs is None,
    reason="XLA's run gather and scatter: TensorFlow and JAX",
)


def test_only_where_it_is_small_beside_the_patches():
    """The copy costs O(H W) a call: taken for the benchmark's case (a
    392x392 object, 1024 patches of 64x64), not for a 2048x2048 object,
    nor for a batch unknown when tracing."""
    assert padded_table.fits((1, 392, 392), 256, 4, 64, 65)
    assert not padded_table.fits((1, 2048, 2048), 256, 4, 64, 65)
    assert not padded_table.fits((1, 392, 392), None, 4, 64, 65)
    # The bound itself: a 3x5 object with windows of 8 makes a table of
    # 8 + 4 * 13 = 60 entries; 0.2 of the patches (b, 7, 7, 2) reaches 60
    # entries at b = 4 (78.4), not at b = 3 (58.8).
    assert padded_table.PADDED_SHARE == 0.2
    assert padded_table.fits((1, 3, 5), 4, 2, 7, 8)
    assert not padded_table.fits((1, 3, 5), 3, 2, 7, 8)


def test_layout_and_crop():
    """Each image row followed by `size` zeros, a row of zeros after the
    last, all after `size` zeros; the crop gives the images back."""
    height, width, size = 3, 4, 2
    images = np.arange(1, 2 * height * width + 1, dtype="float32").reshape(2, height, width)
    table = ops.convert_to_numpy(padded_table.table(images, size))
    expected = np.zeros((2, height + 1, width + size), "float32")
    expected[:, :height, :width] = images
    expected = np.concatenate([np.zeros((2, size), "float32"), expected.reshape(2, -1)], axis=1)
    np.testing.assert_array_equal(table, expected)
    back = ops.convert_to_numpy(padded_table.crop(table, (2, height, width)))
    np.testing.assert_array_equal(back, images)
