"""The bilinear kernel of the XLA implementation, in every direction.

A patch of size N at offset [x, y] reads the (N+1) x (N+1) window whose
top-left is (floor(y) - N//2, floor(x) - N//2); along each axis, patch
entry n takes window entries n and n+1 with w0 = (1 - f) * inside[n] and
w1 = f * inside[n+1], f the offset's fraction and `inside` 1 where the
entry lies in the object: the zero extension folded into 1-D weights,
O(N) per patch, not a mask over the window.

Shapes: windows (b, N+1, N+1, c) or, for the spread, (b, c, N+1, N+1, q)
(groups first, q = 2 for the real and imaginary parts, 1 for real
values); weights (b, N, c) each; patches (b, N, N, c).
"""

from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.xla.geometry import padded_along

__all__ = [
    "NAME",
    "FUSED_READS",
    "ADDS_PATCHES",
    "SPREADS_VALUES",
    "PIECE_SHARE",
    "window_size",
    "origin",
    "weights",
    "blend",
    "row_share",
    "add_row_share",
    "spread_operands",
    "spread",
    "derivative",
]


NAME = "bilinear"

# The fused reader's moved rows are added by `row_share` / `add_row_share`.
FUSED_READS = True

# Placement spreads each patch by the weights (`spread_operands`, `spread`).
ADDS_PATCHES = False

# The spread reads the patches as real parts side by side (`spread_operands`),
# made behind placement's fusion boundary, not the values themselves.
SPREADS_VALUES = False

# Extraction reads the whole batch at once (`extraction`), its windows
# fused into the blend.
PIECE_SHARE = None


def window_size(patch_size):
    """S = N + 1: a patch entry reads its pixel and the next."""
    return patch_size + 1


def origin(offset, patch_size):
    """(start, fraction): the window's first index (b, c) int32 and the
    offset's sub-pixel part (b, c) in [0, 1), along one axis."""
    # Split into integer and fraction *before* subtracting N//2: the
    # fraction of the offset itself is exact in its own precision.
    floor = ops.floor(offset)
    return ops.cast(floor, "int32") - patch_size // 2, offset - floor


def _axis_weights(fraction, inside):
    """w0, w1 (b, N, c) from the fraction (b, c) and inside (b, N+1, c)."""
    fraction = fraction[:, None, :]
    return (1 - fraction) * inside[:, :-1], fraction * inside[:, 1:]


def weights(y_fraction, x_fraction, row_inside, col_inside, keep=None):
    """(row_w0, row_w1, col_w0, col_w1), (b, N, c) each; `keep` (b, c), 0
    where the offset was not finite, zeroes the row weights, and so every
    weight of the patch."""
    row_w0, row_w1 = _axis_weights(y_fraction, row_inside)
    if keep is not None:
        keep = keep[:, None, :]
        row_w0, row_w1 = row_w0 * keep, row_w1 * keep
    return (row_w0, row_w1, *_axis_weights(x_fraction, col_inside))


def _weighted(weight, values):
    """weight * values, zero wherever the weight is: a zero weight reads
    nothing (at an integer offset, the window's last row and column lie
    beyond the patch's footprint, and 0 * NaN would be NaN)."""
    # Selected on the weight alone: a select on the values too (their
    # finiteness) keeps XLA from fusing the gather into the blend.
    return ops.where(weight != 0, weight * values, ops.zeros_like(values))


def blend(parts, weights, guarded=True):
    """`parts`, a list of (b, N+1, N+1, c) real windows in the weights'
    dtype (say, real and imaginary parts), blended alike by `weights` into
    a list of (b, N, N, c). Groups last, a window row is a contiguous run
    of (N+1)*c values along which the weights broadcast: loops vectorise."""
    row_w0, row_w1, col_w0, col_w1 = weights
    col_w0 = col_w0[:, None]
    col_w1 = col_w1[:, None]
    row_w0 = row_w0[:, :, None]
    row_w1 = row_w1[:, :, None]

    # The first neighbours' weights vanish only outside the object, where
    # every reader's window holds zeros; `guarded` False: plain products.
    second = _weighted if guarded else (lambda weight, values: weight * values)

    def one(part):
        across = col_w0 * part[:, :, :-1] + second(col_w1, part[:, :, 1:])
        return row_w0 * across[:, :-1] + second(row_w1, across[:, 1:])

    return [one(part) for part in parts]


def row_share(moved, row_parts, weights):
    """What window row m, (b, c) `moved` (-1 for none), holding
    `row_parts` (the real parts of (b, c, N+1) rows), adds to the blend:
    it lands on patch rows m-1 (weight row_w1) and m (row_w0), blended
    along the row like any other.

    Returns (lands, weight, rows): (b, N, c) bool and real, and the blended
    row's real parts, (b, N, c) each (`add_row_share` adds them)."""
    row_w0, row_w1, col_w0, col_w1 = weights
    steps = ops.arange(ops.shape(row_w0)[1], dtype="int32")[None, :, None]
    moved = moved[:, None, :]
    first, second = steps == moved, steps == moved - 1
    zeros = ops.zeros_like(row_w0)
    weight = ops.where(first, row_w0, zeros) + ops.where(second, row_w1, zeros)
    rows = [
        col_w0 * ops.transpose(part[..., :-1], (0, 2, 1))
        + _weighted(col_w1, ops.transpose(part[..., 1:], (0, 2, 1)))
        for part in row_parts
    ]
    return ops.logical_or(first, second), weight, rows


def add_row_share(parts, share):
    """`parts` (b, N, N, c) with `row_share`'s `share` added where it lands,
    outside the fusion boundary (fused into the blend); a zero weight
    reads nothing there either (`_weighted`)."""
    lands, weight, rows = share
    lands, weight = lands[:, :, None, :], weight[:, :, None, :]
    return [
        part + ops.where(lands, _weighted(weight, row[:, None]), ops.zeros_like(part))
        for part, row in zip(parts, rows)
    ]


def spread_operands(weights, pairs):
    """What `spread` reads, to be materialised behind a fusion boundary
    (fused into the loops over window entries, XLA would recompute the
    weights for every entry), from `weights` and `pairs` (b, c, N, N, q),
    the patches' real parts side by side: (row_w0, row_w1, col_w0, col_w1,
    padded), the weights as (b, c, N+1) zero-padded so that entry n is
    window entry n's weight as first neighbour of patch entry n (w0) or
    second of entry n-1 (w1); and the pairs padded by one zero all round,
    (b, c, N+2, N+2, q)."""
    padded_weights = [
        padded_along(ops.transpose(w, (0, 2, 1)), -1, before, after)
        for w, before, after in zip(weights, (0, 1, 0, 1), (1, 0, 1, 0))
    ]
    # A row axis for the rows' weights, a column axis for the columns'.
    padded_weights = [w[..., None] for w in padded_weights[:2]] + [
        w[..., None, :] for w in padded_weights[2:]
    ]
    padded = padded_along(padded_along(pairs, -3, 1, 1), -2, 1, 1)
    return (*padded_weights, padded)


def spread(row_w0, row_w1, col_w0, col_w1, padded):
    """The adjoint of the blend, on `spread_operands`' real values, groups
    first: (b, c, N+1, N+1, q), what each window entry receives, summed
    over the patch entries that read it. Window entry (p, q) is read by
    patch entries (p or p-1, q or q-1): with the values and the weights
    padded by zeros, one elementwise expression (one loop under XLA)."""
    row_w0, row_w1, col_w0, col_w1 = (
        w[..., None] for w in (row_w0, row_w1, col_w0, col_w1)
    )
    size = ops.shape(padded)[-2] - 1

    def at(row, col):
        # padded[p + row, q + col] for every window entry (p, q).
        return padded[:, :, row:row + size, col:col + size]

    # A zero second-neighbour weight (an integer offset) must not spread
    # an infinite patch value one pixel beyond the footprint as NaN.
    same_row = col_w0 * at(1, 1) + _weighted(col_w1, at(1, 0))
    row_above = col_w0 * at(0, 1) + _weighted(col_w1, at(0, 0))
    return row_w0 * same_row + _weighted(row_w1, row_above)


def derivative(window_parts, upstream_parts, geometry):
    """(d_x, d_y), (b, c) each: per patch, the sum of the upstream values
    times the blend's derivative with respect to x and y (the blend with
    -inside[n] and inside[n+1] for that axis's weights), from lists of
    real parts `window_parts` (b, N+1, N+1, c) and `upstream_parts`
    (b, N, N, c), and `geometry.window_geometry`'s dict."""
    # d w0 / d f = -inside[n], d w1 / d f = inside[n + 1].
    col_d = (-geometry["col_inside"][:, :-1], geometry["col_inside"][:, 1:])
    row_d = (-geometry["row_inside"][:, :-1], geometry["row_inside"][:, 1:])
    row_w, col_w = geometry["weights"][:2], geometry["weights"][2:]
    d_x = 0
    d_y = 0
    for part, values in zip(upstream_parts, window_parts):
        # Unguarded: the derivative's weights are not the blend's.
        (by_x,) = blend([values], (*row_w, *col_d), guarded=False)
        (by_y,) = blend([values], (*row_d, *col_w), guarded=False)
        d_x = d_x + ops.sum(part * by_x, axis=(1, 2))
        d_y = d_y + ops.sum(part * by_y, axis=(1, 2))
    return d_x, d_y
