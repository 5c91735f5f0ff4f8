"""The nearest-neighbour kernel of the PyTorch implementation, in every
direction (the definition: `ptycho_layers.xla.nearest`): the N x N window
at the offset rounded half up is the patch, no blend.

Shapes: windows and patches or values (b, c, N, N, q) in real pairs
(q = 2 for complex values, 1 for real ones); fx, fy (b, c, 1, 1, 1), the
fractions, zero here, NaN in fy where the offset was not finite.
"""

import torch

from ptycho_layers.torch.pairs import elements

__all__ = [
    "NAME",
    "PIECE_SCALE",
    "zero_weights",
    "window_size",
    "origin",
    "blend",
    "piece_scratch",
    "piece_views",
    "blend_piece",
    "spread",
    "spread_buffers",
    "spread_into",
]

NAME = "nearest"

# Pieces of `pieces.PIECE_BYTES` of windows: the work is a pass or two over
# memory, faster while a piece's buffers stay in cache.
PIECE_SCALE = 1


def window_size(patch_size):
    """S = N: a patch entry reads one pixel."""
    return patch_size


def origin(offset, patch_size):
    """(start, fraction): the window's first index, (b, c) int64, the
    offset rounded half up (exactly: x - floor(x) is exact), and a zero
    fraction."""
    floor = torch.floor(offset)
    rounded = floor + (offset - floor >= 0.5).to(offset.dtype)
    return rounded.long() - patch_size // 2, torch.zeros_like(offset)


def zero_weights(fx, fy):
    """False: there is no weight to guard."""
    return False


def blend(window, fx, fy, fused):
    """The windows (b, c, N, N, q) as patches; adding fy (0, or NaN where
    the offset was not finite) makes a non-finite offset's patch NaN."""
    return window + fy


def piece_scratch(window):
    """None: the windows are blended into the output directly."""
    return None


def piece_views(window, scratch):
    """The windows (count, c, N, N, q) themselves."""
    return window


def blend_piece(window, fx, fy, out, guard):
    """`out` (count, c, N, N, q): the windows, NaN where fy is. (As
    complex elements this ran 1.06x slower: the piece is in cache.)"""
    return torch.add(window, fy, out=out)


def spread(values, fx, fy, fused):
    """Each patch (b, c, N, N, q) is its window's contribution."""
    return values


def spread_buffers(values, count):
    """(windows,), (count, c, N * N, q): what `spread_into` writes."""
    _, groups, n, _, q = values.shape
    return (values.new_empty((count, groups, n * n, q)),)


def spread_into(values, fx, fy, windows, guard):
    """The windows (b, c, N, N, q), `values` copied into `windows` (as
    elements: `pairs.elements`)."""
    b, c, n, _, q = values.shape
    result = windows.view(b, c, n, n, q)
    elements(result).copy_(elements(values))
    return result
