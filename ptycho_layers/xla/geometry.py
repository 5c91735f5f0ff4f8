"""From sanitized offsets to windows: where each patch's window lies in the
object, and the kernel's weights for it.

Shared by every direction of the operator (extraction, placement, the
offsets' gradient) and every kernel. The kernel says where a patch's
window starts (`origin`) and how large it is (`window_size`); the window
is then the S x S block of object pixels from that start, its indices
clamped into the object and marked inside or not, and the kernel turns the
offsets' fractions and those marks into its weights.

Shapes: `x`, `y` (b, c) sanitized offsets; windows S x S; images
(Bi, H, W).
"""

from keras.backend import standardize_dtype

from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.operators import COMPLEX

__all__ = ["axis_indices", "window_geometry", "flat_positions", "real_parts", "padded_along"]


def axis_indices(start, size, extent, coord_dtype):
    """Clamped indices along one axis and whether each lies in the object.

    Args:
        start: (b, c) int32, the first object index of each window.
        size: S, the window's extent along this axis.
        extent: the object's extent along this axis.

    Returns:
        (index, inside), groups last: `index` (b, S, c) int32 clamped into
        [0, extent-1]; `inside` (b, S, c) in `coord_dtype`, 1 where the
        unclamped index lies inside the object, else 0.
    """
    index = start[:, None, :] + ops.arange(size, dtype="int32")[:, None]
    inside = ops.cast(ops.logical_and(index >= 0, index < extent), coord_dtype)
    return ops.clip(index, 0, extent - 1), inside


def window_geometry(x, y, height, width, patch_size, kernel, coord_dtype, finite=None):
    """Where each window lies and the kernel's weights for it.

    Args:
        x, y: (b, c) sanitized offsets in the coordinate dtype.
        height, width: the object's size.
        patch_size: N.
        kernel: the kernel's module (`ptycho_layers.xla.bilinear`).
        coord_dtype: the coordinate dtype.
        finite: optional (b, c) bool, false where the offset was not
            finite: that patch's weights are all zero, so it neither reads
            nor receives anything (and its gradient is zero), rather than
            acting at the sanitized offset.

    Returns:
        dict with x_start, y_start (b, c) int32 (the window's first column
        and row); rows, row_inside, cols, col_inside (b, S, c) (see
        `axis_indices`); and "weights", the kernel's (`kernel.weights`).
    """
    size = kernel.window_size(patch_size)
    y_start, y_fraction = kernel.origin(y, patch_size)
    x_start, x_fraction = kernel.origin(x, patch_size)
    rows, row_inside = axis_indices(y_start, size, height, coord_dtype)
    cols, col_inside = axis_indices(x_start, size, width, coord_dtype)
    keep = None if finite is None else ops.cast(finite, coord_dtype)
    return {
        "x_start": x_start, "y_start": y_start,
        "rows": rows, "row_inside": row_inside,
        "cols": cols, "col_inside": col_inside,
        "weights": kernel.weights(y_fraction, x_fraction, row_inside, col_inside, keep),
    }


def flat_positions(image_index, rows, cols, height, width):
    """Flat positions in the (Bi, H, W) images of every window entry.

    Args:
        image_index: (b,) int32; rows: (b, S, c) and cols (b, S, c)
            int32, clamped into the object.

    Returns:
        (b, S, S, c) int32.
    """
    return (
        (image_index[:, None, None, None] * height + rows[:, :, None, :])
        * width
        + cols[:, None, :, :]
    )


def real_parts(values, dtype, coord):
    """[real, imag] of complex `values`, else [values cast to `coord`]."""
    if standardize_dtype(dtype) in COMPLEX:
        return [ops.real(values), ops.imag(values)]
    return [ops.cast(values, coord)]


def padded_along(x, axis, before, after):
    """`x` with `before` and `after` zeros along `axis` (`keras.ops.pad`
    makes a new Keras operation at each call, which `torch.compile` guards
    on and recompiles for)."""
    parts = []
    for count in (before, after):
        shape = list(ops.shape(x))
        shape[axis] = count
        parts.append([ops.zeros(shape, x.dtype)] if count else [])
    return ops.concatenate(parts[0] + [x] + parts[1], axis=axis)
