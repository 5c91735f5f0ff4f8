"""The nearest-neighbour kernel of the XLA implementation, in every
direction.

A patch of size N at offset [x, y] is the N x N window whose top-left is
(floor(y + 1/2) - N//2, floor(x + 1/2) - N//2): each entry the object's
pixel nearest to its position, no blend (the windows hold zeros outside
the object, whichever reader read them). Placement adds each patch into
that window; the offsets' gradient is zero (the patch is piecewise
constant in the offsets).

Shapes: windows (b, N, N, c) or, for the spread, (b, c, N, N, q) (groups
first, q = 2 for the real and imaginary parts, 1 for real values);
patches (b, N, N, c).
"""

from ptycho_layers.backends import keras_ops as ops

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

NAME = "nearest"

# The fused reader's moved rows are added by `row_share` / `add_row_share`.
FUSED_READS = True

# Placement adds each patch into its window as it is (`placement`'s
# `_patches_as_windows`): `spread` is the identity and there are no weights.
ADDS_PATCHES = True

# Nothing is spread (`ADDS_PATCHES`).
SPREADS_VALUES = False

# Extraction reads the whole batch at once (`extraction`), its windows
# fused into the blend.
PIECE_SHARE = None


def window_size(patch_size):
    """S = N: a patch entry reads one pixel."""
    return patch_size


def origin(offset, patch_size):
    """(start, fraction): the window's first index (b, c) int32, the
    offset rounded half up, and a zero fraction (b, c)."""
    floor = ops.floor(offset)
    # x - floor(x) is exact, so the rounding is exact too (floor(x + 0.5)
    # would round the sum first, just below a half).
    rounded = floor + ops.cast(offset - floor >= 0.5, offset.dtype)
    return ops.cast(rounded, "int32") - patch_size // 2, ops.zeros_like(offset)


def weights(y_fraction, x_fraction, row_inside, col_inside, keep=None):
    """None: the window is the patch, and a non-finite offset's patch is
    made NaN (extraction) or zeroed (placement) apart."""
    return None


def blend(parts, weights, guarded=True):
    """The windows (b, N, N, c) are the patches."""
    return list(parts)


def row_share(moved, row_parts, weights):
    """What window row m, (b, c) `moved` (-1 for none), holding
    `row_parts` (the real parts of (b, c, N) rows), adds to the patch: the
    row itself at patch row m. Returns (lands, rows), (b, N, c) bool and
    the rows' real parts (b, N, c) each."""
    steps = ops.arange(ops.shape(row_parts[0])[-1], dtype="int32")[None, :, None]
    lands = steps == moved[:, None, :]
    return lands, [ops.transpose(part, (0, 2, 1)) for part in row_parts]


def add_row_share(parts, share):
    """`parts` (b, N, N, c) with `row_share`'s rows added where they land."""
    lands, rows = share
    lands = lands[:, :, None, :]
    return [
        part + ops.where(lands, row[:, None], ops.zeros_like(part))
        for part, row in zip(parts, rows)
    ]


def spread_operands(weights, pairs):
    """(pairs,): the patches' real parts (b, c, N, N, q), as they are."""
    return (pairs,)


def spread(pairs):
    """The adjoint of the blend: each patch is its window's contribution,
    (b, c, N, N, q)."""
    return pairs


def derivative(window_parts, upstream_parts, geometry):
    """(d_x, d_y), (b, c) zeros: the patch does not change with a small
    change of the offset."""
    # zeros_like reads the sum's shape only (0 * a NaN would be NaN).
    zeros = ops.zeros_like(ops.sum(upstream_parts[0], axis=(1, 2)))
    return zeros, zeros
