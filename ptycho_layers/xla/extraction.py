"""Extraction on XLA: every patch's window gathered at once and blended by
the kernel, O(K*N^2) for K patches whatever the object's size, a group's
patches on the last axis throughout (the blend writes the output layout).
Windows read from a padded table or the object's runs are fused into the
blend (`windows.reader`); gathered into a buffer, a large batch goes in
pieces so that the windows never take more than 3/4 of the output.

Shapes: `images` (Bi, H, W), Bi being 1 (one object shared by every row of
offsets) or B; `x`, `y` (B, c) sanitized offsets; the result (B, N, N, c).
"""

from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.operators import COMPLEX
from ptycho_layers.operators import coordinate_dtype
from ptycho_layers.operators import nan_where_not_finite
from ptycho_layers.xla import geometry
from ptycho_layers.xla import padded_table
from ptycho_layers.xla import windows

__all__ = ["extract", "batch_pieces"]


def _blend(kernel, window, weights, dtype, moved=None):
    """Windows (b, S, S, c) in the images' `dtype` -> patches (b, N, N, c)
    in it. Complex windows are blended as their real and imaginary parts:
    real weights times complex values would cost a complex product each.
    `moved`: None, or the moved rows' share (the kernel's `row_share`),
    added where it lands."""
    coord = coordinate_dtype(dtype)
    parts = kernel.blend(geometry.real_parts(window, dtype, coord), weights)
    if moved is not None:
        parts = kernel.add_row_share(parts, moved)
    if dtype in COMPLEX:
        return backends.current().complex(*parts)
    return ops.cast(parts[0], dtype)


def batch_pieces(batch, groups, patch_size, size, share=0.75):
    """[(start, stop), ...] static row ranges covering the batch, or
    [(0, None)] for one piece: pieces whose windows of side `size` stay
    under `share` of all the patches (B, N, N, c), and so the working
    memory beyond the output under about `share` of it. Only for a static
    batch on a backend that writes each piece into the output in place
    (XLA); elsewhere every intermediate is materialised anyway."""
    if (
        not backends.current().SPLITS_BATCH
        or not isinstance(batch, int)
        or not isinstance(groups, int)
        or batch < 2
    ):
        return [(0, None)]
    window_to_output = size**2 / patch_size**2
    # Pieces as large as the bound allows: the first is blended straight
    # into the output with its zero padding (a loop XLA runs on every
    # core), later ones are written in place by a single-threaded update.
    step = max(1, int(batch * share / window_to_output))
    if step >= batch:
        return [(0, None)]
    return [(start, min(start + step, batch)) for start in range(0, batch, step)]


def _windows_and_weights(
    kernel, images, image_index, x, y, finite, patch_size, predicate, reader, table=None
):
    """(window, weights, moved): each patch's (b, S, S, c) window of `images`
    (Bi, H, W), the kernel's weights, and None or the moved rows' share of
    the blend, for sanitized `x`, `y` (b, c), `finite` (b, c) bool,
    `image_index` (b,) int32, a data-dependent scalar bool `predicate` and
    `reader` (`windows.reader`). Where the windows lie and the weights are
    computed behind a fusion boundary (fused into the blend, XLA would
    recompute them for every output value), the gathered windows too; the
    padded table's and fused runs' gathers XLA fuses into the blend.
    `table`: `window_reads`'."""
    _, height, width = ops.shape(images)
    coord = standardize_dtype(x.dtype)
    dtype = standardize_dtype(images.dtype)
    size = kernel.window_size(patch_size)

    def compute():
        where = geometry.window_geometry(
            x, y, height, width, patch_size, kernel, coord, finite
        )
        weights = where["weights"]
        reads = windows.window_reads(images, image_index, where, size, reader, table)
        if reader == "fused":
            moved, edge_rows = reads[3:]
            share = kernel.row_share(
                moved, geometry.real_parts(edge_rows, dtype, coord), weights
            )
            return weights, reads[:3], share
        return weights, reads, None

    weights, reads, moved = backends.current().fusion_boundary(compute, predicate)
    return windows.read_windows(images, reads, reader, size), weights, moved


def extract(images, image_index, x, y, finite, patch_size, kernel):
    """Patches (B, N, N, c) in the images' dtype of `images` (Bi, H, W),
    real or complex, at sanitized `x`, `y` (B, c), NaN where not `finite`
    (B, c); `image_index` (B,) int32. On TensorFlow, XLA-compiled with its
    written-out gradients (`backends.tensorflow.differentiable`):
    TensorFlow cannot differentiate its conditionals under XLA."""
    dtype = standardize_dtype(images.dtype)
    batch, groups = ops.shape(x)
    size = kernel.window_size(patch_size)
    # Any data-dependent predicate serves the fusion boundaries.
    predicate = ops.all(finite)

    output = None
    how = windows.reader(images, batch, groups, patch_size, kernel)
    step = _loop_step(kernel, batch, groups, patch_size, size)
    if step is not None:
        return _extract_in_loop(
            kernel, images, image_index, x, y, finite, patch_size, how, step
        )
    # No buffer of windows but the gathered one: otherwise one piece.
    pieces = batch_pieces(batch, groups, patch_size, size) if how == "gathered" else [(0, None)]
    for start, stop in pieces:
        part = slice(start, stop)

        def piece(part=part):
            window, weights, moved = _windows_and_weights(
                kernel, images, image_index[part], x[part], y[part], finite[part],
                patch_size, predicate, how,
            )
            return nan_where_not_finite(
                _blend(kernel, window, weights, dtype, moved), finite[part]
            )

        if stop is None:
            if how != "fused":
                return piece()
            # Read from the object's own runs, the patches are handed out of a
            # fusion boundary: XLA would fuse what the caller does with them
            # into this masked loop, which then runs unvectorized. From the
            # padded table, cheap work fuses well, so it is left to XLA.
            return backends.current().fusion_boundary(piece, predicate)
        patches = piece()
        if output is None:
            # The first piece, blended straight into the zero-padded output.
            output = ops.pad(
                patches, [[0, batch - stop], [0, 0], [0, 0], [0, 0]]
            )
        else:
            # In place under XLA.
            output = ops.slice_update(output, (start, 0, 0, 0), patches)
        # The next piece's gather waits for this piece's result, so only one
        # piece's windows are alive at a time.
        predicate = ops.all(ops.isfinite(ops.real(output[stop - 1, 0, 0, :1])))
    return output


def _loop_step(kernel, batch, groups, patch_size, size):
    """The rows of a piece for a kernel that extracts in a loop of pieces
    (its `PIECE_SHARE` not None), or None for the whole batch at once (or
    in `batch_pieces`): pieces whose windows take about `PIECE_SHARE` of
    the output, the batch static."""
    share = kernel.PIECE_SHARE
    if share is None or not backends.current().SPLITS_BATCH:
        return None
    if not isinstance(batch, int) or not isinstance(groups, int):
        return None
    step = max(1, int(batch * share * patch_size**2 / size**2))
    return step if step < batch else None


def _extract_in_loop(kernel, images, image_index, x, y, finite, patch_size, how, step):
    """`extract` in a loop of pieces of `step` rows, each written into the
    output in place. The last piece is moved back to end with the batch:
    the rows it shares with the one before are written twice, the same.

    For a kernel whose every output depends on the whole window (the
    Fourier shift): the whole batch's windows and spectra are several
    times the output, and the FFTs ran at about two thirds of the speed
    they have on a piece whose buffers stay in cache. One loop, its body
    compiled once (pieces written out compile one by one); the padded
    table is made once, before it."""
    dtype = standardize_dtype(images.dtype)
    batch, groups = ops.shape(x)
    size = kernel.window_size(patch_size)
    table = padded_table.table(images, size) if how == "padded" else None

    def body(index, output):
        part = (ops.minimum(index * step, batch - step), step)
        piece_index, piece_x, piece_y, piece_finite = (
            geometry.batch_rows(values, part) for values in (image_index, x, y, finite)
        )
        # Any data-dependent predicate serves the fusion boundary (the
        # loop runs its pieces one after another).
        predicate = ops.all(ops.isfinite(ops.real(ops.reshape(output, (-1,))[:1])))
        window, weights, moved = _windows_and_weights(
            kernel, images, piece_index, piece_x, piece_y, piece_finite,
            patch_size, predicate, how, table,
        )
        patches = nan_where_not_finite(
            _blend(kernel, window, weights, dtype, moved), piece_finite
        )
        return ops.slice_update(output, (part[0], 0, 0, 0), patches)

    output = ops.zeros((batch, patch_size, patch_size, groups), images.dtype)
    return ops.fori_loop(0, -(-batch // step), body, output)
