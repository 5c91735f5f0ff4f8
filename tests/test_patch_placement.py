"""The PatchPlacement layer: forms, config, Keras integration, bad input."""

import keras
import numpy as np
import pytest
from keras import ops
from keras.src.testing import TestCase

from oracle import oracle_place
from ptycho_layers import PatchPlacement, reassemble
from test_placement import random_patches

numpy = ops.convert_to_numpy


def offsets_for(batch, groups, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform([0, 0], [width, height], (batch, groups, 2)).astype("float32")


class KerasLayerTest(TestCase):
    """Keras's own battery: symbolic call, serialization, training, mixed
    precision."""

    def test_sum(self):
        self.run_layer_test(
            PatchPlacement,
            init_kwargs={"image_shape": (10, 11)},
            input_data=(random_patches((3, 4, 4, 2), "float32", 0), offsets_for(3, 2, 10, 11)),
            expected_output_shape=(3, 10, 11),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
        )

    def test_normalized_and_cropped_legacy(self):
        self.run_layer_test(
            PatchPlacement,
            init_kwargs={"image_shape": (9, 8), "normalize": True, "crop": 3, "batched": False},
            input_shape=((2, 5, 5, 4), (2, 4, 2)),
            expected_output_shape=(2, 9, 8),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
        )


@pytest.mark.parametrize("batched", [True, False])
def test_rows_into_their_own_objects_against_the_oracle(batched):
    patches = random_patches((3, 5, 5, 4), "complex64", seed=1)
    offsets = offsets_for(3, 4, 14, 12, seed=2)
    layer = PatchPlacement((14, 12), batched=batched)
    as_tuple = numpy(layer((patches, offsets)))
    as_dict = numpy(layer({"patches": patches, "offsets": offsets}))
    assert as_tuple.shape == (3, 14, 12) and as_tuple.dtype == np.complex64
    np.testing.assert_allclose(as_tuple, oracle_place(patches, offsets, (14, 12), per_row=True), atol=1e-5)
    np.testing.assert_array_equal(as_tuple, as_dict)


def test_normalize_is_reassemble_per_row():
    patches = random_patches((2, 6, 6, 4), "float32", seed=3)
    offsets = offsets_for(2, 4, 16, 16, seed=4)
    found = numpy(PatchPlacement((16, 16), normalize=True, crop=4)((patches, offsets)))
    expected = numpy(reassemble(patches, offsets, (16, 16), crop=4, per_row=True))
    np.testing.assert_array_equal(found, expected)


def test_symbolic_output_keeps_the_complex_dtype():
    patches = keras.Input((4, 4, 2), dtype="complex64")
    offsets = keras.Input((2, 2))
    output = PatchPlacement((8, 9))((patches, offsets))
    assert tuple(output.shape) == (None, 8, 9) and output.dtype == "complex64"


def test_saved_and_loaded_model_predicts_the_same(tmp_path):
    patches = keras.Input((5, 5, 4))
    offsets = keras.Input((4, 2))
    image = PatchPlacement((12, 13), normalize=True, crop=3)((patches, offsets))
    model = keras.Model([patches, offsets], image)
    data = [random_patches((2, 5, 5, 4), "float32", 5), offsets_for(2, 4, 12, 13, 6)]
    path = str(tmp_path / "placement.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[-1]
    assert (layer.image_shape, layer.normalize, layer.crop, layer.batched) == ((12, 13), True, 3, True)
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))


class TestBadInput:
    @pytest.mark.parametrize(
        "kwargs",
        [{"image_shape": (4,)}, {"image_shape": (4, 0)}, {"image_shape": (4, 4), "normalize": 1},
         {"image_shape": (4, 4), "crop": 0}, {"image_shape": (4, 4), "batched": None}],
    )
    def test_config(self, kwargs):
        name = [k for k in kwargs if k != "image_shape"] or ["image_shape"]
        with pytest.raises(ValueError, match=name[0]):
            PatchPlacement(**kwargs)

    def test_crop_larger_than_the_patches(self):
        with pytest.raises(ValueError, match="crop"):
            PatchPlacement((8, 8), crop=5)((np.zeros((1, 4, 4, 1), "float32"), np.zeros((1, 1, 2), "float32")))

    def test_inputs(self):
        layer = PatchPlacement((8, 8))
        with pytest.raises(ValueError, match="agree on B and c"):
            layer((np.zeros((1, 4, 4, 2), "float32"), np.zeros((1, 3, 2), "float32")))
        with pytest.raises(ValueError, match="keys"):
            layer({"patches": np.zeros((1, 4, 4, 1)), "offset": np.zeros((1, 1, 2))})
