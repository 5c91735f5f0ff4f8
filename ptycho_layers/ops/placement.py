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

from keras.src.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.ops import extraction
from ptycho_layers.ops import geometry
from ptycho_layers.ops import padded_table
from ptycho_layers.ops import runs

__all__ = ["place_patches_batched"]


def _pad(x, axis, before, after):
    """`x` with `before` and `after` zeros along `axis` (`keras.ops.pad`
    makes a new Keras operation at each call, which `torch.compile` guards
    on and recompiles for)."""
    parts = []
    for count in (before, after):
        shape = list(ops.shape(x))
        shape[axis] = count
        parts.append([ops.zeros(shape, x.dtype)] if count else [])
    return ops.concatenate(parts[0] + [x] + parts[1], axis=axis)


def _spread_inputs(patches, part, x, y, finite, height, width, predicate):
    """What the spread of a piece of patches reads, materialised.

    Args:
        patches: (B, N, N, c), of which rows `part` (a slice) are the
            piece's: cut inside the boundary, or XLA would copy every
            piece out of the patches up front; x, y: (b, c) sanitized
            offsets of the piece; finite: (b, c) bool; predicate: a scalar
            bool computed from the data.

    Returns:
        (x_start, y_start, weights, pairs): (b, c) int32 window starts; the
        weights [row_w0, row_w1, col_w0, col_w1], (b, c, N+1, 1, 1) for
        rows and (b, c, 1, N+1, 1) for columns, zero-padded so that entry n
        is the weight of window entry n as the first neighbour of patch
        entry n (w0) or the second of patch entry n-1 (w1); and the
        patches' real parts side by side, (b, c, N+2, N+2, q) (q = 2, real
        and imaginary, for complex values; 1 for real ones), groups first,
        zero-padded by one all round, zero for non-finite offsets.

    Behind a fusion boundary: fused into the loops over window entries, XLA
    would recompute the weights for every entry; and the predicate (from
    the previous piece's sum) keeps one piece's inputs alive at a time.
    (The transposes also keep XLA from turning the boundary into a select,
    which it does when a branch holds only elementwise operations.)

    The real and imaginary parts are padded as one array, each pair of
    values side by side, not as two arrays: XLA's padding loop then runs
    at about the speed of a copy of the patches (JAX CPU, 1024 patches of
    64x64, profiled: 0.9 ms a call against 1.76 ms for two arrays), and
    the default case's placement takes 3.2 ms instead of 4.3 (TensorFlow,
    `jit_compile`: 4.4 instead of 5.9; same process, interleaved calls).
    Padding by concatenation, not `keras.ops.pad`: that took 4.5 ms.
    With no padded copy at all (each window's interior spread straight
    from the complex patches, its edge rows and columns added apart) it
    was no faster: 4.0 ms for the interiors alone, 5.2 with the edges.
    """
    coord = standardize_dtype(x.dtype)
    dtype = standardize_dtype(patches.dtype)
    patch_size = ops.shape(patches)[1]

    def compute():
        where = geometry.window_geometry(
            x, y, height, width, patch_size, coord, finite
        )
        # (b, c, N+1) each, then a row axis (rows) or a column axis.
        weights = [
            _pad(ops.transpose(where[k], (0, 2, 1)), -1, before, after)
            for k, before, after in (
                ("row_w0", 0, 1), ("row_w1", 1, 0), ("col_w0", 0, 1), ("col_w1", 1, 0)
            )
        ]
        weights = [w[..., None] for w in weights[:2]] + [w[..., None, :] for w in weights[2:]]
        # Zero weights alone would leave 0 * NaN = NaN.
        piece = patches[part]
        values = backends.current().where(
            finite[:, None, None, :], piece, ops.zeros_like(piece)
        )
        values = ops.transpose(values, (0, 3, 1, 2))
        pairs = ops.stack(geometry.real_parts(values, dtype, coord), axis=-1)
        pairs = _pad(_pad(pairs, -3, 1, 1), -2, 1, 1)
        return (where["x_start"], where["y_start"], *weights, pairs)

    x_start, y_start, *rest = backends.current().fusion_boundary(compute, predicate)
    return x_start, y_start, [w[..., None] for w in rest[:4]], rest[4]


def _spread(padded, row_w0, row_w1, col_w0, col_w1):
    """The adjoint of the bilinear blend, on real values, groups first.

    padded: (b, c, N+2, N+2, q) real parts padded by one zero all round;
    weights as `_spread_inputs` gives them. Returns (b, c, N+1, N+1, q):
    what each window entry receives, summed over the patch entries that
    read it. Window entry (p, q) is read by patch entries (p or p-1, q or
    q-1): with the values and the weights padded by zeros, one elementwise
    expression (one loop under XLA).
    """
    size = ops.shape(padded)[-2] - 1

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
    batch, patch_size, _, groups = ops.shape(patches)
    x, y, finite = geometry.sanitize_offsets(
        offsets, height, width, patch_size, coord
    )
    image_index = geometry.image_indices(batch, num_images)
    kernel = backends.current().padded_placement
    if kernel is not None:  # the backend's own (PyTorch)
        return kernel(patches, image_index, x, y, finite, image_shape)
    predicate = ops.all(finite)
    sums = None
    # Into the padded table where it is small (`padded_table.fits`): whole
    # runs, nothing masked, then the object cropped out of it.
    padded = padded_table.fits(image_shape, batch, groups, patch_size)
    # In pieces, each added into the sums in place under XLA: a piece's
    # inputs and spread windows (real, imaginary, their complex sum) take
    # about 2x the piece's patches. Into the object itself, pieces of 0.3
    # of the batch keep the working memory at 0.65x the patches (in one
    # piece: 2.14x), and are the fastest measured (default case, JAX CPU:
    # 10.7 ms; 0.15: 11.3 ms with 0.35x; 0.75: 32 ms). Into the padded
    # table smaller pieces are faster, their windows staying in cache
    # (TensorFlow: 0.1, 5.0 ms; 0.3, 6.6 ms; one piece, 6.6 ms).
    share = 0.1 if padded else 0.3
    for start, stop in extraction.batch_pieces(batch, groups, patch_size, share=share):
        part = slice(start, stop)
        x_start, y_start, weights, pairs = _spread_inputs(
            patches, part, x[part], y[part], finite[part], height, width, predicate
        )
        spread = _spread(pairs, *weights)
        if dtype in geometry.COMPLEX:
            contributions = backends.current().complex(
                spread[..., 0], spread[..., 1]
            )
        else:
            contributions = ops.cast(spread[..., 0], dtype)
        add = _add_padded if padded else _add_windows
        sums = add(contributions, image_index[part], x_start, y_start, image_shape, sums)
        # The next piece's inputs wait for this piece's sums, so only one
        # piece's windows are alive at a time.
        last = ops.reshape(sums[-1], (-1,))[:1]
        predicate = ops.all(ops.isfinite(ops.real(last)))
    if padded:
        return padded_table.crop(sums[0], image_shape)
    return _join(sums, image_shape)


def _add_padded(contributions, image_index, x_start, y_start, shape, sums=None):
    """Add (b, c, P, P) windows into the padded table of objects of `shape`
    (Bi, H, W), (sums,) from an earlier call or None for zeros: each
    window row a whole run (see `padded_table.starts`); what falls in the
    zeros around the objects is cropped off."""
    count, height, width = shape
    size = ops.shape(contributions)[-1]
    starts = padded_table.starts(image_index, x_start, y_start, size, height, width)
    if sums is None:
        length = padded_table.length(height, width, size)
        sums = (ops.zeros((count, length), contributions.dtype),)
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
        count * height * width,
    )
    return (total,) if sums is None else (sums[0] + total,)


def _join(sums, shape):
    """The (Bi, H, W) object from `_add_windows`' sums."""
    if len(sums) == 2:
        return runs.join_window_runs(*sums, shape)
    return ops.reshape(sums[0], shape)
