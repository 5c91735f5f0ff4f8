"""How the kernels read each patch's S x S window: which reader
(`reader`), what it reads, and the windows themselves. "padded" and
"fused" are fused by XLA into the kernel's blend, with no buffer.

Shapes: `images` (Bi, H, W); `image_index` (b,) int32; windows
(b, S, S, c), groups last.
"""

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.xla import geometry
from ptycho_layers.xla import padded_table
from ptycho_layers.xla import runs

__all__ = ["reader", "window_reads", "read_windows", "gathered_windows"]


def gathered_windows(images, image_index, geometry_, size):
    """The windows of `images` (Bi, H, W) for `geometry_`
    (`geometry.window_geometry`) and side `size`, in the layout they come
    in: groups first, (b, c, S, S), from the run gather where the backend
    has one (`runs.available`; transposed where the blend reads them, so
    the transpose fuses into it); else groups last, (b, S, S, c)."""
    _, height, width = ops.shape(images)
    if runs.available(width, size):
        return runs.gather_windows(
            images, image_index, geometry_["x_start"], geometry_["y_start"], size
        )
    positions = geometry.flat_positions(
        image_index, geometry_["rows"], geometry_["cols"], height, width
    )
    # Entries read at clamped indices are set to zero, as the run gather's
    # are: a zero weight alone would leave 0 * NaN where the object holds
    # a NaN at its edge.
    found = backends.current().take(ops.reshape(images, (-1,)), positions)
    inside = geometry_["row_inside"][:, :, None, :] * geometry_["col_inside"][:, None, :, :]
    return backends.current().where(inside > 0, found, ops.zeros_like(found))


def reader(images, batch, groups, patch_size, kernel):
    """How extraction reads its windows, on this backend, for `images`
    (Bi, H, W) and (B, c) offsets of patches of `patch_size` and `kernel`:
    "padded", from `padded_table` (the object small beside the patches);
    "fused", runs of the object itself fused into the blend, the moved
    rows added apart (the kernel's `row_share`); or "gathered", into a
    buffer of windows (`gathered_windows`), where there is no run gather,
    the object is narrower than a window, or the kernel reads windows
    whole (its `FUSED_READS` false)."""
    _, _, width = ops.shape(images)
    size = kernel.window_size(patch_size)
    if padded_table.fits(ops.shape(images), batch, groups, patch_size, size):
        return "padded"
    if kernel.FUSED_READS and runs.available(width, size):
        return "fused"
    return "gathered"


def window_reads(images, image_index, geometry_, size, how, table=None):
    """What `read_windows` reads for `how` (see `reader`), to be
    materialised behind a fusion boundary: the padded table (Bi, L) and
    the runs' starts (b, c, S, 2); `runs.fused_reads`, O(K S); or the
    windows themselves, gathered. `table`: the padded table, if made
    already (once for all the pieces of a loop)."""
    _, height, width = ops.shape(images)
    x_start, y_start = geometry_["x_start"], geometry_["y_start"]
    if how == "padded":
        return (
            padded_table.table(images, size) if table is None else table,
            padded_table.starts(image_index, x_start, y_start, size, height, width),
        )
    if how == "fused":
        return runs.fused_reads(images, image_index, x_start, y_start, size)
    return (gathered_windows(images, image_index, geometry_, size),)


def read_windows(images, reads, how, size):
    """The windows (b, S, S, c), groups last, from `window_reads`' `reads`,
    outside the boundary, so that XLA fuses the gather and the transpose
    into what reads them (for "fused", the moved rows are zeros: the
    kernel's `row_share` adds them)."""
    if how == "padded":
        window = backends.current().take_runs(*reads, size)
    elif how == "fused":
        window = runs.take_fused(images, *reads[:3], size)
    else:
        window = reads[0]
        if not runs.available(ops.shape(images)[2], size):
            return window  # the element gather's, groups last already
    return ops.transpose(window, (0, 2, 3, 1))

