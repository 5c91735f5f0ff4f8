"""Extraction, vectorized: every patch's neighbourhood gathered at once and
blended with separable bilinear weights.

O(K*N^2) work and memory for K patches, whatever the object's size. The
patches of a group stay on the last axis throughout, so the blend writes
the output layout directly. On the XLA backends, where the object is
small beside the output, the windows are read from a padded copy of it
and XLA fuses the gather into the blend, with no window buffer at all
(`padded_table.fits`); otherwise a large batch is done in a few pieces so that
the gathered neighbourhoods never take more memory than 3/4 of the
output. Its gradient with respect to the object is placement
(`ops.placement`), with respect to the offsets `ops.offsets_gradient`.

Shapes: `images` (Bi, H, W), Bi being 1 (one object shared by every row of
offsets) or B; `offsets` (B, c, 2) [x, y]; the result (B, N, N, c).
"""

from keras.src.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.ops import geometry
from ptycho_layers.ops import padded_table
from ptycho_layers.ops import runs

__all__ = [
    "extract_patches_batched",
    "batch_pieces",
    "gathered_windows",
    "window_reads",
    "read_windows",
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


def _blend(window, row_w0, row_w1, col_w0, col_w1, dtype):
    """Windows (b, N+1, N+1, c) in the images' `dtype` -> patches
    (b, N, N, c) in it. Complex windows are blended as their real and
    imaginary parts: real weights times complex values would cost a
    complex product each."""
    weights = (row_w0, row_w1, col_w0, col_w1)
    if dtype in geometry.COMPLEX:
        parts = blend_parts([ops.real(window), ops.imag(window)], *weights)
        return backends.current().complex(*parts)
    # float16/bfloat16 images blend in the float32 coordinate dtype.
    return ops.cast(blend_parts(ops.cast(window, row_w0.dtype), *weights), dtype)


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


def gathered_windows(images, image_index, geometry_, patch_size):
    """The neighbourhood gather in the layout it comes in.

    Args:
        images: (Bi, H, W); image_index: (b,) int32; geometry_: from
            `geometry.window_geometry`.

    Returns:
        Groups first, (b, c, N+1, N+1), from the run gather where the
        backend has one (`runs.available`; best transposed where the blend
        reads it, so the transpose fuses into the blend); else groups last,
        (b, N+1, N+1, c), from the element gather every backend has.
    """
    _, height, width = ops.shape(images)
    if runs.available(width, patch_size + 1):
        return runs.gather_windows(
            images, image_index, geometry_["x_start"], geometry_["y_start"],
            patch_size + 1,
        )
    positions = geometry.flat_positions(
        image_index, geometry_["rows"], geometry_["cols"], height, width
    )
    # Entries read at clamped indices get zero weight in the blend.
    return backends.current().take(ops.reshape(images, (-1,)), positions)


def window_reads(images, image_index, geometry_, patch_size, padded):
    """What `read_windows` reads, to be materialised behind a fusion
    boundary: from the padded table (`padded`, see `padded_table.fits`),
    the table (Bi, L) and the runs' starts (b, c, N+1, 2), O(H W + K N);
    otherwise the windows themselves, gathered (`gathered_windows`)."""
    _, height, width = ops.shape(images)
    size = patch_size + 1
    if padded:
        return (
            padded_table.table(images, size),
            padded_table.starts(
                image_index, geometry_["x_start"], geometry_["y_start"],
                size, height, width,
            ),
        )
    return (gathered_windows(images, image_index, geometry_, patch_size),)


def read_windows(reads, width, patch_size):
    """The neighbourhoods (b, N+1, N+1, c), groups last, from
    `window_reads`' `reads`, outside the boundary: from the padded table
    the gather is plain and XLA fuses it, and the transpose, into what
    reads the windows."""
    size = patch_size + 1
    if len(reads) == 2:
        window = backends.current().take_runs(*reads, size)
    else:
        window = reads[0]
    if len(reads) == 2 or runs.available(width, size):
        window = ops.transpose(window, (0, 2, 3, 1))
    return window


def _windows_and_weights(images, image_index, x, y, finite, patch_size, predicate, padded=False):
    """Each patch's window and blend weights.

    Args:
        images: (Bi, H, W); image_index: (b,) int32.
        x, y: (b, c) sanitized offsets in the coordinate dtype; finite:
            (b, c) bool.
        predicate: a scalar bool computed from the data.
        padded: gather from `padded_table.table` (see `padded_table.fits`).

    Returns:
        (window, row_w0, row_w1, col_w0, col_w1): the (b, N+1, N+1, c)
        neighbourhoods and the (b, N, c) weights.

    The weights, and where the windows lie, are computed behind a fusion
    boundary: fused into the blend, XLA would recompute them from the
    offsets for every output value. From the images themselves the
    windows are gathered there too, materialised: fused, XLA would redo
    the masked gather for each of the four neighbours that read a window
    entry. From the padded table they are not: the plain gather fuses
    into the blend (and the transpose with it).
    """
    _, height, width = ops.shape(images)
    coord = standardize_dtype(x.dtype)

    def compute():
        where = geometry.window_geometry(
            x, y, height, width, patch_size, coord, finite
        )
        weights = (where["row_w0"], where["row_w1"], where["col_w0"], where["col_w1"])
        return weights + window_reads(images, image_index, where, patch_size, padded)

    row_w0, row_w1, col_w0, col_w1, *reads = backends.current().fusion_boundary(
        compute, predicate
    )
    window = read_windows(reads, width, patch_size)
    return window, row_w0, row_w1, col_w0, col_w1


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
    padded = padded_table.fits(ops.shape(images), batch, groups, patch_size)
    # No window buffer from the padded table: the batch in one piece.
    pieces = [(0, None)] if padded else batch_pieces(batch, groups, patch_size)
    for start, stop in pieces:
        part = slice(start, stop)
        window, *weights = _windows_and_weights(
            images, image_index[part], x[part], y[part], finite[part],
            patch_size, predicate, padded,
        )
        patches = geometry.nan_where_not_finite(
            _blend(window, *weights, dtype), finite[part]
        )
        if stop is None:
            return patches
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
