"""Extraction, vectorized: every patch's neighbourhood gathered at once and
blended with separable bilinear weights.

O(K*N^2) work and memory for K patches, whatever the object's size. The
patches of a group stay on the last axis throughout, so the blend writes
the output layout directly. On the XLA backends the windows are read so
that XLA fuses the gather into the blend, with no buffer of windows
(`windows.reader`: from a padded copy of a small object, or from the
object itself); otherwise, into a buffer, a large batch is done in a few
pieces so that the gathered neighbourhoods never take more memory than 3/4
of the output. Its gradient with respect to the object is placement
(`ops.placement`), with respect to the offsets `ops.offsets_gradient`.

Shapes: `images` (Bi, H, W), Bi being 1 (one object shared by every row of
offsets) or B; `offsets` (B, c, 2) [x, y]; the result (B, N, N, c).
"""

from keras.src.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.ops import geometry
from ptycho_layers.ops import windows

__all__ = [
    "extract_patches_batched",
    "batch_pieces",
    "blend_parts",
]


def blend_parts(values, row_w0, row_w1, col_w0, col_w1):
    """The bilinear blend of real windows, groups last.

    Args:
        values: (b, N+1, N+1, c) real, in the weights' dtype, or a list of
            such (say, the real and imaginary parts), blended alike.
        row_w0, row_w1, col_w0, col_w1: (b, N, c) (see
            `geometry.window_geometry`).

    Returns:
        (b, N, N, c), or a list of them. With the groups last the windows'
        rows are contiguous runs of (N+1)*c values and the weights
        broadcast along them, so the loops vectorise.
    """
    col_w0 = col_w0[:, None]
    col_w1 = col_w1[:, None]
    row_w0 = row_w0[:, :, None]
    row_w1 = row_w1[:, :, None]

    def blend(part):
        across = col_w0 * part[:, :, :-1] + col_w1 * part[:, :, 1:]
        return row_w0 * across[:, :-1] + row_w1 * across[:, 1:]

    if isinstance(values, list):
        return [blend(part) for part in values]
    return blend(values)


def _blend(window, weights, dtype, moved=None):
    """Windows (b, N+1, N+1, c) in the images' `dtype` -> patches
    (b, N, N, c) in it. Complex windows are blended as their real and
    imaginary parts: real weights times complex values would cost a
    complex product each. `moved`: None, or the moved rows' share
    (`windows.moved_share`), added where it lands."""
    parts = blend_parts(geometry.real_parts(window, dtype, weights[0].dtype), *weights)
    if moved is not None:
        lands, weight, rows = moved
        lands, weight = lands[:, :, None, :], weight[:, :, None, :]
        parts = [
            part + backends.current().where(lands, weight * row[:, None], ops.zeros_like(part))
            for part, row in zip(parts, rows)
        ]
    if dtype in geometry.COMPLEX:
        return backends.current().complex(*parts)
    return ops.cast(parts[0], dtype)


def batch_pieces(batch, groups, patch_size, share=0.75):
    """Split the batch into pieces whose windows stay small.

    The (N+1)^2 windows of all patches together are larger than the output
    itself; gathering and blending part of the batch at a time keeps a
    piece's windows under `share` of all the patches. With 3/4, the
    default, extraction's working memory beyond the output stays under 3/4
    of it (measured: 0.77x from XLA's buffer assignment, against 1.03x in
    one piece, for the default case). Only for a static batch on a backend
    that writes each piece into the output in place (XLA); elsewhere every
    intermediate is materialised anyway.

    Returns:
        [(start, stop), ...] static row ranges covering the batch, or
        [(0, None)] for the whole batch in one piece.
    """
    if (
        not backends.current().SPLITS_BATCH
        or not isinstance(batch, int)
        or not isinstance(groups, int)
        or batch < 2
    ):
        return [(0, None)]
    window_to_output = (patch_size + 1) ** 2 / patch_size**2
    # Pieces as large as the bound allows: the first is blended straight
    # into the output with its zero padding (a loop XLA runs on every
    # core), later ones are written in place by a single-threaded update.
    step = max(1, int(batch * share / window_to_output))
    if step >= batch:
        return [(0, None)]
    return [(start, min(start + step, batch)) for start in range(0, batch, step)]


def _windows_and_weights(images, image_index, x, y, finite, patch_size, predicate, reader):
    """Each patch's window and blend weights.

    Args:
        images: (Bi, H, W); image_index: (b,) int32.
        x, y: (b, c) sanitized offsets in the coordinate dtype; finite:
            (b, c) bool.
        predicate: a scalar bool computed from the data.
        reader: how the windows are read (see `windows.reader`).

    Returns:
        (window, weights, moved): the (b, N+1, N+1, c) neighbourhoods, the
        (b, N, c) weights (row_w0, row_w1, col_w0, col_w1), and None or
        the moved rows' share of the blend (`windows.moved_share`).

    The weights, and where the windows lie, are computed behind a fusion
    boundary: fused into the blend, XLA would recompute them from the
    offsets for every output value. The gathered windows are materialised
    there too. The padded table's and the fused runs are not: XLA fuses
    their gather into the blend, with no buffer of windows (default case:
    1.4-1.7 ms, against 2.5-3.2 ms for gathered windows; object 2048:
    TensorFlow 3.0 against 3.9 ms, JAX 2.2 against 3.3).
    """
    _, height, width = ops.shape(images)
    coord = standardize_dtype(x.dtype)
    dtype = standardize_dtype(images.dtype)

    def compute():
        where = geometry.window_geometry(
            x, y, height, width, patch_size, coord, finite
        )
        weights = (where["row_w0"], where["row_w1"], where["col_w0"], where["col_w1"])
        reads = windows.window_reads(images, image_index, where, patch_size, reader)
        if reader == "fused":
            return weights, reads[:3], windows.moved_share(*reads[3:], weights, dtype)
        return weights, reads, None

    weights, reads, moved = backends.current().fusion_boundary(compute, predicate)
    return windows.read_windows(images, reads, reader, patch_size), weights, moved


def extract_patches_batched(images, offsets, patch_size):
    """Extract all patches at once by a windowed gather and a bilinear blend.

    Differentiable by autodiff on JAX and PyTorch. On TensorFlow it is
    meant to run XLA-compiled with its written-out gradients attached
    (`backends.tensorflow.differentiable`): TensorFlow cannot differentiate
    its conditionals under XLA.

    Args:
        images: (Bi, H, W), real or complex; Bi is 1 or B.
        offsets: (B, c, 2), [x, y] in object pixels.
        patch_size: N, a positive Python int.

    Returns:
        (B, N, N, c) in the images' dtype (for float16/bfloat16 images the
        blend runs in float32 and the result is cast back); NaN patches
        where an offset is not finite.
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    dtype = standardize_dtype(images.dtype)
    coord = geometry.coordinate_dtype(dtype)
    num_images, height, width = ops.shape(images)
    batch, groups = ops.shape(offsets)[0], ops.shape(offsets)[1]

    x, y, finite = geometry.sanitize_offsets(offsets, height, width, patch_size, coord)
    image_index = geometry.image_indices(batch, num_images)
    kernel = backends.current().padded_patches
    if kernel is not None:  # the backend's own (PyTorch)
        return kernel(images, image_index, x, y, finite, patch_size)
    # Any data-dependent predicate serves the fusion boundaries.
    predicate = ops.all(finite)

    output = None
    how = windows.reader(images, batch, groups, patch_size)
    # No buffer of windows but the gathered one: otherwise one piece.
    pieces = batch_pieces(batch, groups, patch_size) if how == "gathered" else [(0, None)]
    for start, stop in pieces:
        part = slice(start, stop)

        def piece(part=part):
            window, weights, moved = _windows_and_weights(
                images, image_index[part], x[part], y[part], finite[part],
                patch_size, predicate, how,
            )
            return geometry.nan_where_not_finite(
                _blend(window, weights, dtype, moved), finite[part]
            )

        if stop is None:
            if how != "fused":
                return piece()
            # Read from the object's own runs, the patches are written out
            # behind a fusion boundary: XLA would fuse what the caller does
            # with them into this masked loop, which then runs
            # unvectorized (object 2048 under jax.jit: the product with a
            # probe 18-29 ms fused, 3.4 apart; a weighted sum 24-34 ms,
            # 4.3). From the padded table, cheap work fuses well (the
            # product: 1.5 ms fused, 2.2 apart), so it is left to XLA.
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
