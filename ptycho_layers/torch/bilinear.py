"""The bilinear kernel of the PyTorch implementation, in every direction.

A patch of size N at offset [x, y] reads the (N+1) x (N+1) window whose
top-left is (floor(y) - N//2, floor(x) - N//2); along each axis, patch
entry n is (1 - f) w[n] + f w[n+1], f the offset's fraction (the windows
come zero outside the object, so the weights need no mask).

In `spread_buffers`' buffers, window rows are N+1 entries long, the
entries beyond a patch kept zero, so that each shift of the spread is a
shift of one flat run per window and the spread one `lerp` per axis
(edge entries as products of their own, loops two values long, cost more
than the rest of the spread).

Shapes: windows (b, c, N+1, N+1, q) and patches or values (b, c, N, N, q)
in real pairs (q = 2 for complex values, 1 for real ones); fx, fy
(b, c, 1, 1, 1), the weights of each entry's second neighbour along
columns and rows (NaN in fy makes the patch NaN).
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


NAME = "bilinear"

# Pieces of `pieces.PIECE_BYTES` of windows: the work is a pass or two over
# memory, faster while a piece's buffers stay in cache.
PIECE_SCALE = 1


def window_size(patch_size):
    """S = N + 1: a patch entry reads its pixel and the next."""
    return patch_size + 1


def origin(offset, patch_size):
    """(start, fraction): the window's first index, (b, c) int64, and the
    offset's sub-pixel part, (b, c) in [0, 1), along one axis."""
    floor = torch.floor(offset)
    return floor.long() - patch_size // 2, offset - floor


def zero_weights(fx, fy):
    """Whether some second neighbour's weight in fx, fy (b, c, 1, 1, 1) is
    exactly zero (an integer offset): there a NaN beyond the patch's
    footprint must not be read, nor an infinite value spread, as 0 * NaN.
    Asked once per call (a host read), not per piece."""
    return bool(torch.any(fx == 0) or torch.any(fy == 0))


def _weighted(weight, values):
    """weight * values, zero wherever the weight is (see `zero_weights`)."""
    # The product itself for finite values, autograd's derivative included.
    return torch.where((weight != 0) | torch.isfinite(values), weight * values, 0)


def _blend_fused(window, x0, x1, y0, y1):
    """The blend of windows with per-window weights (b, c, 1, 1, 1) for
    columns (x0, x1) and rows (y0, y1), as one expression: inductor makes
    it one loop with the gather (a shared intermediate would get a buffer
    of its own)."""

    def across(rows):
        return x0 * window[:, :, rows, :-1] + _weighted(x1, window[:, :, rows, 1:])

    return y0 * across(slice(None, -1)) + _weighted(y1, across(slice(1, None)))


def _blend_eager(window, x0, x1, y0, y1):
    """`_blend_fused` op by op, summing in place."""
    across = window[:, :, :, :-1] * x0
    across += _weighted(x1, window[:, :, :, 1:])
    patches = across[:, :, :-1] * y0
    patches += _weighted(y1, across[:, :, 1:])
    return patches


def blend(window, fx, fy, fused):
    """Patches (b, c, N, N, q) from windows (b, c, N+1, N+1, q), the whole
    batch: one expression for inductor (`fused`), else op by op."""
    return (_blend_fused if fused else _blend_eager)(window, 1 - fx, fx, 1 - fy, fy)


def piece_scratch(window):
    """The buffer `blend_piece` writes between its two passes for windows
    (b, c, N+1, N+1, q): (b, c, N+1, N, q)."""
    b, c, size, _, q = window.shape
    return window.new_empty((b, c, size, size - 1, q))


def piece_views(window, scratch):
    """What `blend_piece` reads and writes for windows (count, c, N+1, N+1,
    q), made once and reused piece after piece: the windows' two column
    neighbours, the first `count` rows of `scratch` and its two row
    neighbours."""
    across = scratch[:window.shape[0]]
    columns = (window[:, :, :, :-1], window[:, :, :, 1:])
    return columns, across, (across[:, :, :-1], across[:, :, 1:])


def blend_piece(views, fx, fy, out, guard):
    """The blend of a piece's windows (through `piece_views`) into `out`
    (count, c, N, N, q); `guard`: `zero_weights` of the call's fractions."""
    columns, across, rows = views
    # lerp: one pass for (1 - f) a + f b, and NaN for a NaN weight; but
    # (1 - 0) a + 0 b is NaN for a NaN b, which a zero weight must not read.
    torch.lerp(*columns, fx, out=across)
    if guard:
        torch.where(fx == 0, columns[0], across, out=across)
    torch.lerp(*rows, fy, out=out)
    if guard:
        torch.where(fy == 0, rows[0], out, out=out)
    return out


def _spread_fused(values, x0, x1, y0, y1):
    """The adjoint of the blend: values (b, c, N, N, q) -> windows
    (b, c, N+1, N+1, q), entry n receiving entry n with weight x0 (y0) and
    n - 1 with x1 (y1). Four shifted products and no shared intermediate,
    so that inductor computes it inside the scatter that reads it."""
    pad = torch.nn.functional.pad

    def term(x, y, left, top):
        return pad(_weighted(y, _weighted(x, values)), (0, 0, left, 1 - left, top, 1 - top))

    return term(x0, y0, 0, 0) + term(x1, y0, 1, 0) + term(x0, y1, 0, 1) + term(x1, y1, 1, 1)


def _spread_eager(values, x0, x1, y0, y1):
    """`_spread_fused` op by op, summing in place. Where autograd is not
    recording (the usual case: inside `differentiable`'s forward and
    backward), `spread_into` writes two `lerp`s into three buffers about
    as large as the windows, not six products."""
    b, c, n, _, q = values.shape
    # An ONNX export's trace cannot write `out=` products either.
    recording = torch.jit.is_tracing() or (
        torch.is_grad_enabled()
        and any(t.requires_grad for t in (values, x0, x1, y0, y1))
    )
    if recording:
        across = values.new_zeros((b, c, n, n + 1, q))
        windows = values.new_zeros((b, c, n + 1, n + 1, q))
        across[:, :, :, :-1] += values * x0
        across[:, :, :, 1:] += _weighted(x1, values)
        windows[:, :, :-1] += across * y0
        windows[:, :, 1:] += _weighted(y1, across)
        return windows
    return spread_into(values, x1, y1, *spread_buffers(values, b), zero_weights(x1, y1))


def spread(values, fx, fy, fused):
    """Windows (b, c, N+1, N+1, q) from values (b, c, N, N, q), the whole
    batch: one expression for inductor (`fused`), else op by op."""
    return (_spread_fused if fused else _spread_eager)(values, 1 - fx, fx, 1 - fy, fy)


def spread_buffers(values, count):
    """The buffers `spread_into` writes, for `count` rows of `values`
    (b, c, N, N, q): (staged, across, windows), (count, c, L, q) with L =
    N (N+1) + 1, (N+2)(N+1) and (N+1)^2. The entries that stay zero (the
    staged patches' first entry and last column, `across`' first and last
    rows) are zeroed here, once: reused piece after piece, the buffers
    are never zeroed again."""
    _, groups, n, _, q = values.shape
    size = n + 1
    staged = values.new_empty((count, groups, n * size + 1, q))
    staged[:, :, 0].zero_()
    _rows(staged, n)[..., n, :].zero_()
    across = values.new_empty((count, groups, (n + 2) * size, q))
    across[:, :, :size].zero_()
    across[:, :, -size:].zero_()
    windows = values.new_empty((count, groups, size * size, q))
    return staged, across, windows


def _rows(staged, n):
    """The (b, c, N, N+1, q) rows of `staged` (b, c, N (N+1) + 1, q)."""
    b, c, _, q = staged.shape
    return staged[:, :, 1:].view(b, c, n, n + 1, q)


def spread_into(values, x1, y1, staged, across, windows, guard):
    """The blend's adjoint (`_spread_fused`) of values (b, c, N, N, q) with
    the second neighbours' weights x1, y1 (b, c, 1, 1, 1), into buffers
    from `spread_buffers`: windows (b, c, N+1, N+1, q), entry n receiving
    (1 - w) v[n] + w v[n-1], v zero beyond the patch: columns, then rows.
    `guard`: `zero_weights(x1, y1)` (a zero w must not spread v[n-1])."""
    b, c, n, _, q = values.shape
    size = n + 1
    # The patches copied in with each value's q parts as one element
    # (complex), whatever their strides: a gather across the groups of
    # (B, N, N, c) patches, the most they can have.
    rows = _rows(staged, n)[..., :n, :]
    elements(rows).copy_(elements(values))
    x1, y1 = x1.reshape(b, c, 1, 1), y1.reshape(b, c, 1, 1)
    # lerp(a, b, w) is (1 - w) a + w b in one pass: a the entry, b the one
    # before it (the zero before each row: the last entry of the row above).
    middle = across[:, :, size:-size]
    torch.lerp(staged[:, :, 1:], staged[:, :, :-1], x1, out=middle)
    if guard:
        torch.where(x1 == 0, staged[:, :, 1:], middle, out=middle)
    torch.lerp(across[:, :, size:], across[:, :, :-size], y1, out=windows)
    if guard:
        torch.where(y1 == 0, across[:, :, size:], windows, out=windows)
    return windows.view(b, c, size, size, q)
