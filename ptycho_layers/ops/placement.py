"""Placement, vectorized: the exact adjoint of `ops.extraction`.

Every patch value is spread back over the (up to four) window entries it
was blended from, with the same bilinear weights, and each window is added
into its object; what falls outside the object is dropped. This is also
extraction's gradient with respect to the object (TensorFlow uses it as
such; JAX and PyTorch derive the same from the kernel, and the tests check
one against the other).

Complex values follow TensorFlow's convention when used as a gradient: for
a real loss L, `upstream = dL/d(re) + i dL/d(im)`; placement, being
linear with real weights, maps it to the object's gradient in the same
convention.
"""

from keras import ops
from keras.src.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.ops import geometry
from ptycho_layers.ops import runs

__all__ = ["place_patches_batched", "real_parts"]


def real_parts(values, dtype, coord):
    """[real, imag] of complex `values`, else [values cast to `coord`]."""
    if dtype in geometry.COMPLEX:
        return [ops.real(values), ops.imag(values)]
    return [ops.cast(values, coord)]


def _groups_first_geometry(height, width, x, y, finite, patch_size, predicate):
    """Window starts and blend weights with the groups first, materialised.

    x, y: (b, c) sanitized offsets; finite: (b, c) bool. Returns (x_start, y_start, row_w0,
    row_w1, col_w0, col_w1): (b, c) int32 starts and (b, c, N) weights.

    Behind a fusion boundary: fused into the loops over window entries, XLA
    would recompute them from the offsets for every entry. (The transposes
    also keep XLA from turning the boundary into a select, which it does
    when a branch holds only elementwise operations.)
    """
    coord = standardize_dtype(x.dtype)

    def compute():
        where = geometry.window_geometry(
            x, y, height, width, patch_size, coord, finite
        )
        weights = [
            ops.transpose(where[k], (0, 2, 1))
            for k in ("row_w0", "row_w1", "col_w0", "col_w1")
        ]
        return (where["x_start"], where["y_start"], *weights)

    return backends.current().fusion_boundary(compute, predicate)


def _spread(values, row_w0, row_w1, col_w0, col_w1):
    """The adjoint of the bilinear blend, on real values, groups first.

    values: (b, c, N, N); weights (b, c, N). Returns (b, c, N+1, N+1):
    what each window entry receives, summed over the patch entries that
    read it. Window entry (p, q) is read by patch entries (p or p-1, q or
    q-1); with the values and the weights padded by zeros that is one
    elementwise expression (one loop under XLA).
    """
    pad_end = [[0, 0], [0, 0], [0, 1]]
    pad_start = [[0, 0], [0, 0], [1, 0]]
    # (b, c, N+1): weight of window entry n as the first neighbour of
    # patch entry n (w0) or the second neighbour of patch entry n-1 (w1).
    col_w0 = ops.pad(col_w0, pad_end)[:, :, None, :]
    col_w1 = ops.pad(col_w1, pad_start)[:, :, None, :]
    row_w0 = ops.pad(row_w0, pad_end)[:, :, :, None]
    row_w1 = ops.pad(row_w1, pad_start)[:, :, :, None]
    padded = ops.pad(values, [[0, 0], [0, 0], [1, 1], [1, 1]])
    size = ops.shape(values)[-1] + 1

    def at(row, col):
        # padded[p + row, q + col] for every window entry (p, q).
        return padded[:, :, row:row + size, col:col + size]

    same_row = col_w0 * at(1, 1) + col_w1 * at(1, 0)
    row_above = col_w0 * at(0, 1) + col_w1 * at(0, 0)
    return row_w0 * same_row + row_w1 * row_above


def place_patches_batched(patches, offsets, image_shape):
    """Add every patch into its object: the adjoint of
    `extraction.extract_patches_batched`.

    Args:
        patches: (B, N, N, c), real or complex.
        offsets: (B, c, 2), [x, y] in object pixels.
        image_shape: (Bi, H, W) static ints, Bi being 1 (every row's
            patches into one object) or B (row b's patches into object b).

    Returns:
        (Bi, H, W) in the patches' dtype. O(K*N^2) work, plus zeroing the
        result. A patch whose offset is not finite adds nothing (whatever
        its values, NaN included); what falls outside the object is
        dropped.
    """
    patches = ops.convert_to_tensor(patches)
    offsets = ops.convert_to_tensor(offsets)
    dtype = standardize_dtype(patches.dtype)
    coord = geometry.coordinate_dtype(dtype)
    num_images, height, width = image_shape
    patch_size = ops.shape(patches)[1]
    x, y, finite = geometry.sanitize_offsets(
        offsets, height, width, patch_size, coord
    )
    x_start, y_start, *weights = _groups_first_geometry(
        height, width, x, y, finite, patch_size, ops.all(finite)
    )
    # Zero weights alone would leave 0 * NaN = NaN.
    patches = backends.current().where(
        finite[:, None, None, :], patches, ops.zeros_like(patches)
    )
    values = ops.transpose(patches, (0, 3, 1, 2))
    spread = [_spread(part, *weights) for part in real_parts(values, dtype, coord)]
    if dtype in geometry.COMPLEX:
        contributions = backends.current().complex(*spread)
    else:
        contributions = ops.cast(spread[0], dtype)
    image_index = geometry.image_indices(ops.shape(offsets)[0], num_images)
    return _add_windows(contributions, image_index, x_start, y_start, image_shape)


def _add_windows(contributions, image_index, x_start, y_start, shape):
    """Add (b, c, P, P) windows into zeros of `shape` (Bi, H, W), window
    (b, k) at rows y_start[b, k]... and columns x_start[b, k]... of image
    image_index[b]. Entries outside the images are zero and dropped."""
    size = ops.shape(contributions)[-1]
    _, height, width = shape
    if backends.current().add_runs is not None and runs.available(width, size):
        return runs.add_windows(contributions, image_index, x_start, y_start, shape)
    span = ops.arange(size, dtype="int32")
    rows = ops.clip(y_start[:, :, None] + span, 0, height - 1)
    cols = ops.clip(x_start[:, :, None] + span, 0, width - 1)
    # Entries at clamped indices are zero: adding them changes nothing.
    positions = (
        (image_index[:, None, None, None] * height + rows[:, :, :, None])
        * width
        + cols[:, :, None, :]
    )
    total = backends.current().add_at(
        ops.reshape(contributions, (-1,)),
        ops.reshape(positions, (-1,)),
        shape[0] * height * width,
    )
    return ops.reshape(total, shape)
