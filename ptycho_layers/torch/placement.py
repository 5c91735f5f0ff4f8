"""PyTorch's placement on the CPU, in pieces (see `torch.pieces`, whose
extraction it is the adjoint of): a piece's patches spread over their
windows by the kernel (`spread_into`), each window added into a view of
the sums, in batch order. `torch.compile` and `torch.export` call it as
the custom operator `ptycho_layers::placement_in_pieces`.

Shapes: values (b, c, N, N, q) in pairs (q = 2 for complex values, 1 for
real ones), in the coordinate dtype; image, row, col (b, c) int64 window
corners in the objects padded by S (`torch.windows._corners`); fx, fy
(b, c, 1, 1, 1), the kernel's fractions; the sums (Bi, H, W, q).
"""

from typing import List

import torch

from ptycho_layers.torch import buffers as torch_buffers
from ptycho_layers.torch import pieces as torch_pieces
from ptycho_layers.torch.kernels import kernel as kernel_for

__all__ = ["placement_in_pieces", "placement_op"]


def placement_in_pieces(values, image, row, col, fx, fy, object_shape, kernel):
    """`torch.windows.place`'s sums (Bi, H, W, q) `object_shape`, a piece of
    the batch at a time, of `values` (b, c, N, N, q) at `image`, `row`,
    `col` (b, c) by `fx`, `fy` (b, c, 1, 1, 1): each window added in batch
    order by an in-place add of a view (bitwise reproducible), into the
    objects padded by N+1, then cropped out; or, where few windows are not
    wholly inside beside the padding's pixels (`EDGE_WINDOW_PIXELS`), into
    the objects, those clipped one by one; what falls outside is dropped."""
    count, height, width, q = object_shape
    size = kernel.window_size(values.shape[2])
    # Host integers, once: on the CPU this costs no synchronisation.
    starts, inside, edges = torch_pieces.windows_in_objects(
        image, row, col, object_shape, size
    )
    shape = (count, height + 2 * size, width + 2 * size, q)
    if len(edges) * torch_pieces.EDGE_WINDOW_PIXELS <= shape[0] * shape[1] * shape[2]:
        total = torch_buffers.new_output(tuple(object_shape), values.dtype).zero_()
        whole = inside.reshape(-1).tolist()
        return _add_windows(kernel, values, fx, fy, total, starts, whole, edges)
    padded = torch_buffers.new_output(shape, values.dtype).zero_()
    starts = (image * shape[1] + row) * shape[2] + col
    _add_windows(kernel, values, fx, fy, padded, starts, [True] * starts.numel(), [])
    total = torch_buffers.new_output(tuple(object_shape), values.dtype)
    return total.copy_(padded[:, size:size + height, size:size + width])


def _add_windows(kernel, values, fx, fy, total, starts, whole, edges):
    """Spread `values` (b, c, N, N, q) by `kernel` (fractions fx, fy as
    for `placement_in_pieces`) and add window k into `total` (Bi, H, W, q) at
    flat pixel `starts` (b, c) where `whole[k]`, else clipped as `edges`
    (from `torch_pieces.windows_in_objects`) say; returns `total`."""
    batch, groups, patch_size, _, q = values.shape
    size = kernel.window_size(patch_size)
    _, height, width, _ = total.shape
    # Every window of the sums by its first pixel, whole or not: indexing
    # it makes a window's view for less than `as_strided`.
    count = max(total.numel() // q - (size - 1) * (width + 1), 0)
    every_window = total.as_strided((count, size, size, q), (q, width * q, q, 1))
    targets = [
        every_window[start] if inside else None
        for start, inside in zip(starts.reshape(-1).tolist(), whole)
    ]
    # Windows not inside their object, in batch order: (position, the
    # overlap in the sums or None, the overlap in the window).
    clipped = []
    for b, k, index, top, left in reversed(edges):  # popped from the end
        overlap = torch_pieces.clipped(top, left, size, height, width)
        in_object, in_window = overlap if overlap else ((), None)
        target = total[(index,) + in_object] if overlap else None
        clipped.append((b * groups + k, target, in_window))
    step = torch_pieces.piece_rows(
        batch, groups * size * size * q * values.element_size(), kernel.PIECE_SCALE
    )
    # One piece's buffers, reused (see `torch_pieces.patches_in_pieces`),
    # and the views of its windows, made once.
    buffers = kernel.spread_buffers(values, step)
    guard = kernel.zero_weights(fx, fy)
    # The last buffer holds the spread windows (`spread_buffers`).
    sources = buffers[-1].view(-1, size, size, q).unbind(0)
    for first, piece_values, piece_fx, piece_fy in torch_pieces.row_pieces(step, values, fx, fy):
        count = piece_values.shape[0]
        kernel.spread_into(
            piece_values, piece_fx, piece_fy, *(buffer[:count] for buffer in buffers), guard
        )
        low, high = first * groups, (first + count) * groups
        into, added = targets[low:high], list(sources[:high - low])
        if clipped and clipped[-1][0] < high:
            pairs = list(zip(into, added))
            while clipped and clipped[-1][0] < high:
                position, target, in_window = clipped.pop()
                source = pairs[position - low][1]
                pairs[position - low] = (
                    target, None if target is None else source[in_window]
                )
            pairs = [pair for pair in pairs if pair[0] is not None]
            into, added = [t for t, _ in pairs], [a for _, a in pairs]
        if into:  # none where every window of the piece falls outside
            # One call adding source k into target k, in order (on the CPU
            # a loop in C++, faster than a Python loop of `add_`).
            torch._foreach_add_(into, added)
    return total


@torch.library.custom_op("ptycho_layers::placement_in_pieces", mutates_args=())
def placement_op(
    values: torch.Tensor,
    image: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    object_shape: List[int],
    kernel: str,
) -> torch.Tensor:
    """`placement_in_pieces` as one operator that `torch.compile` and
    `torch.export` call as it is (CPU tensors), the kernel by its name."""
    return placement_in_pieces(
        values, image, row, col, fx, fy, object_shape, kernel_for(kernel)
    )


@placement_op.register_fake
def _(values, image, row, col, fx, fy, object_shape, kernel):
    return values.new_empty(object_shape)
