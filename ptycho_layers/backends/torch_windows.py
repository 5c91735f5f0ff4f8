"""PyTorch's own extraction and placement kernels (see `backends.torch`):
whole windows of the object zero-padded by N+1, in real pairs.

Shapes: images (Bi, H, W); image_index (b,) int32; x, y (b, c) sanitized
offsets in the coordinate dtype; finite (b, c) bool; windows
(b, c, N+1, N+1, q), q = 2 (real and imaginary parts) or 1 (real values).

Each kernel has forms (`_form`): in pieces on the CPU
(`backends.torch_pieces`, through custom operators under `torch.compile`,
where inductor's whole-batch code was slower: extraction 1.4x, placement's
scatter-add of atomics 5.6x; default case), and the whole batch at once
(`_blend_fused`, `_spread_fused`, one scatter-add) for inductor on other
devices, and wherever autograd or an ONNX trace records the kernel.
"""

import torch

from ptycho_layers.backends import torch_pieces
from ptycho_layers.backends import torch_placement
from ptycho_layers.backends import torch_spread

__all__ = ["padded_patches", "padded_placement", "add_rows"]


def _as_pairs(values, coord):
    """(..., q) real values in the coordinate dtype: q = 2 for complex
    values (a view), q = 1 for real ones (cast to `coord`)."""
    if values.is_complex():
        # A lazily conjugated (or negated) tensor, say `x.conj()`, has no
        # real view until its bits are resolved (a copy, only then).
        return torch.view_as_real(values.resolve_conj().resolve_neg())
    return values.to(coord)[..., None]


def _from_pairs(pairs, dtype):
    """The inverse of `_as_pairs`: (..., q) -> (...) in `dtype`."""
    if dtype.is_complex:
        return torch.view_as_complex(pairs)
    return pairs[..., 0].to(dtype)


def _corners(x, y, finite, image_index, height, width, patch_size):
    """Where each window lies in the object padded by N+1, and its blend.

    Args:
        x, y: (b, c) sanitized offsets (coordinate dtype); finite: (b, c)
            bool; image_index: (b,) int32.

    Returns:
        (image, row, col, fx, fy, nan): (b, c) int64 image and first padded
        row and column of each window, clamped into [0, extent + N + 1]
        (beyond, a window lies wholly in the padding, so clamping changes
        nothing), and (0, 0), wholly in the padding, where the offset was
        not finite: such a patch reads only zeros, and what it adds is
        cropped away, NaN values included; fx, fy (b, c, 1, 1, 1), the
        fractions; nan (b, c, 1, 1, 1), 0, or NaN where the offset was not
        finite. Each is realised (`_realised`), once, before the loops
        that read it.
    """
    size = patch_size + 1
    x_floor, y_floor = torch.floor(x), torch.floor(y)
    half = patch_size // 2
    col = torch.clamp(x_floor.long() - half, -size, width) + size
    row = torch.clamp(y_floor.long() - half, -size, height) + size
    col = torch.where(finite, col, 0)
    row = torch.where(finite, row, 0)
    image = image_index.long()[:, None].expand_as(row)
    nan = torch.where(finite, 0.0, float("nan")).to(x.dtype)
    blend = [(x - x_floor), (y - y_floor), nan]
    blend = [_realised(value).reshape(value.shape + (1, 1, 1)) for value in blend]
    return (_realised(image), _realised(row), _realised(col), *blend)


def _realised(value):
    """`value`, computed on its own under inductor: an identity
    `as_strided` view, which inductor cannot inline. Without it, inductor
    recomputes the offsets' whole sanitizing for every patch entry, and
    split the blend in two loops with a buffer between (2x slower)."""
    # Contiguous first: inductor lays the realised buffer out densely, so
    # the strides of, say, a broadcast would not describe it.
    value = value.contiguous()
    return torch.as_strided(value, value.shape, value.stride())


def _window_view(padded, size):
    """(Bi, Hp - N, Wp - N, size, size, q): every size x size window of
    `padded` (Bi, Hp, Wp, q), contiguous, by its first row and column."""
    count, height, width, pairs = padded.shape
    s_image, s_row, s_col, s_pair = padded.stride()
    return padded.as_strided(
        (count, height - size + 1, width - size + 1, size, size, pairs),
        (s_image, s_row, s_col, s_row, s_col, s_pair),
    )


class _GatherWindows(torch.autograd.Function):
    """Windows (b, c, size, size, q) of a padded object (Bi, Hp, Wp, q) at
    (b, c) int64 `image`, `row`, `col`. Its own backward (the windows added
    back): autograd's, through the overlapping view, would allocate the
    view's every element."""

    @staticmethod
    def forward(padded, image, row, col, size):
        return _window_view(padded, size)[image, row, col]

    @staticmethod
    def setup_context(ctx, inputs, output):
        padded, image, row, col, size = inputs
        ctx.save_for_backward(image, row, col)
        ctx.shape = padded.shape
        ctx.size = size

    @staticmethod
    def backward(ctx, windows):
        image, row, col = ctx.saved_tensors
        return _add_windows(windows, image, row, col, ctx.shape), None, None, None, None


def _add_windows(windows, image, row, col, shape):
    """Zeros of `shape` (Bi, Hp, Wp, q) with `windows` (b, c, size, size, q)
    added at (b, c) `image`, `row`, `col`: one `index_add_` of q-vectors.

    Op by op, ATen adds in a fixed order (bitwise reproducible on CPU).
    Under `torch.compile`, inductor turns it into parallel atomic adds, so
    overlapping windows can differ in the last bits from run to run, unless
    `torch.use_deterministic_algorithms(True)`, under which inductor runs
    ATen's `index_add_` instead."""
    count, height, width, pairs = shape
    size = windows.shape[2]
    span = torch.arange(size, device=windows.device)
    rows = (image * height + row)[..., None] + span
    cols = col[..., None] + span
    positions = rows[..., :, None] * width + cols[..., None, :]
    total = windows.new_zeros((count * height * width, pairs))
    total = add_rows(total, positions.reshape(-1), windows.reshape(-1, pairs))
    return total.reshape(shape)


def add_rows(total, positions, values):
    """`total` (L, ...) with `values` (M, ...) added in place at int64
    `positions` (M,) of its first axis; returns `total`."""
    if torch.jit.is_tracing():
        # The same sum: the ONNX export of a trace writes `index_add_` as a
        # scatter that keeps one of the values added at the same position.
        index = positions.reshape(-1, *[1] * (values.dim() - 1)).expand_as(values)
        return total.scatter_add_(0, index, values)
    return total.index_add_(0, positions, values)


def _compiling():
    """Whether `torch.compile` or `torch.export` is tracing: a question
    about the caller, answered while tracing, not a branch on data."""
    return torch.compiler.is_compiling()


def _blend_fused(window, x0, x1, y0, y1):
    """The blend of windows (b, c, N+1, N+1, q) with per-window weights
    (b, c, 1, 1, 1) for columns (x0, x1) and rows (y0, y1), as one
    expression: inductor makes it one loop with the gather (a shared
    intermediate would get a buffer of its own)."""

    def across(rows):
        return x0 * window[:, :, rows, :-1] + x1 * window[:, :, rows, 1:]

    return y0 * across(slice(None, -1)) + y1 * across(slice(1, None))


def _blend_eager(window, x0, x1, y0, y1):
    """`_blend_fused` op by op: two products and two in-place
    multiply-adds, so only one intermediate as large as the patches."""
    across = window[:, :, :, :-1] * x0
    across.addcmul_(window[:, :, :, 1:], x1)
    patches = across[:, :, :-1] * y0
    return patches.addcmul_(across[:, :, 1:], y1)


def _spread_fused(values, x0, x1, y0, y1):
    """The adjoint of the blend: values (b, c, N, N, q) -> windows
    (b, c, N+1, N+1, q), entry n receiving entry n with weight x0 (y0) and
    n - 1 with x1 (y1). Four shifted products and no shared intermediate,
    so that inductor computes it inside the scatter that reads it."""
    pad = torch.nn.functional.pad

    def term(x, y, left, top):
        return pad((values * x) * y, (0, 0, left, 1 - left, top, 1 - top))

    return term(x0, y0, 0, 0) + term(x1, y0, 1, 0) + term(x0, y1, 0, 1) + term(x1, y1, 1, 1)


def _spread_eager(values, x0, x1, y0, y1):
    """`_spread_fused` op by op, summing in place. Where autograd is not
    recording (the usual case: inside `differentiable`'s forward and
    backward), `torch_spread.spread_into` writes two `lerp`s into three
    buffers about as large as the windows, not six products."""
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
        across[:, :, :, 1:] += values * x1
        windows[:, :, :-1] += across * y0
        windows[:, :, 1:] += across * y1
        return windows
    return torch_spread.spread_into(values, x1, y1, *torch_spread.spread_buffers(values, b))


def _form(values):
    """Which form of the kernels runs on `values` (see the module's note):
    on the CPU "pieces" op by op, and "pieces_op" (the same through the
    custom operators) under `torch.compile` or `torch.export`; on other
    devices "whole" op by op and "fused" under them. "whole" too on every
    device where an ONNX export's trace (it would record the pieces' loop
    as constants) or autograd (it cannot differentiate writes into `out=`)
    records the kernel itself. A question about the caller and the device,
    answered while tracing: never a branch on data."""
    cpu = values.device.type == "cpu"
    if _compiling():
        return "pieces_op" if cpu else "fused"
    if torch.jit.is_tracing() or (torch.is_grad_enabled() and values.requires_grad):
        return "whole"
    return "pieces" if cpu else "whole"


def padded_patches(images, image_index, x, y, finite, patch_size):
    """Bilinear patches from the zero-padded object (see the module's note).

    Args:
        images: (Bi, H, W), real or complex; image_index: (b,) int32.
        x, y: (b, c) sanitized offsets in the coordinate dtype; finite:
            (b, c) bool.
        patch_size: N.

    Returns:
        (b, N, N, c) in the images' dtype (a view of a (b, c, N, N)
        tensor), NaN where the offset was not finite.
    """
    size = patch_size + 1
    _, height, width = images.shape
    image, row, col, fx, fy, nan = _corners(
        x, y, finite, image_index, height, width, patch_size
    )
    pairs = _as_pairs(images, x.dtype)
    # NaN in the row weights makes the whole patch NaN, with no branch.
    form = _form(pairs)
    if form == "pieces":
        patches = torch_pieces.patches_in_pieces(pairs, image, row, col, fx, fy + nan, patch_size)
    elif form == "pieces_op":
        patches = torch_pieces.patches_op(pairs, image, row, col, fx, fy + nan, patch_size)
    else:
        padded = torch.nn.functional.pad(pairs, (0, 0, size, size, size, size))
        window = _GatherWindows.apply(padded, image, row, col, size)
        weights = (1 - fx, fx, 1 - fy + nan, fy + nan)
        patches = (_blend_fused if form == "fused" else _blend_eager)(window, *weights)
    return _from_pairs(patches, images.dtype).permute(0, 2, 3, 1)


def padded_placement(patches, image_index, x, y, finite, image_shape):
    """The adjoint of `padded_patches`: every patch spread over its window
    and the windows added into the zero-padded objects.

    Args:
        patches: (b, N, N, c), real or complex; image_index: (b,) int32.
        x, y, finite: as for `padded_patches`.
        image_shape: (Bi, H, W) static ints.

    Returns:
        (Bi, H, W) in the patches' dtype: on the CPU the sums themselves,
        elsewhere a view of the padded sums.
    """
    count, height, width = image_shape
    patch_size = patches.shape[1]
    size = patch_size + 1
    image, row, col, fx, fy, _ = _corners(
        x, y, finite, image_index, height, width, patch_size
    )
    values = _as_pairs(patches, x.dtype).permute(0, 3, 1, 2, 4)
    form = _form(values)
    if form in ("pieces", "pieces_op"):
        shape = [count, height, width, values.shape[-1]]
        place = (
            torch_placement.placement_in_pieces
            if form == "pieces"
            else torch_placement.placement_op
        )
        return _from_pairs(place(values, image, row, col, fx, fy, shape), patches.dtype)
    shape = (count, height + 2 * size, width + 2 * size, values.shape[-1])
    spread = _spread_fused if form == "fused" else _spread_eager
    windows = spread(values, 1 - fx, fx, 1 - fy, fy)
    total = _add_windows(windows, image, row, col, shape)
    total = total[:, size:size + height, size:size + width]
    return _from_pairs(total, patches.dtype)
