"""How `PatchExtraction` stores the object it holds, as a Keras weight.

A complex (H, W) object is stored as (H, W, 2) real and imaginary parts,
trainable or not: Keras's optimizers (Adam's moments), JAX's
complex-gradient convention, `model.summary()` and `count_params()` all
assume real weights. A real object is stored as it is.
"""

import numpy as np
from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops

__all__ = ["stored_as", "stored_values", "image_of", "pairs_from_old_file"]

_PARTS = {"complex64": "float32", "complex128": "float64"}


def stored_as(image_shape, image_dtype):
    """(shape, dtype) of the weight holding an (H, W) object of
    `image_dtype`: (H, W, 2) in float32/float64 for complex64/complex128,
    else (H, W) in `image_dtype`."""
    image_dtype = standardize_dtype(image_dtype)
    if image_dtype in _PARTS:
        return (*image_shape, 2), _PARTS[image_dtype]
    return tuple(image_shape), image_dtype


def stored_values(image, image_dtype):
    """The numpy (H, W) object as the weight's values."""
    shape, dtype = stored_as(image.shape, image_dtype)
    if len(shape) == 3:
        image = np.stack([image.real, image.imag], axis=-1)
    return image.astype(dtype)


def image_of(variable, image_dtype):
    """The weight's (H, W) object as a tensor in `image_dtype` (inside
    `tf.data` under JAX or PyTorch, its value when the pipeline runs:
    `backends.variable_value`)."""
    variable = backends.variable_value(variable)
    if standardize_dtype(image_dtype) not in _PARTS:
        return variable
    pairs = ops.convert_to_tensor(variable)
    # One op, whose gradient is the real and imaginary parts; casting real
    # to complex would warn on every backward pass (TensorFlow) that the
    # cast's gradient drops an imaginary part.
    return backends.current().complex(pairs[..., 0], pairs[..., 1])


def pairs_from_old_file(value, image_shape, layer_name):
    """Files saved before complex objects were stored as pairs hold an
    (H, W) complex weight: its (H, W, 2) pairs, or None for any other
    value."""
    if value is None or not np.iscomplexobj(value):
        return None
    value = np.asarray(value)
    if value.shape != tuple(image_shape):
        raise ValueError(
            f"Layer '{layer_name}' holds an image of shape "
            f"{tuple(image_shape)}; the saved one has shape {value.shape}."
        )
    return stored_values(value, value.dtype)
