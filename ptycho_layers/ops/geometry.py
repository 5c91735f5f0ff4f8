"""From offsets to windows: where each patch's neighbourhood lies in the
object and how its entries are weighted.

Shared by every direction of the operator (extraction, placement, the
offsets' gradient). Under the project's convention, a patch of size N at
offset [x, y] samples the zero-extended object bilinearly at

    row = y - N//2 + i,   column = x - N//2 + j,

so it reads the (N+1)x(N+1) window starting at (floor(y) - N//2,
floor(x) - N//2), blended with the fractions of x and y.

Shapes: `offsets` (B, c, 2) [x, y]; `x`, `y` (b, c); images (Bi, H, W),
Bi being 1 (one object for every row of offsets) or B.
"""

from keras.src.backend import standardize_dtype

from ptycho_layers.backends import keras_ops as ops

__all__ = [
    "COMPLEX",
    "coordinate_dtype",
    "sanitize_offsets",
    "window_geometry",
    "image_indices",
    "flat_positions",
    "nan_where_not_finite",
    "real_parts",
]

COMPLEX = ("complex64", "complex128")


def coordinate_dtype(image_dtype):
    """The float dtype used for coordinates and bilinear weights.

    float64 for float64 and complex128 images, float32 for everything else
    (float16/bfloat16 images included: half precision cannot hold a sub-pixel
    position in an object a few thousand pixels wide).
    """
    dtype = standardize_dtype(image_dtype)
    return "float64" if dtype in ("float64", "complex128") else "float32"


def sanitize_offsets(offsets, height, width, patch_size, dtype):
    """Split offsets into x and y, made safe to turn into indices.

    Args:
        offsets: (B, c, 2) [x, y], any real or integer dtype.
        height, width: the object's size (ints or scalar tensors).
        patch_size: N.
        dtype: the coordinate dtype.

    Returns:
        (x, y, finite): x and y (B, c) in `dtype`, with non-finite values
        replaced by 0 and values clipped to a range beyond which a patch is
        wholly outside the object anyway (so the integer cast cannot
        overflow and the result is unchanged); `finite` (B, c) bool marks
        the offsets that were finite.
    """
    offsets = ops.cast(offsets, dtype)
    x = offsets[..., 0]
    y = offsets[..., 1]
    finite = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
    x = ops.where(finite, x, ops.zeros_like(x))
    y = ops.where(finite, y, ops.zeros_like(y))
    # A window starting N+2 pixels beyond either edge reads only zeros, both
    # before and after clipping, so clipping changes nothing but the range.
    margin = patch_size + 2
    x = ops.clip(x, -margin, ops.cast(width + margin, dtype))
    y = ops.clip(y, -margin, ops.cast(height + margin, dtype))
    return x, y, finite


def _axis_indices(start, fraction, size, patch_size, coord_dtype):
    """Clamped indices and masked bilinear weights along one axis.

    Args:
        start: (b, c) int32, the first object index of each window.
        fraction: (b, c) the sub-pixel part of each offset, in [0, 1).
        size: the object's extent along this axis.
        patch_size: N; each window spans N+1 object indices.

    Returns:
        (index, inside, w0, w1), groups last: `index` (b, N+1, c) int32
        clamped into [0, size-1]; `inside` (b, N+1, c), 1 where the
        unclamped index lies inside the object, else 0; `w0`, `w1` (b, N,
        c): the weights of window entries n and n+1 for output entry n,
        already zero outside the object. Folding the zero extension into
        these 1-D weights costs O(N) per patch instead of a mask over the
        window.
    """
    index = start[:, None, :] + ops.arange(patch_size + 1, dtype="int32")[:, None]
    inside = ops.cast(
        ops.logical_and(index >= 0, index < size), coord_dtype
    )
    index = ops.clip(index, 0, size - 1)
    fraction = fraction[:, None, :]
    w0 = (1 - fraction) * inside[:, :-1]
    w1 = fraction * inside[:, 1:]
    return index, inside, w0, w1


def window_geometry(x, y, height, width, patch_size, coord_dtype, finite=None):
    """Where each window lies and how it is blended.

    Args:
        x, y: (b, c) sanitized offsets in the coordinate dtype.
        height, width: the object's size.
        patch_size: N.
        coord_dtype: the coordinate dtype.
        finite: optional (b, c) bool, false where the offset was not
            finite: that patch's weights are all zero, so it neither reads
            nor receives anything (and its gradient is zero), rather than
            acting at the sanitized offset.

    Returns:
        dict with x_start, y_start (b, c) int32 (the window's first column
        and row) and, per axis (see `_axis_indices`): rows (b, N+1, c),
        row_inside (b, N+1, c), row_w0 and row_w1 (b, N, c); likewise
        cols, col_inside, col_w0, col_w1.
    """
    half = patch_size // 2
    # Split into integer and fraction *before* subtracting N//2: the
    # fraction of the offset itself is exact in its own precision.
    x_floor = ops.floor(x)
    y_floor = ops.floor(y)
    x_start = ops.cast(x_floor, "int32") - half
    y_start = ops.cast(y_floor, "int32") - half
    row_index, row_inside, row_w0, row_w1 = _axis_indices(
        y_start, y - y_floor, height, patch_size, coord_dtype
    )
    if finite is not None:
        # Zeroing one axis's weights zeroes the patch's every weight.
        keep = ops.cast(finite, coord_dtype)[:, None, :]
        row_w0, row_w1 = row_w0 * keep, row_w1 * keep
    col_index, col_inside, col_w0, col_w1 = _axis_indices(
        x_start, x - x_floor, width, patch_size, coord_dtype
    )
    return {
        "x_start": x_start, "y_start": y_start,
        "rows": row_index, "row_inside": row_inside,
        "row_w0": row_w0, "row_w1": row_w1,
        "cols": col_index, "col_inside": col_inside,
        "col_w0": col_w0, "col_w1": col_w1,
    }


def image_indices(batch, num_images):
    """(batch,) int32: which image each row of offsets reads. With one
    shared object every row reads image 0; with one object per row, row b
    reads image b."""
    return ops.minimum(
        ops.arange(batch, dtype="int32"), ops.cast(num_images - 1, "int32")
    )


def flat_positions(image_index, rows, cols, height, width):
    """Flat positions in the (Bi, H, W) images of every window entry.

    Args:
        image_index: (b,) int32; rows: (b, N+1, c) and cols (b, N+1, c)
            int32, clamped into the object.

    Returns:
        (b, N+1, N+1, c) int32.
    """
    return (
        (image_index[:, None, None, None] * height + rows[:, :, None, :])
        * width
        + cols[:, None, :, :]
    )


def nan_where_not_finite(values, finite):
    """Replace whole patches whose offset was not finite by NaN.

    Args:
        values: (B, N, N, c) patches; finite: (B, c) bool.

    Returns:
        (B, N, N, c), NaN (NaN + NaN*i when complex) for every patch whose
        offset was not finite.
    """
    # Adding 0 or NaN, rather than `ops.where`, which on the TensorFlow
    # backend turns complex128 into complex64 (losing precision).
    nan = ops.where(finite, 0.0, float("nan"))[:, None, None, :]
    dtype = standardize_dtype(values.dtype)
    if dtype in COMPLEX:
        # NaN in both parts, not NaN + 0j.
        nan = ops.cast(nan, dtype) * ops.cast(1 + 1j, dtype)
    return values + ops.cast(nan, dtype)


def real_parts(values, dtype, coord):
    """[real, imag] of complex `values`, else [values cast to `coord`]."""
    if dtype in COMPLEX:
        return [ops.real(values), ops.imag(values)]
    return [ops.cast(values, coord)]
