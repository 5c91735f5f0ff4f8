"""From sanitized offsets to windows, for every direction and kernel: the
kernel says where a window starts (`origin`) and its side (`window_size`);
its indices are clamped into the object and marked inside or not, and the
kernel turns the fractions and marks into its weights.

Shapes: `x`, `y` (b, c) sanitized offsets; windows S x S; images
(Bi, H, W).
"""

from keras.backend import standardize_dtype

from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.operators import COMPLEX

__all__ = [
    "axis_indices", "window_geometry", "flat_positions", "real_parts", "padded_along",
    "batch_rows",
]


def axis_indices(start, size, extent, coord_dtype):
    """(index, inside), groups last, along one axis for windows of side
    `size` from `start` (b, c) int32 in an object's `extent`: `index`
    (b, S, c) int32 clamped into [0, extent-1]; `inside` (b, S, c) in
    `coord_dtype`, 1 where the unclamped index lies in the object, else 0."""
    index = start[:, None, :] + ops.arange(size, dtype="int32")[:, None]
    inside = ops.cast(ops.logical_and(index >= 0, index < extent), coord_dtype)
    return ops.clip(index, 0, extent - 1), inside


def window_geometry(x, y, height, width, patch_size, kernel, coord_dtype, finite=None):
    """Where each window lies and the kernel's weights for sanitized `x`,
    `y` (b, c) in `coord_dtype`, an object of `height`, `width` and
    patches of `patch_size`: a dict with x_start, y_start (b, c) int32 (the
    window's first column and row); rows, row_inside, cols, col_inside
    (b, S, c) (`axis_indices`); and "weights" (`kernel.weights`). Where the
    optional `finite` (b, c) bool is false, the weights are all zero: the
    patch neither reads nor receives anything (its gradient zero) rather
    than acting at the sanitized offset."""
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
    """Flat positions (b, S, S, c) int32 in the (Bi, H, W) images of every
    window entry, from `image_index` (b,) int32 and `rows`, `cols`
    (b, S, c) int32 clamped into the object."""
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


def batch_rows(values, part):
    """Rows `part` of `values` (B, ...): a slice, or (start, count), a
    traced start (a loop's piece) and a static count."""
    if isinstance(part, slice):
        return values[part]
    start, count = part
    rank = len(values.shape)
    return ops.slice(values, (start,) + (0,) * (rank - 1), (count,) + tuple(values.shape[1:]))
