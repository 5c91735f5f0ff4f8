"""Both layers by Keras's conventions on every backend: inputs as Python
lists, `tf.data.Dataset.map` under any backend, `model.summary()` and
`count_params()` with a complex held object, old files' complex weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BACKEND
from keras import ops
from oracle import asymmetric_object
from oracle import oracle_patches
from oracle import oracle_place

from ptycho_layers import PatchExtraction
from ptycho_layers import PatchPlacement
from ptycho_layers import extract_patches
from ptycho_layers import place_patches
from ptycho_layers import reassemble

numpy = ops.convert_to_numpy

# Under JAX and PyTorch a tf.data pipeline runs TensorFlow's kernels, which
# may sum in another order than the backend's own (PyTorch's op-by-op
# blend, JAX's compiled legacy loop): equal to a few float32 ulps, not bit
# for bit. Under TensorFlow it is the same kernel, so exactly equal.
OWN_ATOL = 0.0 if BACKEND == "tensorflow" else 1e-6


def _offsets(batch, groups, height, width, seed=0):
    rng = np.random.default_rng(seed)
    # Fractional, with some at the edges and outside the object.
    return (rng.random((batch, groups, 2)) * [width + 6, height + 6] - 3).astype(
        "float32"
    )


def _mapped(dataset, fn):
    return np.concatenate([numpy(x) for x in dataset.batch(3).map(fn)])


# The legacy loops in tf.data: -m slow (a few seconds each on JAX).
@pytest.mark.parametrize("batched", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_extraction_in_tf_data(batched):
    image = asymmetric_object(20, 24, "complex64")
    images = np.stack([asymmetric_object(20, 24, seed=s) for s in range(7)])
    offsets = _offsets(7, 3, 20, 24)

    held = PatchExtraction(6, batched=batched, image=image)
    got = _mapped(tf.data.Dataset.from_tensor_slices(offsets), held)
    assert got.dtype == np.complex64
    np.testing.assert_allclose(got, numpy(held(offsets)), rtol=0, atol=OWN_ATOL)
    np.testing.assert_allclose(got, oracle_patches(image[None], offsets, 6), atol=1e-5)

    two = PatchExtraction(6, batched=batched)
    pairs = tf.data.Dataset.from_tensor_slices((images, offsets))
    got = _mapped(pairs, lambda i, o: two((i, o)))
    np.testing.assert_allclose(got, oracle_patches(images, offsets, 6), atol=1e-5)
    got = _mapped(pairs, lambda i, o: two({"images": i, "offsets": o}))
    np.testing.assert_allclose(got, oracle_patches(images, offsets, 6), atol=1e-5)
    got = _mapped(pairs, lambda i, o: extract_patches(i, o, 6, batched=batched))
    np.testing.assert_allclose(got, oracle_patches(images, offsets, 6), atol=1e-5)


# The legacy loops in tf.data: -m slow (a few seconds each on JAX).
@pytest.mark.parametrize("batched", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_placement_in_tf_data(batched):
    offsets = _offsets(7, 2, 20, 24, seed=1)
    patches = np.random.default_rng(2).standard_normal((7, 5, 5, 2)).astype("float32")
    layer = PatchPlacement((20, 24), batched=batched)
    data = tf.data.Dataset.from_tensor_slices((patches, offsets))

    got = _mapped(data, lambda p, o: layer((p, o)))
    np.testing.assert_allclose(got, numpy(layer((patches, offsets))), rtol=0, atol=OWN_ATOL)
    want = np.stack([oracle_place(patches[b:b + 1], offsets[b:b + 1], (20, 24))[0]
                     for b in range(7)])
    np.testing.assert_allclose(got, want, atol=1e-5)

    got = _mapped(data, lambda p, o: place_patches(p, o, (20, 24), batched, per_row=True))
    np.testing.assert_allclose(got, want, atol=1e-5)
    got = _mapped(data, lambda p, o: reassemble(p, o, (20, 24), per_row=True, batched=batched))
    want = numpy(reassemble(patches, offsets, (20, 24), per_row=True, batched=batched))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_python_lists_as_inputs():
    image = asymmetric_object(12, 12, "float32")
    offsets = [[[5.0, 6.0], [6.5, 4.25]]]
    want = numpy(extract_patches(image[None], offsets, 4))
    np.testing.assert_array_equal(numpy(PatchExtraction(4, image=image)(offsets)), want)
    two = PatchExtraction(4)
    np.testing.assert_array_equal(numpy(two((image[None], offsets))), want)
    np.testing.assert_array_equal(
        numpy(two((image[None].tolist(), offsets))),
        numpy(extract_patches(image[None].tolist(), offsets, 4)),
    )
    np.testing.assert_array_equal(
        numpy(two({"images": image[None], "offsets": offsets})), want
    )
    placed = PatchPlacement((12, 12))((want.tolist(), offsets))
    np.testing.assert_allclose(
        numpy(placed), numpy(place_patches(want, offsets, (12, 12), per_row=True)),
        atol=1e-6,
    )
    # Two lists to the held form read as one (2, 1, 2, 2) offsets array.
    with pytest.raises(ValueError, match=r"`offsets`.*\(2, 1, 2, 2\)"):
        PatchExtraction(4, image=image)((offsets, offsets))


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "float32"])
@pytest.mark.parametrize("trainable", [False, True])
def test_summary_and_count_params(dtype, trainable, capsys):
    image = asymmetric_object(16, 10, dtype)
    layer = PatchExtraction(4, image=image, trainable_image=trainable)
    reals = 2 if dtype.startswith("complex") else 1
    # Before any call: the held form is built at construction.
    assert layer.count_params() == 16 * 10 * reals
    model = keras.Sequential([keras.Input((3, 2)), layer])
    model.summary()
    printed = capsys.readouterr().out
    assert f"Total params: {16 * 10 * reals}" in printed.replace(",", "")
    assert (f"Trainable params: {16 * 10 * reals if trainable else 0}"
            in printed.replace(",", ""))
    assert layer(keras.Input((3, 2))).dtype == dtype
    np.testing.assert_array_equal(numpy(layer.image), image)


def test_symbolic_call_of_held_form_checks_offsets():
    layer = PatchExtraction(4, image=np.ones((8, 8), "complex64"))
    with pytest.raises(ValueError, match="offsets"):
        layer(keras.Input((3, 3)))


def test_old_complex_weight_loads_as_pairs():
    # Files saved before complex objects were stored as real pairs hold an
    # (H, W) complex weight.
    image = asymmetric_object(9, 7, "complex64")
    layer = PatchExtraction(3, image_shape=(9, 7), image_dtype="complex64")
    layer.load_own_variables({"0": image})
    np.testing.assert_array_equal(numpy(layer.image), image)
    assert tuple(layer.image_variable.shape) == (9, 7, 2)
    with pytest.raises(ValueError, match=r"shape \(9, 7\).*\(7, 9\)"):
        layer.load_own_variables({"0": image.T})
