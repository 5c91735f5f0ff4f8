"""PyTorch's kernels in pieces (see `backends.torch_windows`): on the CPU,
the batch a piece of about `PIECE_BYTES` of windows at a time, every
result written in place.

A fresh buffer as large as the output costs, in page faults, as much as
the arithmetic; a piece's buffers are allocated once per call, reused,
and stay in cache. Extraction copies each window row whole
(`index_select` of an `as_strided` view of every run of N+1 pixels) and
blends with two `lerp`s; placement spreads a piece's patches and adds each
window with an in-place add of a view of the sums, in batch order.
`torch.compile` and `torch.export` call both as the custom operators
`ptycho_layers::patches_in_pieces` and `ptycho_layers::placement_in_pieces`.

Shapes: padded (Bi, Hp, Wp, q), the objects zero-padded by N+1 in pairs;
image, row, col (b, c) int64 window corners (`torch_windows._corners`);
fx, fy (b, c, 1, 1, 1) weights of the second neighbour; values and
patches (b, c, N, N, q).
"""

from typing import List

import numpy
import torch

__all__ = [
    "PIECE_BYTES",
    "spread_into",
    "patches_in_pieces",
    "placement_in_pieces",
    "patches_op",
    "placement_op",
]

# Windows per piece, in bytes: a piece's buffers stay in cache. (Default
# case, 64 windows of 65x65 complex pairs: 2.2 MB; from 16 to 128 windows
# the time is flat, at 256 it doubles.)
PIECE_BYTES = 2**21


def spread_into(values, x0, x1, y0, y1, across, windows):
    """The adjoint of the blend (`torch_windows._spread_eager`) of values
    (b, c, N, N, q), written into the buffers `across` (b, c, N, N+1, q)
    and `windows` (b, c, N+1, N+1, q); returns `windows`. With x0 = 1 - x1,
    an inner entry x0 v[n] + x1 v[n-1] is one `lerp` and each edge one
    product: no buffer needs zeroing first."""
    torch.mul(values[:, :, :, :1], x0, out=across[:, :, :, :1])
    torch.lerp(values[:, :, :, 1:], values[:, :, :, :-1], x1, out=across[:, :, :, 1:-1])
    torch.mul(values[:, :, :, -1:], x1, out=across[:, :, :, -1:])
    torch.mul(across[:, :, :1], y0, out=windows[:, :, :1])
    torch.lerp(across[:, :, 1:], across[:, :, :-1], y1, out=windows[:, :, 1:-1])
    torch.mul(across[:, :, -1:], y1, out=windows[:, :, -1:])
    return windows


def _piece_rows(batch, window_bytes, device):
    """Rows of the batch per piece, rows whose windows take `window_bytes`
    each (all of a row's groups together); the whole batch off the CPU,
    where one launch of each kernel beats a loop of them."""
    if device.type != "cpu":
        return max(batch, 1)
    return max(1, min(batch, PIECE_BYTES // max(window_bytes, 1)))


def _window_starts(image, row, col, padded_shape):
    """(b, c) int64 flat index, into the padded objects (Bi, Hp, Wp, q)
    seen as pixels, of each window's first pixel."""
    _, height, width, _ = padded_shape
    return (image * height + row) * width + col


def _new_output(shape, like):
    """An uninitialised tensor of `shape` in `like`'s dtype and device; on
    the CPU allocated by NumPy, which asks the kernel for transparent huge
    pages for large arrays (madvise), where PyTorch does not (unless
    THP_MEM_ALLOC_ENABLE=1 is set before it starts): first touching a
    fresh 32 MB output costs 2.2 ms in huge pages against 5.5 ms in 4 KiB
    pages (default case, measured on this project's CI machine)."""
    if like.device.type != "cpu" or 0 in shape:
        return like.new_empty(shape)
    dtype = torch.empty((), dtype=like.dtype).numpy().dtype
    return torch.from_numpy(numpy.empty(shape, dtype))


def _padded_copy(pairs, size):
    """(Bi, H + 2 size, W + 2 size, q): `pairs` (Bi, H, W, q) zero-padded
    by `size`, in a `_new_output` buffer (at 2048x2048, 3.2 ms against
    `torch.nn.functional.pad`'s 9.9 ms, which faults in 4 KiB pages)."""
    count, height, width, q = pairs.shape
    padded = _new_output((count, height + 2 * size, width + 2 * size, q), pairs)
    padded[:, :size].zero_()
    padded[:, size + height:].zero_()
    padded[:, size:size + height, :size].zero_()
    padded[:, size:size + height, size + width:].zero_()
    padded[:, size:size + height, size:size + width].copy_(pairs)
    return padded


def patches_in_pieces(pairs, image, row, col, fx, fy, patch_size):
    """`padded_patches`' blend, a piece of the batch at a time.

    Args:
        pairs: (Bi, H, W, q), the objects (padded here by N+1); image,
            row, col: (b, c) int64 (see `_corners`).
        fx, fy: (b, c, 1, 1, 1) column and row weights of the second
            neighbour, NaN in fy where the offset was not finite.
        patch_size: N.

    Returns:
        (b, c, N, N, q) in the coordinate dtype.
    """
    batch, groups = row.shape
    size = patch_size + 1
    padded = _padded_copy(pairs, size)
    q = padded.shape[-1]
    # Every run of `size` pixels of the padded objects, by its first pixel:
    # each window row is one of them, so `index_select` copies whole rows
    # (3.5x faster than indexing the windows' view element by element).
    runs = padded.as_strided((padded.numel() // q - size + 1, size * q), (q, 1))
    span = torch.arange(size, device=row.device) * padded.shape[2]
    starts = _window_starts(image, row, col, padded.shape)[..., None] + span
    patches = _new_output((batch, groups, patch_size, patch_size, q), padded)
    step = _piece_rows(batch, groups * size * size * q * padded.element_size(), padded.device)
    # One piece's buffers, reused: a fresh buffer per piece is returned to
    # the system when freed, and faulted in again by the next piece.
    window_buffer = padded.new_empty((step * groups * size, size * q))
    across_buffer = padded.new_empty((step, groups, size, patch_size, q))
    for first in range(0, batch, step):
        piece = slice(first, first + step)
        count = len(range(batch)[piece])
        window = window_buffer[:count * groups * size]
        torch.index_select(runs, 0, starts[piece].reshape(-1), out=window)
        window = window.view(count, groups, size, size, q)
        # lerp: one pass for (1 - f) a + f b, and NaN for a NaN weight.
        across = across_buffer[:count]
        torch.lerp(window[:, :, :, :-1], window[:, :, :, 1:], fx[piece], out=across)
        torch.lerp(across[:, :, :-1], across[:, :, 1:], fy[piece], out=patches[piece])
    return patches


def placement_in_pieces(values, image, row, col, fx, fy, padded_shape):
    """`padded_placement`'s sums, a piece of the batch at a time.

    Args:
        values: (b, c, N, N, q) in the coordinate dtype; image, row, col:
            (b, c) int64 (see `_corners`); fx, fy: (b, c, 1, 1, 1) weights
            of the second neighbour.
        padded_shape: (Bi, Hp, Wp, q), the padded objects.

    Returns:
        (Bi, Hp, Wp, q): the windows added in batch order, each with one
        in-place add of a view (bitwise reproducible).
    """
    batch, groups, patch_size, _, pairs = values.shape
    size = patch_size + 1
    total = _new_output(padded_shape, values).zero_()
    window_strides = (padded_shape[2] * pairs, pairs, 1)
    # Host integers, once: on the CPU this costs no synchronisation.
    starts = (_window_starts(image, row, col, padded_shape) * pairs).reshape(-1).tolist()
    step = _piece_rows(batch, groups * size * size * pairs * values.element_size(), values.device)
    # One piece's buffers, reused (see `_patches_in_pieces`).
    across_buffer = values.new_empty((step, groups, patch_size, size, pairs))
    window_buffer = values.new_empty((step, groups, size, size, pairs))
    for first in range(0, batch, step):
        piece = slice(first, first + step)
        count = len(range(batch)[piece])
        windows = spread_into(
            values[piece], 1 - fx[piece], fx[piece], 1 - fy[piece], fy[piece],
            across_buffer[:count], window_buffer[:count],
        )
        targets = [
            total.as_strided((size, size, pairs), window_strides, start)
            for start in starts[first * groups:(first + step) * groups]
        ]
        # One call adding window k into target k, in order (on the CPU a
        # loop in C++: a third faster than a Python loop of `add_`).
        torch._foreach_add_(targets, windows.reshape(-1, size, size, pairs).unbind(0))
    return total


@torch.library.custom_op("ptycho_layers::patches_in_pieces", mutates_args=())
def patches_op(
    pairs: torch.Tensor,
    image: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    patch_size: int,
) -> torch.Tensor:
    """`patches_in_pieces` as one operator that `torch.compile` and
    `torch.export` call as it is (CPU tensors)."""
    return patches_in_pieces(pairs, image, row, col, fx, fy, patch_size)


@patches_op.register_fake
def _(pairs, image, row, col, fx, fy, patch_size):
    batch, groups = row.shape
    return pairs.new_empty((batch, groups, patch_size, patch_size, pairs.shape[-1]))


@torch.library.custom_op("ptycho_layers::placement_in_pieces", mutates_args=())
def placement_op(
    values: torch.Tensor,
    image: torch.Tensor,
    row: torch.Tensor,
    col: torch.Tensor,
    fx: torch.Tensor,
    fy: torch.Tensor,
    padded_shape: List[int],
) -> torch.Tensor:
    """`placement_in_pieces` as one operator that `torch.compile` and
    `torch.export` call as it is (CPU tensors)."""
    return placement_in_pieces(values, image, row, col, fx, fy, padded_shape)


@placement_op.register_fake
def _(values, image, row, col, fx, fy, padded_shape):
    return values.new_empty(padded_shape)
