"""PyTorch's operators on the CPU, in pieces (see `torch.windows`): the
batch a piece of about `PIECE_BYTES` of windows at a time, every result
written in place. Extraction here, placement in `torch.placement`, with
what they share.

A fresh buffer as large as the output costs as much in page faults as the
arithmetic: a piece's buffers are allocated once per call and reused, and
outputs come from `torch.buffers`. Windows not wholly inside their object
are handled one by one, clipped, unless so many are that padding the
objects by S costs less (`EDGE_WINDOW_PIXELS`). `torch.compile` and
`torch.export` call extraction as `ptycho_layers::patches_in_pieces`.

Shapes: objects (Bi, H, W, q) in pairs (q = 2 for complex values, 1 for
real ones); image, row, col (b, c) int64 window corners in the objects
padded by S (`torch.windows._corners`); fx, fy (b, c, 1, 1, 1), the
kernel's fractions; values and patches (b, c, N, N, q).
"""

import torch

from ptycho_layers.torch import buffers as torch_buffers
from ptycho_layers.torch.kernels import kernel as kernel_for

__all__ = [
    "PIECE_BYTES",
    "EDGE_WINDOW_PIXELS",
    "piece_rows",
    "row_pieces",
    "windows_in_objects",
    "clipped",
    "patches_in_pieces",
    "patches_op",
]

# Windows per piece, in bytes: few enough that a piece's buffers stay in cache.
PIECE_BYTES = 2**21

# Clipping a window not wholly inside its object costs about as much as
# padding this many pixels: with more such windows than the object's (for
# placement, the padded sums') pixels over this, the object is padded.
EDGE_WINDOW_PIXELS = 10_000


def piece_rows(batch, window_bytes, scale=1):
    """Rows of the batch per piece, rows whose windows take `window_bytes`
    each (all of a row's groups together), for pieces of `scale` times
    `PIECE_BYTES` (the kernel's `PIECE_SCALE`)."""
    return max(1, min(batch, scale * PIECE_BYTES // max(window_bytes, 1)))


def row_pieces(step, *tensors):
    """The batch (the tensors' first axis) in pieces of `step` rows: for
    each piece, its first row and each tensor's rows, as views made all at
    once (`split`) rather than sliced piece after piece."""
    return zip(range(0, tensors[0].shape[0], step), *(t.split(step) for t in tensors))


def windows_in_objects(image, row, col, object_shape, size):
    """Where each window lies in the objects of `object_shape` (Bi, H, W, q)
    for corners `image`, `row`, `col` (b, c) int64 in them padded by `size`:
    (starts, inside, edges), starts (b, c) int64 the flat index of each
    window's first pixel where it lies wholly inside its object (inside,
    (b, c) bool), else 0; edges, [b, k, image, top, left] host ints for the
    other windows, in batch order, their first row and column in the
    object (negative or past its end)."""
    _, height, width, _ = object_shape
    top, left = row - size, col - size
    inside = (top >= 0) & (top <= height - size) & (left >= 0) & (left <= width - size)
    starts = torch.where(inside, (image * height + top) * width + left, 0)
    outside = (~inside).nonzero()
    if len(outside) == 0:
        return starts, inside, []
    b, k = outside.unbind(1)
    corners = torch.stack([b, k, image[b, k], top[b, k], left[b, k]], 1)
    return starts, inside, corners.tolist()


def clipped(top, left, size, height, width):
    """For a window at (top, left) of an object (H, W): the slices of the
    object and of the window where they overlap, or None."""
    rows = (max(top, 0), min(top + size, height))
    cols = (max(left, 0), min(left + size, width))
    if rows[0] >= rows[1] or cols[0] >= cols[1]:
        return None
    in_object = (slice(*rows), slice(*cols))
    in_window = (slice(rows[0] - top, rows[1] - top), slice(cols[0] - left, cols[1] - left))
    return in_object, in_window


def _runs(objects, size):
    """(L, size * q): every run of `size` pixels of `objects` (Bi, H, W, q)
    contiguous, by its first pixel, or None if there is none; a window row
    inside an object is one of them, so `index_select` copies whole rows
    (faster than indexing a view of the windows element by element)."""
    q = objects.shape[-1]
    count = objects.numel() // q - size + 1
    if count < 1:
        return None
    return objects.as_strided((count, size * q), (q, 1))


def patches_in_pieces(pairs, image, row, col, fx, fy, patch_size, kernel):
    """`torch.windows.extract`, a piece of the batch at a time: patches
    (b, c, N, N, q) in the coordinate dtype from `pairs` (Bi, H, W, q) at
    corners `image`, `row`, `col` (b, c) int64 in the objects padded by S,
    by the kernel's fractions `fx`, `fy` (b, c, 1, 1, 1), NaN in fy where
    the offset was not finite. Windows wholly inside their object are
    gathered as runs; the others are zeroed and their overlap copied in,
    one by one, unless so many are at the edges of so small an object
    that a padded copy costs less (`EDGE_WINDOW_PIXELS`)."""
    batch, groups = row.shape
    size = kernel.window_size(patch_size)
    objects = pairs.contiguous()
    _, height, width, q = objects.shape
    starts, inside, edges = windows_in_objects(image, row, col, objects.shape, size)
    if len(edges) * EDGE_WINDOW_PIXELS > objects.numel() // q:
        # Many windows at the edges of a small object: all of them read
        # from a padded copy of it instead, in which every window is whole.
        objects = torch_buffers.padded_copy(objects, size)
        starts = (image * objects.shape[1] + row) * objects.shape[2] + col
        inside, edges = torch.ones_like(inside), []
    # Rows of the windows not inside read the first run (and are replaced).
    span = torch.arange(size) * objects.shape[2]
    starts = starts[..., None] + torch.where(inside[..., None], span, 0)
    runs = _runs(objects, size)
    patches = torch_buffers.new_output((batch, groups, patch_size, patch_size, q), objects.dtype)
    step = piece_rows(
        batch, groups * size * size * q * objects.element_size(), kernel.PIECE_SCALE
    )
    # One piece's buffers, reused: a fresh buffer per piece is returned to
    # the system when freed, and faulted in again by the next piece.
    window_buffer = objects.new_empty((step * groups * size, size * q))
    # Every view a piece uses made once, not piece after piece: Python and
    # dispatch cost about as much per piece as a small piece's arithmetic.
    full = _piece_views(kernel, window_buffer, step, groups, size, q)
    scratch = full[2]
    pieces = row_pieces(step, starts.reshape(batch, groups * size), fx, fy, patches)
    guard = kernel.zero_weights(fx, fy)
    edges.reverse()  # popped from the end, in batch order
    for first, piece_starts, piece_fx, piece_fy, piece_patches in pieces:
        count = piece_fx.shape[0]
        if count == step:
            flat, window, _, blend_views = full
        else:
            flat, window, _, blend_views = _piece_views(
                kernel, window_buffer, count, groups, size, q, scratch
            )
        if runs is not None:
            torch.index_select(runs, 0, piece_starts.view(-1), out=flat)
        while edges and edges[-1][0] < first + count:
            b, k, index, top, left = edges.pop()
            edge = window[b - first, k].zero_()
            overlap = clipped(top, left, size, height, width)
            if overlap is not None:
                in_object, in_window = overlap
                edge[in_window].copy_(objects[(index,) + in_object])
        kernel.blend_piece(blend_views, piece_fx, piece_fy, piece_patches, guard)
    return patches


def _piece_views(kernel, window_buffer, count, groups, size, q, scratch=None):
    """The views a piece of `count` rows reads and writes: (flat windows
    (count * c * size, size * q) for `index_select`, the same as
    (count, c, size, size, q), the kernel's scratch buffer (made here for
    None) and its `piece_views`)."""
    flat = window_buffer[:count * groups * size]
    window = flat.view(count, groups, size, size, q)
    if scratch is None:
        scratch = kernel.piece_scratch(window)
    return flat, window, scratch, kernel.piece_views(window, scratch)


@torch.library.custom_op("ptycho_layers::patches_in_pieces", mutates_args=())
def patches_op(
    pairs: torch.Tensor,
    image: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    patch_size: int,
    kernel: str,
) -> torch.Tensor:
    """`patches_in_pieces` as one operator that `torch.compile` and
    `torch.export` call as it is (CPU tensors), the kernel by its name."""
    return patches_in_pieces(pairs, image, row, col, fx, fy, patch_size, kernel_for(kernel))


@patches_op.register_fake
def _(pairs, image, row, col, fx, fy, patch_size, kernel):
    batch, groups = row.shape
    return pairs.new_empty((batch, groups, patch_size, patch_size, pairs.shape[-1]))
