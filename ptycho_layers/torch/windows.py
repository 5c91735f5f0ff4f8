"""PyTorch's extraction and placement: each patch's window of the object,
gathered or added, composed with the kernel, in real pairs.

Forms (`_form`): in pieces on the CPU (`torch.pieces`, `torch.placement`;
custom operators under `torch.compile`, where inductor's whole-batch code
was slower), else the whole batch at once from the object zero-padded by
S (the kernel's `blend` and `spread` as one expression, one scatter-add).

Shapes: images (Bi, H, W); image_index (b,) int32; x, y (b, c) sanitized
offsets in the coordinate dtype; finite (b, c) bool; windows
(b, c, S, S, q), q = 2 (real and imaginary parts) or 1 (real values).
"""

import torch

from ptycho_layers.torch import pieces as pieces_lib
from ptycho_layers.torch import placement as placement_lib

__all__ = ["extract", "place", "add_rows"]


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


def _corners(kernel, x, y, finite, image_index, height, width, patch_size):
    """Where each window lies in the object padded by S, and its blend, for
    sanitized `x`, `y` (b, c), `finite` (b, c) bool and `image_index` (b,)
    int32: (image, row, col, fx, fy, nan), (b, c) int64 image and first
    padded row and column of each window, clamped into [0, extent + S]
    (beyond, a window lies wholly in the padding), and (0, 0) where the
    offset was not finite: such a patch reads only zeros, and what it adds
    is cropped away, NaN included; fx, fy (b, c, 1, 1, 1), the fractions;
    nan (b, c, 1, 1, 1), 0 or NaN where the offset was not finite. Each is
    realised (`_realised`), once, before the loops that read it."""
    size = kernel.window_size(patch_size)
    x_start, fx = kernel.origin(x, patch_size)
    y_start, fy = kernel.origin(y, patch_size)
    col = torch.clamp(x_start, -size, width) + size
    row = torch.clamp(y_start, -size, height) + size
    col = torch.where(finite, col, 0)
    row = torch.where(finite, row, 0)
    image = image_index.long()[:, None].expand_as(row)
    nan = torch.where(finite, 0.0, float("nan")).to(x.dtype)
    blend = [fx, fy, nan]
    blend = [_realised(value).reshape(value.shape + (1, 1, 1)) for value in blend]
    return (_realised(image), _realised(row), _realised(col), *blend)


def _realised(value):
    """`value`, computed on its own under inductor: an identity
    `as_strided` view, which inductor cannot inline. Without it, inductor
    recomputes the offsets' whole sanitizing for every patch entry, and
    splits the blend in two loops with a buffer between."""
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
    added at (b, c) `image`, `row`, `col`: one `index_add_` of q-vectors,
    in a fixed order op by op (bitwise reproducible on CPU); under
    `torch.compile` parallel atomic adds (overlapping windows may differ in
    the last bits between runs) unless `torch.use_deterministic_algorithms`."""
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


def _form(values):
    """Which form of the kernels runs on `values` (a tensor): on the CPU
    "pieces" op by op, "pieces_op" (the custom operators) under
    `torch.compile` or `torch.export`; on other devices "whole" op by op
    and "fused" under them; "whole" wherever an ONNX trace (it would record
    the pieces' loop as constants) or autograd (it cannot differentiate
    writes into `out=`) records the kernel. Never a branch on data."""
    cpu = values.device.type == "cpu"
    if _compiling():
        return "pieces_op" if cpu else "fused"
    if torch.jit.is_tracing() or (torch.is_grad_enabled() and values.requires_grad):
        return "whole"
    return "pieces" if cpu else "whole"


def extract(images, image_index, x, y, finite, patch_size, kernel):
    """Patches (b, N, N, c) in the images' dtype (a view of (b, c, N, N)) of
    zero-extended `images` (Bi, H, W), real or complex, at sanitized `x`,
    `y` (b, c), NaN where not `finite` (b, c); `image_index` (b,) int32."""
    size = kernel.window_size(patch_size)
    _, height, width = images.shape
    image, row, col, fx, fy, nan = _corners(
        kernel, x, y, finite, image_index, height, width, patch_size
    )
    pairs = _as_pairs(images, x.dtype)
    # NaN in the row weights makes the whole patch NaN, with no branch.
    fy = fy + nan
    form = _form(pairs)
    if form == "pieces":
        patches = pieces_lib.patches_in_pieces(
            pairs, image, row, col, fx, fy, patch_size, kernel
        )
    elif form == "pieces_op":
        patches = pieces_lib.patches_op(pairs, image, row, col, fx, fy, patch_size, kernel.NAME)
    else:
        padded = torch.nn.functional.pad(pairs, (0, 0, size, size, size, size))
        window = _GatherWindows.apply(padded, image, row, col, size)
        patches = kernel.blend(window, fx, fy, fused=form == "fused")
    return _from_pairs(patches, images.dtype).permute(0, 2, 3, 1)


def place(patches, image_index, x, y, finite, image_shape, kernel):
    """The adjoint of `extract`: `patches` (b, N, N, c) spread over their
    windows by the kernel and added into zero-extended objects of static
    `image_shape` (Bi, H, W), in the patches' dtype (on the CPU the sums,
    elsewhere a view of the padded sums); `image_index` (b,), `x`, `y`,
    `finite` (b, c) as for `extract`."""
    count, height, width = image_shape
    patch_size = patches.shape[1]
    size = kernel.window_size(patch_size)
    image, row, col, fx, fy, _ = _corners(
        kernel, x, y, finite, image_index, height, width, patch_size
    )
    values = _as_pairs(patches, x.dtype).permute(0, 3, 1, 2, 4)
    form = _form(values)
    if form in ("pieces", "pieces_op"):
        shape = [count, height, width, values.shape[-1]]
        if form == "pieces":
            total = placement_lib.placement_in_pieces(
                values, image, row, col, fx, fy, shape, kernel
            )
        else:
            total = placement_lib.placement_op(
                values, image, row, col, fx, fy, shape, kernel.NAME
            )
        return _from_pairs(total, patches.dtype)
    shape = (count, height + 2 * size, width + 2 * size, values.shape[-1])
    windows = kernel.spread(values, fx, fy, fused=form == "fused")
    total = _add_windows(windows, image, row, col, shape)
    total = total[:, size:size + height, size:size + width]
    return _from_pairs(total, patches.dtype)
