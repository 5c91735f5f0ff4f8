"""Placement on XLA: the exact adjoint of `extraction`, and its gradient
with respect to the object. Each patch is spread over its window by the
kernel's adjoint (`spread`) and the windows added into their objects,
what falls outside dropped. As a gradient, complex values keep
TensorFlow's convention (dL/d re + i dL/d im): placement is linear with
real weights.

Shapes: patches (B, N, N, c); `x`, `y` (B, c) sanitized offsets; windows
(b, c, S, S); objects (Bi, H, W).
"""

from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.operators import COMPLEX
from ptycho_layers.xla import extraction
from ptycho_layers.xla import geometry
from ptycho_layers.xla import padded_table
from ptycho_layers.xla import runs

__all__ = ["place"]


def _spread_inputs(kernel, patches, x, y, finite, height, width, predicate):
    """(x_start, y_start, operands): (b, c) int32 window starts and the
    kernel's `spread_operands` of a piece's `patches` (b, N, N, c), as
    real parts side by side (b, c, N, N, q), q = 2 for complex values,
    groups first, zero for non-finite offsets (for a kernel that
    `SPREADS_VALUES`: its weights and those values themselves, (b, c, N, N));
    `x`, `y` (b, c) the piece's sanitized offsets, `finite` (b, c) bool.

    Behind a fusion boundary: fused into the loops over window entries, XLA
    would recompute the weights for every entry; the data-dependent
    `predicate` is any scalar bool computed from the data (within a loop
    over pieces, from the sums so far); the transposes keep XLA from
    making it a select.
    The real and imaginary parts go in one array: XLA pads it in one loop.
    """
    coord = standardize_dtype(x.dtype)
    dtype = standardize_dtype(patches.dtype)
    patch_size = ops.shape(patches)[1]

    def compute():
        where = geometry.window_geometry(
            x, y, height, width, patch_size, kernel, coord, finite
        )
        # Zero weights alone would leave 0 * NaN = NaN.
        values = _zeroed_groups_first(patches, finite)
        if kernel.SPREADS_VALUES:
            return (where["x_start"], where["y_start"], where["weights"], values)
        pairs = ops.stack(geometry.real_parts(values, dtype, coord), axis=-1)
        operands = kernel.spread_operands(where["weights"], pairs)
        return (where["x_start"], where["y_start"], *operands)

    x_start, y_start, *operands = backends.current().fusion_boundary(compute, predicate)
    return x_start, y_start, operands


def _patches_as_windows(kernel, patches, x, y, finite, height, width):
    """(x_start, y_start, windows) for a kernel that `ADDS_PATCHES`: (b, c)
    int32 window starts and a piece's `patches` (b, N, N, c) as its
    windows (b, c, N, N), zero for non-finite offsets.

    With no weights to compute there is nothing behind a fusion boundary
    and no real parts: the patches are read once, by the loop that writes
    the windows the scatter adds (a fusion boundary, or the real parts
    and back, were two more passes over them).
    """
    coord = standardize_dtype(x.dtype)
    patch_size = ops.shape(patches)[1]
    where = geometry.window_geometry(x, y, height, width, patch_size, kernel, coord, finite)
    # A non-finite offset's sanitized one still names a window: its
    # patch, NaN included, is zeroed.
    return where["x_start"], where["y_start"], _zeroed_groups_first(patches, finite)


def _add_patches_padded(kernel, patches, image_index, x, y, finite, shape, sums):
    """`_add_padded` for a kernel that `ADDS_PATCHES`: its `patches`
    (b, N, N, c), at sanitized `x`, `y` (b, c), added into the padded table
    of objects of `shape` (Bi, H, W) (`sums` from an earlier piece, or None
    for zeros), each patch row (b, i, :, k) one run read where it lies.

    Groups stay last: no transposed, zeroed copy of the patches for the
    scatter to read back, which was a second pass over them. A patch whose
    offset is not `finite` (b, c) is added into the table's row of zeros
    after the last image row, which the crop drops, NaN included.
    """
    coord = standardize_dtype(x.dtype)
    _, height, width = shape
    size = ops.shape(patches)[1]
    where = geometry.window_geometry(x, y, height, width, size, kernel, coord, finite)
    starts = padded_table.starts(
        image_index, where["x_start"], where["y_start"], size, height, width
    )
    dropped = ops.where(finite[..., None], starts[..., 1], size + height * (width + size))
    # (b, N, c, 2): the scatter's index axes are the patches' other axes, in order.
    starts = ops.transpose(ops.stack([starts[..., 0], dropped], axis=-1), (0, 2, 1, 3))
    if sums is None:
        sums = _zero_sums(True, shape, size, patches.dtype)
    return (backends.current().add_runs(sums[0], starts, patches, run_axis=2),)


def _zeroed_groups_first(patches, finite):
    """`patches` (b, N, N, c) as (b, c, N, N), zero where the offset is not
    `finite` (b, c): such a patch adds nothing, whatever its values."""
    values = backends.current().where(
        finite[:, None, None, :], patches, ops.zeros_like(patches)
    )
    return ops.transpose(values, (0, 3, 1, 2))


def place(patches, image_index, x, y, finite, image_shape, kernel):
    """The adjoint of `extraction.extract`: `patches` (B, N, N, c), real or
    complex, at sanitized `x`, `y` (B, c) added into objects of static
    `image_shape` (Bi, H, W), in the patches' dtype; `image_index` (B,)
    int32; a patch whose offset is not `finite` (B, c) adds nothing, NaN
    included, and what falls outside is dropped. O(K*N^2), plus zeroing."""
    dtype = standardize_dtype(patches.dtype)
    num_images, height, width = image_shape
    batch, patch_size, _, groups = ops.shape(patches)
    size = kernel.window_size(patch_size)
    predicate = ops.all(finite)
    # Into the padded table where it is small (`padded_table.fits`): whole
    # runs, nothing masked, then the object cropped out of it.
    padded = padded_table.fits(image_shape, batch, groups, patch_size, size)
    # In pieces added into the sums in place, one after another: a piece's
    # inputs and spread windows take about twice its patches, so pieces of
    # 0.3 of the batch keep the working memory under the patches'; into the
    # padded table smaller pieces are faster, their windows staying in
    # cache.
    share = 0.1 if padded else 0.3
    if kernel.PIECE_SHARE is not None:
        # The kernel's own work on a piece's windows runs faster in cache
        # (Fourier's FFTs): its share, into the object as into the table.
        share = min(share, kernel.PIECE_SHARE)
    pieces = extraction.batch_pieces(batch, groups, patch_size, size, share=share)
    add = _add_padded if padded else _add_windows

    def add_piece(part, rows_finite, sums, predicate):
        piece, piece_index, piece_x, piece_y = _rows_of(part, patches, image_index, x, y)
        if kernel.ADDS_PATCHES and padded:
            return _add_patches_padded(
                kernel, piece, piece_index, piece_x, piece_y, rows_finite, image_shape, sums
            )
        if kernel.ADDS_PATCHES:
            x_start, y_start, contributions = _patches_as_windows(
                kernel, piece, piece_x, piece_y, rows_finite, height, width
            )
            return add(contributions, piece_index, x_start, y_start, image_shape, sums)
        x_start, y_start, operands = _spread_inputs(
            kernel, piece, piece_x, piece_y, rows_finite, height, width, predicate
        )
        if kernel.SPREADS_VALUES:
            contributions = kernel.spread_values(*operands, standardize_dtype(x.dtype))
            return add(contributions, piece_index, x_start, y_start, image_shape, sums)
        spread = kernel.spread(*operands)
        if dtype in COMPLEX:
            contributions = backends.current().complex(
                spread[..., 0], spread[..., 1]
            )
        else:
            contributions = ops.cast(spread[..., 0], dtype)
        return add(contributions, piece_index, x_start, y_start, image_shape, sums)

    if len(pieces) == 1:
        sums = add_piece(slice(None), finite, None, predicate)
    else:
        # The pieces as one loop, its body compiled once: written out one
        # after another, XLA compiled each piece, and the program's compile
        # time and the memory it keeps grew with their number, several
        # seconds and tens of MB per batch size (docs/performance.md, "The
        # first call"). The last piece is moved back to end with the
        # batch, its rows that the one before placed masked out.
        step = pieces[0][1]
        sums = _zero_sums(padded, image_shape, size, patches.dtype)

        def body(index, sums):
            start = ops.minimum(index * step, batch - step)
            part = (start, step)
            fresh = ops.arange(step, dtype="int32") + start >= index * step
            rows_finite = ops.logical_and(geometry.batch_rows(finite, part), fresh[:, None])
            # The piece's inputs wait for the sums so far: one piece's
            # windows are alive at a time.
            last = ops.reshape(sums[-1], (-1,))[:1]
            predicate = ops.all(ops.isfinite(ops.real(last)))
            return add_piece(part, rows_finite, sums, predicate)

        sums = ops.fori_loop(0, len(pieces), body, sums)
    if padded:
        return padded_table.crop(sums[0], image_shape)
    return _join(sums, image_shape)


def _rows_of(part, *values):
    """`geometry.batch_rows(value, part)` of each of `values`."""
    return tuple(geometry.batch_rows(value, part) for value in values)


def _zero_sums(padded, shape, size, dtype):
    """The sums before any piece: zeros shaped as `_add_padded`'s or
    `_add_windows`' results for objects of `shape` (Bi, H, W)."""
    count, height, width = shape
    if padded:
        return (ops.zeros((count, padded_table.length(height, width, size)), dtype),)
    if backends.current().add_runs is not None and runs.available(width, size):
        return runs.zero_window_sums(shape, size, dtype)
    return (ops.zeros((count * height * width,), dtype),)


def _add_padded(contributions, image_index, x_start, y_start, shape, sums=None):
    """Add (b, c, P, P) windows into the padded table of objects of `shape`
    (Bi, H, W), (sums,) from an earlier call or None for zeros: each
    window row a whole run (see `padded_table.starts`); what falls in the
    zeros around the objects is cropped off."""
    _, height, width = shape
    size = ops.shape(contributions)[-1]
    starts = padded_table.starts(image_index, x_start, y_start, size, height, width)
    if sums is None:
        sums = _zero_sums(True, shape, size, contributions.dtype)
    return (backends.current().add_runs(sums[0], starts, contributions),)


def _add_windows(contributions, image_index, x_start, y_start, shape, sums=None):
    """Add (b, c, P, P) windows into `sums` (from an earlier call, or None
    for zeros), window (b, k) at rows y_start[b, k]... and columns
    x_start[b, k]... of image image_index[b] of `shape` (Bi, H, W); entries
    outside the images are zero and dropped. The sums are (flat, ends) of
    `runs.add_window_runs`, or (total,) (Bi*H*W,) for the element scatter;
    `_join` makes them the object."""
    size = ops.shape(contributions)[-1]
    count, height, width = shape
    if backends.current().add_runs is not None and runs.available(width, size):
        return runs.add_window_runs(
            contributions, image_index, x_start, y_start, shape, sums
        )
    rows, row_inside = geometry.axis_indices(y_start, size, height, "int32")
    cols, col_inside = geometry.axis_indices(x_start, size, width, "int32")
    positions = geometry.flat_positions(image_index, rows, cols, height, width)
    positions = ops.transpose(positions, (0, 3, 1, 2))
    # Entries at clamped indices are dropped (set to zero, NaN included),
    # as the run scatter drops them.
    inside = ops.transpose(row_inside[:, :, None, :] * col_inside[:, None, :, :], (0, 3, 1, 2))
    contributions = backends.current().where(
        inside > 0, contributions, ops.zeros_like(contributions)
    )
    total = backends.current().add_at(
        ops.reshape(contributions, (-1,)),
        ops.reshape(positions, (-1,)),
        count * height * width,
    )
    return (total,) if sums is None else (sums[0] + total,)


def _join(sums, shape):
    """The (Bi, H, W) object from `_add_windows`' sums."""
    if len(sums) == 2:
        return runs.join_window_runs(*sums, shape)
    return ops.reshape(sums[0], shape)
