"""The adjoint of the bilinear blend, op by op, into reused buffers: what
PyTorch's placement adds into the objects (`backends.torch_placement`,
`backends.torch_windows`).

Window rows are N+1 entries long in every buffer, with the entries beyond
a patch kept zero, so that each shift of the spread (a column, a row) is a
shift of one flat run per window and the spread is one `lerp` per axis:
edge entries handled as products of their own took more time than the
rest of the spread (their loops are two values long).

Shapes: values (b, c, N, N, q) in real pairs (q = 2 for complex values,
1 for real ones); weights x1, y1 (b, c, 1, 1, 1), of each entry's second
neighbour.
"""

import torch

__all__ = ["spread_buffers", "spread_into"]


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


def spread_into(values, x1, y1, staged, across, windows):
    """The adjoint of the blend (`torch_windows._spread_fused`) of values
    (b, c, N, N, q) with the second neighbours' weights x1, y1
    (b, c, 1, 1, 1), into buffers from `spread_buffers`; returns the
    windows, (b, c, N+1, N+1, q).

    Window entry n receives (1 - w) v[n] + w v[n-1], v being zero beyond
    the patch: columns, then rows.
    """
    b, c, n, _, q = values.shape
    size = n + 1
    # The patches copied in with each value's q parts as one element
    # (complex), whatever their strides: a gather across the groups of
    # (B, N, N, c) patches, the most they can have.
    rows = _rows(staged, n)[..., :n, :]
    _elements(rows).copy_(_elements(values))
    x1, y1 = x1.reshape(b, c, 1, 1), y1.reshape(b, c, 1, 1)
    # lerp(a, b, w) is (1 - w) a + w b in one pass: a the entry, b the one
    # before it (the zero before each row: the last entry of the row above).
    torch.lerp(staged[:, :, 1:], staged[:, :, :-1], x1, out=across[:, :, size:-size])
    torch.lerp(across[:, :, size:], across[:, :, :-size], y1, out=windows)
    return windows.view(b, c, size, size, q)


def _elements(pairs):
    """(..., q) pairs as (...) elements: complex for q = 2, a view."""
    return torch.view_as_complex(pairs) if pairs.shape[-1] == 2 else pairs[..., 0]
