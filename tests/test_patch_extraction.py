"""The PatchExtraction layer: forms, config, Keras integration, bad input."""

import keras
import numpy as np
import pytest
from keras import ops
from keras.src.testing import TestCase

from oracle import asymmetric_object, oracle_patches
from ptycho_layers import PatchExtraction, extract_patches

numpy = ops.convert_to_numpy


def offsets_for(batch, groups, height, width, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform([0, 0], [width, height], (batch, groups, 2))
    return xy.astype("float32")


class KerasLayerTest(TestCase):
    """Keras's own battery: symbolic call, serialization, training, mixed
    precision."""

    def test_held_image_form(self):
        image = asymmetric_object(12, 15, "float32")
        self.run_layer_test(
            PatchExtraction,
            init_kwargs={"patch_size": 4, "image": image},
            input_data=offsets_for(3, 4, 12, 15),
            expected_output_shape=(3, 4, 4, 4),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=1,
        )

    def test_held_image_form_complex(self):
        image = asymmetric_object(12, 15, "complex64")
        self.run_layer_test(
            PatchExtraction,
            init_kwargs={"patch_size": 4, "image": image},
            input_data=offsets_for(3, 4, 12, 15),
            expected_output_shape=(3, 4, 4, 4),
            expected_output_dtype="complex64",
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=1,
            run_training_check=False,  # Keras's losses drop imaginary parts
        )

    def test_held_image_form_trainable(self):
        image = asymmetric_object(12, 15, "float32")
        self.run_layer_test(
            PatchExtraction,
            init_kwargs={"patch_size": 3, "image": image, "trainable_image": True},
            input_data=offsets_for(2, 1, 12, 15),
            expected_output_shape=(2, 3, 3, 1),
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=0,
        )

    def test_two_input_form(self):
        self.run_layer_test(
            PatchExtraction,
            init_kwargs={"patch_size": 5, "batched": False},
            input_shape=((2, 10, 11), (2, 9, 2)),
            expected_output_shape=(2, 5, 5, 9),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
        )


@pytest.mark.parametrize("batched", [True, False])
def test_two_input_forms_agree_with_oracle(batched):
    images = asymmetric_object(20, 24, "complex64")[None]
    offsets = offsets_for(3, 4, 20, 24, seed=1)
    layer = PatchExtraction(6, batched=batched)
    expected = oracle_patches(images, offsets, 6)
    as_tuple = numpy(layer((images, offsets)))
    as_dict = numpy(layer({"images": images[..., None], "offsets": offsets}))
    assert as_tuple.dtype == np.complex64
    np.testing.assert_allclose(as_tuple, expected, atol=1e-4)
    np.testing.assert_array_equal(as_tuple, as_dict)


def test_sequential_model_add_with_held_image():
    image = asymmetric_object(30, 33, "complex64")
    model = keras.Sequential()
    model.add(keras.Input((4, 2)))
    model.add(PatchExtraction(8, image=image))
    offsets = offsets_for(5, 4, 30, 33, seed=2)
    patches = model.predict(offsets, verbose=0, batch_size=2)
    assert patches.shape == (5, 8, 8, 4) and patches.dtype == np.complex64
    np.testing.assert_allclose(patches, oracle_patches(image[None], offsets, 8), atol=1e-6)
    assert model.output_shape == (None, 8, 8, 4)


def test_functional_model_two_inputs():
    images_in = keras.Input((16, 18), dtype="complex64", name="images")
    offsets_in = keras.Input((4, 2), name="offsets")
    patches = PatchExtraction(5)((images_in, offsets_in))
    model = keras.Model([images_in, offsets_in], patches)
    images = np.stack([asymmetric_object(16, 18, "complex64", seed=s) for s in range(3)])
    offsets = offsets_for(3, 4, 16, 18, seed=3)
    out = model.predict([images, offsets], verbose=0)
    assert out.dtype == np.complex64
    np.testing.assert_allclose(out, oracle_patches(images, offsets, 5), atol=1e-6)


def test_one_image_serves_every_row_of_offsets():
    image = asymmetric_object(16, 16, "complex64")[None]
    offsets = offsets_for(4, 1, 16, 16, seed=4)
    out = numpy(PatchExtraction(3)((image, offsets)))
    assert out.shape == (4, 3, 3, 1)
    np.testing.assert_allclose(out, oracle_patches(image, offsets, 3), atol=1e-6)


def test_integer_offsets_are_cast():
    image = asymmetric_object(10, 12, "float64")[None]
    offsets = np.array([[[5, 4], [7, 2]]], "int32")
    out = numpy(PatchExtraction(3)((image, offsets)))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[0, :, :, 0], image[0, 3:6, 4:7])


def test_config_round_trip_keeps_batched_and_image_spec():
    image = asymmetric_object(9, 7, "complex128")
    layer = PatchExtraction(4, batched=False, image=image, trainable_image=True, name="pe")
    config = layer.get_config()
    assert config["batched"] is False
    assert config["patch_size"] == 4
    assert config["image_shape"] == [9, 7]
    assert config["image_dtype"] == "complex128"
    clone = PatchExtraction.from_config(config)
    assert clone.batched is False and clone.trainable_image is True
    assert tuple(clone.image.shape) == (9, 7)
    assert keras.backend.standardize_dtype(clone.image.dtype) == "complex128"
    # Values travel as weights, not in the config.
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(numpy(clone.image), image)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, PatchExtraction) and restored.batched is False


def test_compute_output_shape():
    layer = PatchExtraction(7)
    assert layer.compute_output_shape(((None, 20, 20), (None, 9, 2))) == (None, 7, 7, 9)
    held = PatchExtraction(7, image=np.zeros((20, 20), "complex64"))
    assert held.compute_output_shape((5, 4, 2)) == (5, 7, 7, 4)


def test_mixed_precision_keeps_complex_and_offsets_precise():
    keras.mixed_precision.set_global_policy("mixed_float16")
    image = asymmetric_object(3000, 40, "complex64")
    layer = PatchExtraction(4, image=image)
    # A position float16 cannot hold: 2999.25 would round to 3000.
    offsets = np.array([[[20.5, 2999.25]]], "float32")
    out = numpy(layer(offsets))
    assert out.dtype == np.complex64
    np.testing.assert_allclose(out, oracle_patches(image[None], offsets, 4), atol=1e-6)

    real = PatchExtraction(4)
    out = real((np.abs(image)[None], offsets))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"


class TestBadInput:
    @pytest.mark.parametrize("patch_size", [0, -3, 2.5, "8", True, None])
    def test_patch_size(self, patch_size):
        with pytest.raises(ValueError, match=r"`patch_size`.*Received: patch_size="):
            PatchExtraction(patch_size)
        with pytest.raises(ValueError, match="patch_size"):
            extract_patches(np.zeros((1, 4, 4)), np.zeros((1, 1, 2)), patch_size)

    @pytest.mark.parametrize("batched", [1, "yes", None])
    def test_batched(self, batched):
        with pytest.raises(ValueError, match=r"`batched`.*Received: batched="):
            PatchExtraction(4, batched=batched)

    def test_from_config_with_bad_values(self):
        config = PatchExtraction(4).get_config()
        with pytest.raises(ValueError, match="patch_size"):
            PatchExtraction.from_config({**config, "patch_size": -1})
        with pytest.raises(ValueError, match="batched"):
            PatchExtraction.from_config({**config, "batched": "false"})

    @pytest.mark.parametrize("shape", [(3, 4), (1, 4, 2, 3), (1, 4, 2, 1, 1), (4, 2, 2, 2)])
    def test_offsets_shape(self, shape):
        with pytest.raises(ValueError, match=r"`offsets`.*Received: offsets.shape="):
            extract_patches(np.zeros((1, 8, 8)), np.zeros(shape), 4)

    @pytest.mark.parametrize("shape", [(8, 8), (1, 8, 8, 2), (1, 1, 8, 8, 1), (1, 0, 8)])
    def test_images_shape(self, shape):
        with pytest.raises(ValueError, match=r"`images`.*Received: images.shape="):
            extract_patches(np.zeros(shape), np.zeros((1, 1, 2)), 4)

    def test_images_batch(self):
        with pytest.raises(ValueError, match=r"`images`.*batch.*images.shape=\(2, 8, 8\)"):
            extract_patches(np.zeros((2, 8, 8)), np.zeros((3, 1, 2)), 4)

    def test_held_image_given_two_inputs(self):
        layer = PatchExtraction(4, image=np.zeros((8, 8), "complex64"))
        with pytest.raises(ValueError, match="holds its image"):
            layer((np.zeros((1, 8, 8)), np.zeros((1, 1, 2))))

    def test_two_input_form_given_one(self):
        with pytest.raises(ValueError, match="holds no image"):
            PatchExtraction(4)(np.zeros((1, 1, 2), "float32"))

    def test_bad_dict_keys(self):
        with pytest.raises(ValueError, match="'images' and 'offsets'"):
            PatchExtraction(4)({"image": np.zeros((1, 8, 8)), "offsets": np.zeros((1, 1, 2))})

    @pytest.mark.parametrize("kwargs", [{"image": np.zeros((2, 3, 4))}, {"image_shape": (4,)}, {"image_shape": (0, 5)}, {"trainable_image": 1}])
    def test_bad_image_arguments(self, kwargs):
        with pytest.raises(ValueError, match="image"):
            PatchExtraction(4, **kwargs)


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "float32"])
def test_symbolic_output_has_the_objects_dtype(dtype):
    held = PatchExtraction(4, image=np.ones((8, 8), dtype))(keras.Input((4, 2)))
    two = PatchExtraction(4)((keras.Input((8, 8), dtype=dtype), keras.Input((4, 2))))
    assert held.dtype == dtype and two.dtype == dtype
    assert tuple(held.shape) == (None, 4, 4, 4) == tuple(two.shape)
