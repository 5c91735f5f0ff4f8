"""`extract_patches`: the layer's contract as a plain function."""

from ptycho_layers import backends
from ptycho_layers import legacy
from ptycho_layers import operators
from ptycho_layers import validation
from ptycho_layers.backends import keras_ops as ops

__all__ = ["extract_patches", "prepare_inputs", "computed_dtype", "as_float", "dispatch"]


def computed_dtype(dtype):
    """The dtype the operators compute and return for values of `dtype`:
    float32 for integer and bool ones (interpolation's weights are
    fractions: truncating its results, or dividing by an integer coverage,
    would be wrong), else `dtype` itself."""
    if dtype == "bool" or dtype.startswith(("int", "uint")):
        return "float32"
    return dtype


def as_float(values, dtype):
    """`values` of `dtype` as `computed_dtype(dtype)`."""
    target = computed_dtype(dtype)
    return values if target == dtype else ops.cast(values, target)


def prepare_inputs(images, offsets, patch_size=0):
    """Convert and check `images` and `offsets`; drop a trailing channel axis.

    Args:
        images: (B, H, W) or (B, H, W, 1), real or complex; integer and
            bool objects are taken as float32.
        offsets: (B, c, 2), [x, y]; integer offsets are cast to the
            coordinate dtype (they are exact in it), not refused.
        patch_size: N, for the check of the objects' size.

    Returns:
        (images, offsets): images (Bi, H, W), offsets (B, c, 2), as tensors.
    """
    # Before any conversion: a bad dtype or an object too large to index
    # is refused without copying it.
    dtype = validation.check_numeric(images, "images")
    validation.check_real_offsets(offsets)
    shape = getattr(images, "shape", None)
    if shape is not None and len(shape) in (3, 4):
        validation.check_object_size(
            *tuple(shape)[:3], patch_size, backends.current().IMPLEMENTATION,
            "images", f"images.shape={tuple(shape)}",
        )
    images = as_float(ops.convert_to_tensor(images), dtype)
    offsets = ops.convert_to_tensor(offsets)
    images_shape = validation.check_images_shape(images.shape)
    offsets_shape = validation.check_offsets_shape(offsets.shape)
    validation.check_batches_match(images_shape, offsets_shape)
    if len(images.shape) == 4:
        images = ops.squeeze(images, axis=-1)
    return images, offsets


def dispatch(images, offsets, patch_size, batched, kernel="bilinear"):
    """Run the vectorized operator with `kernel` (an
    `operators.kernel_spec`) or the legacy loop on checked inputs."""
    if not batched:
        return legacy.extract_patches_legacy(images, offsets, patch_size)
    extraction = operators.extraction(patch_size, kernel, backends.current())
    return extraction(images, offsets)


def extract_patches(
    images, offsets, patch_size, batched=True, interpolation="bilinear",
    fourier_margin=1,
):
    """Extract the NxN patch of the object under every scan position.

    `patch[b, i, j, k]` samples object b (or the only object) at row
    `y - N//2 + i`, column `x - N//2 + j`, where `[x, y] = offsets[b, k]`,
    the object being zero outside its bounds: bilinearly by default;
    `interpolation="fourier"` shifts the integer window of (N + 2m)^2
    pixels around the patch (m = `fourier_margin`) by the offset's
    fraction in Fourier space (band-limited, no blur), and
    `interpolation="nearest"` takes the pixel nearest to each position.
    At integer offsets every kernel gives the plain slice.

    Example:

    >>> import numpy as np
    >>> obj = np.arange(36, dtype="float32").reshape(1, 6, 6)
    >>> patches = extract_patches(obj, [[[3.0, 2.0]]], patch_size=2)
    >>> np.asarray(patches)[0, :, :, 0]
    array([[ 8.,  9.],
           [14., 15.]], dtype=float32)

    Args:
        images: (B, H, W) or (B, H, W, 1), real or complex; B is 1 (one
            object shared by every row of offsets) or the offsets' batch.
        offsets: (B, c, 2), [x, y] in object pixels (x = column).
        patch_size: N, a positive int.
        batched: True for the vectorized path, False for the legacy loop
            (bilinear only).
        interpolation: "bilinear" (the default), "fourier" or "nearest";
            the definitions are in the README ("Interpolation kernels").
        fourier_margin: m, a positive int: the Fourier kernel's window
            reaches m pixels beyond the patch on every side.

    Returns:
        (B, N, N, c) in the images' dtype.
    """
    patch_size = validation.check_positive_int(patch_size, "patch_size")
    batched = validation.check_batched(batched)
    interpolation, fourier_margin = validation.check_interpolation(
        interpolation, fourier_margin, batched
    )
    kernel = operators.kernel_spec(interpolation, fourier_margin)
    # Inside `tf.data` under JAX or PyTorch: TensorFlow ops.
    with backends.graph_scope_for((images, offsets)):
        images, offsets = prepare_inputs(images, offsets, patch_size)
        return dispatch(images, offsets, patch_size, batched, kernel)


# The implementation loaded now, not first inside a traced kernel
# (`operators.implementation`).
if backends.name() in backends.SUPPORTED:
    operators.implementation()
