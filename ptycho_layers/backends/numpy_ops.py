"""The `keras.ops` functions the XLA implementation calls, in NumPy, with
Keras's result dtypes: `backends.keras_ops` inside `backends.on_host`.

Not Keras's own NumPy backend: it imports JAX (a tenth of a second or
more, in a call whose point is to be quick) and copies every argument it
converts. Only what the kernels use is here; a function missing is an
AttributeError naming it, not a silent fallback.
"""

import builtins

import keras
import numpy as np
from keras.backend import standardize_dtype


def _as(value, dtype):
    return np.asarray(value).astype(dtype, copy=False)


def _promoted(result, *args):
    """`result` in the dtype Keras gives `args`: NumPy's promotion already
    takes Python numbers beside arrays as weak (NEP 50), as Keras does;
    Python numbers alone give Keras's float32 (floatx) or int32, where
    NumPy would give 64 bits. (Keras's `result_type` is not used: off
    TensorFlow it makes every 64-bit result 32-bit, which JAX's 64-bit
    mode does not.)"""
    result = np.asarray(result)
    # `builtins.any`: this module's `any` is keras.ops's.
    if builtins.any(hasattr(arg, "dtype") for arg in args):
        return result
    kind = {"f": keras.config.floatx(), "i": "int32"}.get(result.dtype.kind)
    return result if kind is None else result.astype(kind)


def dtype(x):
    return standardize_dtype(x.dtype)


def convert_to_tensor(x, dtype=None):
    if dtype is not None:
        return np.asarray(x, standardize_dtype(dtype))
    return _promoted(x, x)


def shape(x):
    return tuple(np.shape(x))


def cast(x, dtype):
    return _as(x, standardize_dtype(dtype))


def zeros(shape, dtype=None):
    return np.zeros(shape, standardize_dtype(dtype or keras.config.floatx()))


def zeros_like(x, dtype=None):
    return np.zeros_like(x, dtype=None if dtype is None else standardize_dtype(dtype))


def arange(start, stop=None, step=1, dtype=None):
    if dtype is not None:
        return np.arange(start, stop, step, dtype=standardize_dtype(dtype))
    return _promoted(np.arange(start, stop, step), start, stop, step)


def where(condition, x1, x2):
    return _promoted(np.where(condition, x1, x2), x1, x2)


def minimum(x1, x2):
    return _promoted(np.minimum(x1, x2), x1, x2)


def clip(x, x_min, x_max):
    x = np.asarray(x)
    return _as(np.clip(x, x_min, x_max), x.dtype)


def floor(x):
    return np.floor(x)


def isfinite(x):
    return np.isfinite(x)


def logical_and(x1, x2):
    return np.logical_and(x1, x2)


def logical_or(x1, x2):
    return np.logical_or(x1, x2)


def logical_not(x):
    return np.logical_not(x)


def all(x, axis=None, keepdims=False):  # noqa: A001 (keras.ops's name)
    return np.all(x, axis=axis, keepdims=keepdims)


def any(x, axis=None, keepdims=False):  # noqa: A001 (keras.ops's name)
    return np.any(x, axis=axis, keepdims=keepdims)


def sum(x, axis=None, keepdims=False):  # noqa: A001 (keras.ops's name)
    x = np.asarray(x)
    return _as(np.sum(x, axis=axis, keepdims=keepdims), x.dtype)


def argmax(x, axis=None, keepdims=False):
    return _as(np.argmax(x, axis=axis, keepdims=keepdims), "int32")


def real(x):
    return np.real(x)


def imag(x):
    return np.imag(x)


def reshape(x, newshape):
    return np.reshape(x, newshape)


def transpose(x, axes=None):
    return np.transpose(x, axes)


def broadcast_to(x, shape):
    return np.broadcast_to(x, shape)


def stack(x, axis=0):
    return np.stack(x, axis=axis)


def concatenate(xs, axis=0):
    return np.concatenate(xs, axis=axis)


def pad(x, pad_width, mode="constant", constant_values=None):
    if mode != "constant" or constant_values not in (None, 0):
        raise NotImplementedError("pad on the host: zeros only")
    return np.pad(x, pad_width)


def take(x, indices, axis=None):
    return np.take(x, indices, axis=axis)


def slice(inputs, start_indices, shape):  # noqa: A001 (keras.ops's name)
    index = tuple(
        np.s_[start:start + size] for start, size in zip(start_indices, shape)
    )
    return np.asarray(inputs)[index]


def slice_update(inputs, start_indices, updates):
    updates = np.asarray(updates)
    out = np.array(inputs, copy=True)
    index = tuple(
        np.s_[start:start + size] for start, size in zip(start_indices, updates.shape)
    )
    out[index] = updates
    return out


def _fft2(x, transform):
    real, imag = (np.asarray(part) for part in x)
    values = np.empty(real.shape, np.result_type(real.dtype, np.complex64))
    values.real = real
    values.imag = imag
    result = transform(values, axes=(-2, -1))
    return result.real.astype(real.dtype), result.imag.astype(real.dtype)


def fft2(x):
    return _fft2(x, np.fft.fft2)


def ifft2(x):
    return _fft2(x, np.fft.ifft2)
