"""Argument checks shared by the layer and the functional API.

Every check raises `ValueError` naming the argument and quoting what was
received, so bad input never reaches the kernels (or TensorFlow).
Shapes are checked where they are known statically; unknown dimensions
(`None`) pass.
"""

import keras
import numpy as np

from ptycho_layers import operators

__all__ = [
    "check_positive_int",
    "check_batched",
    "check_images_shape",
    "check_offsets_shape",
    "check_batches_match",
    "single_object",
    "check_bool",
    "check_image_shape",
    "check_patches_shape",
    "check_patches_match_offsets",
    "check_crop",
    "check_interpolation",
    "check_numeric",
    "check_real_offsets",
    "check_object_size",
    "layer_from_config",
]

# The XLA implementation (TensorFlow, JAX) computes flat positions in the
# objects in int32; past this, they would wrap around silently.
INDEX_LIMIT = 2**31 - 1


def check_positive_int(value, name):
    # bool is an int subclass, but `True` is no size.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"Argument `{name}` must be a positive int. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_interpolation(interpolation, fourier_margin, batched=True):
    """The checked (interpolation, fourier_margin): `interpolation` one of
    `operators.KERNELS`, `fourier_margin` a positive int (checked whatever
    the kernel, so that a bad value in a config is never silently kept);
    the legacy loop (`batched` False) is bilinear only."""
    if not isinstance(interpolation, str) or interpolation not in operators.KERNELS:
        raise ValueError(
            "Argument `interpolation` must be one of "
            f"{', '.join(repr(name) for name in operators.KERNELS)}. "
            f"Received: interpolation={interpolation!r}"
        )
    fourier_margin = check_positive_int(fourier_margin, "fourier_margin")
    if not batched and interpolation != "bilinear":
        raise ValueError(
            "Argument `interpolation` must be 'bilinear' with batched=False "
            "(the legacy loop is PtychoPINN's bilinear translation). "
            f"Received: interpolation={interpolation!r}, batched=False"
        )
    return interpolation, fourier_margin


def check_batched(batched):
    if not isinstance(batched, bool):
        raise ValueError(
            "Argument `batched` must be a bool (True for the vectorized "
            f"path, False for the legacy loop). Received: batched={batched!r}"
        )
    return batched


def check_images_shape(shape, name="images"):
    """Accept (B, H, W) or (B, H, W, 1); return the rank-3 shape."""
    shape = tuple(shape)
    if len(shape) == 4:
        if shape[-1] not in (1, None):
            raise ValueError(
                f"Argument `{name}` must have a single channel: shape "
                f"(B, H, W) or (B, H, W, 1). Received: {name}.shape={shape}"
            )
        shape = shape[:3]
    if len(shape) != 3:
        raise ValueError(
            f"Argument `{name}` must have shape (B, H, W) or (B, H, W, 1). "
            f"Received: {name}.shape={shape}"
        )
    for size in shape[1:]:
        if size is not None and size < 1:
            raise ValueError(
                f"Argument `{name}` must have a non-empty object (H, W >= 1). "
                f"Received: {name}.shape={shape}"
            )
    return shape


def check_offsets_shape(shape, name="offsets"):
    """Accept (B, c, 2): c scan positions per group, [x, y] on the last axis."""
    shape = tuple(shape)
    if len(shape) != 3 or shape[-1] not in (2, None):
        raise ValueError(
            f"Argument `{name}` must have shape (B, c, 2), [x, y] on the last "
            f"axis. Received: {name}.shape={shape}"
        )
    return shape


def check_batches_match(images_shape, offsets_shape):
    """Images' batch must be 1 (one shared object) or the offsets' batch."""
    images_batch, offsets_batch = images_shape[0], offsets_shape[0]
    if images_batch in (None, 1) or offsets_batch is None:
        return
    if images_batch != offsets_batch:
        raise ValueError(
            "Argument `images` must have a batch of 1 (one object for every "
            "row of offsets) or the same batch as `offsets`. Received: "
            f"images.shape={tuple(images_shape)}, "
            f"offsets.shape={tuple(offsets_shape)}"
        )


def single_object(image, name):
    """Accept one object, (H, W) or (H, W, 1) (an array or a tensor), and
    return it as (H, W)."""
    if len(image.shape) == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if len(image.shape) != 2:
        raise ValueError(
            f"Argument `{name}` must have shape (H, W) or (H, W, 1). "
            f"Received: {name}.shape={tuple(image.shape)}"
        )
    return image


def check_bool(value, name):
    if not isinstance(value, bool):
        raise ValueError(
            f"Argument `{name}` must be a bool. Received: {name}={value!r}"
        )
    return value


def check_image_shape(image_shape, name="image_shape"):
    """Accept (H, W) with H, W >= 1; return it as a tuple of ints."""
    try:
        shape = tuple(int(size) for size in image_shape)
        exact = all(
            not isinstance(size, bool) and int(size) == size for size in image_shape
        )
    except (TypeError, ValueError):
        shape, exact = None, False
    if shape is None or not exact or len(shape) != 2 or min(shape) < 1:
        raise ValueError(
            f"Argument `{name}` must be (H, W), two positive ints. "
            f"Received: {name}={image_shape!r}"
        )
    return shape


def check_patches_shape(shape, name="patches"):
    """Accept (B, N, N, c), square patches; return the shape."""
    shape = tuple(shape)
    square = len(shape) == 4 and (
        None in shape[1:3] or shape[1] == shape[2]
    )
    if not square or (shape[1] is not None and shape[1] < 1):
        raise ValueError(
            f"Argument `{name}` must have shape (B, N, N, c): square N x N "
            f"patches, a group's c patches on the last axis. Received: "
            f"{name}.shape={shape}"
        )
    return shape


def check_patches_match_offsets(patches_shape, offsets_shape):
    """B and c of the patches must be those of the offsets."""
    pairs = ((patches_shape[0], offsets_shape[0]), (patches_shape[3], offsets_shape[1]))
    if any(a is not None and b is not None and a != b for a, b in pairs):
        raise ValueError(
            "Arguments `patches` (B, N, N, c) and `offsets` (B, c, 2) must "
            "agree on B and c. Received: "
            f"patches.shape={tuple(patches_shape)}, "
            f"offsets.shape={tuple(offsets_shape)}"
        )


def check_crop(crop, patch_size, name="crop"):
    """None (the whole patch) or an int in [1, N]."""
    if crop is None:
        return None
    if (
        isinstance(crop, bool)
        or not isinstance(crop, (int, np.integer))
        or crop < 1
        or (patch_size is not None and crop > patch_size)
    ):
        raise ValueError(
            f"Argument `{name}` must be None or an int from 1 to the patch "
            f"size N = {patch_size}. Received: {name}={crop!r}"
        )
    return int(crop)


def _dtype_of(value):
    """`value`'s dtype as Keras names it, or its NumPy name where Keras has
    none (strings, objects), without converting a tensor."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        dtype = np.asarray(value).dtype
    try:
        return keras.backend.standardize_dtype(dtype)
    except (ValueError, TypeError, AttributeError):
        return str(getattr(dtype, "name", dtype))


def check_numeric(value, name):
    """Accept a real or complex number array (bool and integers included);
    refuse strings and other objects. Returns the Keras dtype name."""
    dtype = _dtype_of(value)
    if dtype == "bool" or dtype.startswith(("int", "uint", "float", "bfloat", "complex")):
        return dtype
    raise ValueError(
        f"Argument `{name}` must hold numbers (real or complex). "
        f"Received: {name} of dtype {dtype}"
    )


def check_real_offsets(value, name="offsets"):
    """Accept integer or real float offsets; refuse complex (an imaginary
    part would be dropped), bool and non-numeric ones."""
    dtype = check_numeric(value, name)
    if not dtype.startswith(("int", "uint", "float", "bfloat")):
        raise ValueError(
            f"Argument `{name}` must be real: integer or float [x, y] "
            f"positions. Received: {name} of dtype {dtype}"
        )
    return dtype


def check_object_size(count, height, width, patch_size, implementation, name, received):
    """Refuse, on the XLA implementation, objects whose flat positions
    (with a window's margin on every side) would not fit in int32: `count`
    objects of `height` x `width` (None where unknown) and patches of
    `patch_size`. `received` is quoted in the message."""
    if implementation != "xla" or None in (count, height, width):
        return
    margin = 2 * (patch_size + 2)
    if count * (height + margin) * (width + margin) <= INDEX_LIMIT:
        return
    raise ValueError(
        f"Argument `{name}` is too large for 32-bit positions, which the "
        "TensorFlow and JAX backends (and the offsets' gradient on PyTorch) "
        f"index objects with: up to 2**31 pixels in all, less a margin of {margin} pixels on each "
        f"axis (here {count} x ({height} + {margin}) x ({width} + {margin}) = "
        f"{count * (height + margin) * (width + margin)}). Use the PyTorch "
        f"backend, or split the object. Received: {received}"
    )


def layer_from_config(cls, config):
    """`cls(**config)` for a layer's `from_config`, its dtype policy
    deserialized: Keras's default wraps any error in a TypeError naming the
    whole config, where a bad value here is the caller's ValueError."""
    config = dict(config)
    if "dtype" in config and isinstance(config["dtype"], dict):
        config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
    return cls(**config)
