"""How the kernels read each patch's (N+1)x(N+1) window: which reader,
what it reads, and the windows themselves.

- "padded": runs of `padded_table` (the object small beside the
  patches), no masks;
- "fused": runs of the object itself (`runs.take_fused`), masked, the one
  row per window that XLA would move left out and added to the blend
  apart (`moved_share`);
- "gathered": the windows gathered into a buffer (`runs.gather_windows`,
  or the element gather where there is no run gather or the object is
  narrower than a window).

The first two are fused by XLA into the blend, with no buffer of
windows. Shapes: `images` (Bi, H, W); `image_index` (b,) int32; windows
(b, N+1, N+1, c), groups last; weights (b, N, c).
"""

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.ops import geometry
from ptycho_layers.ops import padded_table
from ptycho_layers.ops import runs

__all__ = ["reader", "window_reads", "read_windows", "moved_share", "gathered_windows"]


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


def reader(images, batch, groups, patch_size):
    """How extraction reads its windows, on this backend, for `images`
    (Bi, H, W) and (B, c) offsets of patches of `patch_size`:
    "padded", from `padded_table` (the object small beside the patches);
    "fused", runs of the object itself fused into the blend, the moved
    rows added apart (`moved_share`); or "gathered", into a buffer of
    windows (`gathered_windows`), where there is no run gather or the
    object is narrower than a window."""
    _, _, width = ops.shape(images)
    if padded_table.fits(ops.shape(images), batch, groups, patch_size):
        return "padded"
    if runs.available(width, patch_size + 1):
        return "fused"
    return "gathered"


def window_reads(images, image_index, geometry_, patch_size, how):
    """What `read_windows` reads for `how` (see `reader`), to be
    materialised behind a fusion boundary: the padded table (Bi, L) and
    the runs' starts (b, c, N+1, 2); `runs.fused_reads`, O(K N); or the
    windows themselves, gathered."""
    _, height, width = ops.shape(images)
    size = patch_size + 1
    x_start, y_start = geometry_["x_start"], geometry_["y_start"]
    if how == "padded":
        return (
            padded_table.table(images, size),
            padded_table.starts(image_index, x_start, y_start, size, height, width),
        )
    if how == "fused":
        return runs.fused_reads(images, image_index, x_start, y_start, size)
    return (gathered_windows(images, image_index, geometry_, patch_size),)


def read_windows(images, reads, how, patch_size):
    """The neighbourhoods (b, N+1, N+1, c), groups last, from
    `window_reads`' `reads`, outside the boundary, so that XLA fuses the
    gather and the transpose into what reads them (for "fused", the moved
    rows are zeros: see `moved_share`)."""
    size = patch_size + 1
    if how == "padded":
        window = backends.current().take_runs(*reads, size)
    elif how == "fused":
        window = runs.take_fused(images, *reads[:3], size)
    else:
        window = reads[0]
        if not runs.available(ops.shape(images)[2], size):
            return window  # the element gather's, groups last already
    return ops.transpose(window, (0, 2, 3, 1))


def moved_share(moved, edge_rows, weights, dtype):
    """The share of the blend of the window rows `runs.take_fused` leaves
    at zero, one per window at most: row m, (b, c) `moved`, -1 for none,
    holding `edge_rows` (b, c, N+1). It lands on patch rows m-1 (weight
    row_w1) and m (row_w0), blended along the row like any other.

    Returns (lands, weight, rows): (b, N, c) bool and real, and the blended
    row's real parts, (b, N, c) each."""
    row_w0, row_w1, col_w0, col_w1 = weights
    steps = ops.arange(ops.shape(row_w0)[1], dtype="int32")[None, :, None]
    moved = moved[:, None, :]
    first, second = steps == moved, steps == moved - 1
    zeros = ops.zeros_like(row_w0)
    weight = ops.where(first, row_w0, zeros) + ops.where(second, row_w1, zeros)
    rows = [
        col_w0 * ops.transpose(part[..., :-1], (0, 2, 1))
        + col_w1 * ops.transpose(part[..., 1:], (0, 2, 1))
        for part in geometry.real_parts(edge_rows, dtype, row_w0.dtype)
    ]
    return ops.logical_or(first, second), weight, rows
