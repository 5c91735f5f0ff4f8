"""The PyTorch backend: kernels of its own, in real pairs.

PyTorch has no gather of contiguous runs and none of XLA's tricks apply:
nothing is fused across a boundary, and a conditional on data would only
cost a device synchronisation and break graph capture
(`torch.compile(fullgraph=True)`, `torch.export`). So `fusion_boundary` is
a plain call and the shared kernels never split the batch. Instead, both
operators have a kernel of their own (`padded_patches`,
`padded_placement`, in `backends.torch_windows`):

- Complex values travel as `torch.view_as_real` pairs (inductor generates
  no code for complex tensors) and are viewed as complex at the end,
  which is free.
- On the CPU (`backends.torch_pieces`) the batch goes a piece at a time,
  written in place, with outputs from a pool of freed buffers
  (`backends.torch_buffers`): op by op, every intermediate as large as the
  output would cost as much in page faults as the arithmetic. Extraction
  copies window rows whole out of the object and blends them with
  `lerp`s; placement adds each spread window into a view of the object,
  in batch order. `torch.compile` calls these as custom operators.
- On other devices, whole windows of the object zero-padded by N+1,
  gathered by one advanced indexing of an `as_strided` view and blended
  in one expression that inductor fuses; placement adds the windows with
  one scatter-add.
- Patches are computed groups first, (b, c, N, N), the layout in which a
  patch row is contiguous, and returned as the (B, N, N, c) view of it;
  as a gradient, with respect to contiguous patches, they are copied out
  contiguous (`_laid_out_as`).

`differentiable` ties each operator to its written-out gradients with a
`torch.autograd.Function`, as the XLA backends do.
"""

import torch
from keras import ops

from ptycho_layers.backends import torch_buffers
from ptycho_layers.backends import torch_windows
from ptycho_layers.backends.torch_windows import padded_patches
from ptycho_layers.backends.torch_windows import padded_placement

__all__ = [
    "NAME",
    "SPLITS_BATCH",
    "complex",
    "where",
    "take",
    "add_at",
    "take_runs",
    "add_runs",
    "padded_patches",
    "padded_placement",
    "fusion_boundary",
    "differentiable",
]

NAME = "torch"
# Every intermediate is materialised op by op: pieces would save nothing.
SPLITS_BATCH = False
take_runs = None
add_runs = None


def complex(real, imag):
    """real + i*imag, (...) float32/float64 -> complex64/complex128."""
    return torch.complex(real, imag)


def where(condition, x, y):
    """Select (broadcasting)."""
    return ops.where(condition, x, y)


def take(flat, positions):
    """flat (L,) at int32 positions (...) -> (...); `keras.ops.take` would
    add two passes mapping negative indices."""
    return flat[positions.long()]


def add_at(values, positions, size):
    """zeros (size,) with values (M,) added at int32 positions (M,).

    Not `keras.ops.segment_sum`: on PyTorch it casts the values to float32,
    dropping imaginary parts and float64 precision."""
    total = torch.zeros(size, dtype=values.dtype, device=values.device)
    return torch_windows.add_rows(total, positions.long(), values)


def fusion_boundary(fn, predicate):
    """`fn()`: nothing to keep apart op by op (see the module's note)."""
    del predicate
    return fn()


class _Operator(torch.autograd.Function):
    """`forward(x, offsets)` with its written-out gradients `d_x` and
    `d_offsets`, each (x, offsets, upstream) -> gradient. Defined once,
    here, with the functions as arguments: `torch.compile` traces through
    the callers' caches, so a class or a registry entry made per operator
    would be made anew at every trace."""

    @staticmethod
    def forward(x, offsets, forward, d_x, d_offsets):
        return forward(x, offsets)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, offsets, _, d_x, d_offsets = inputs
        ctx.save_for_backward(x, offsets)
        ctx.gradients = (d_x, d_offsets)

    @staticmethod
    def backward(ctx, upstream):
        x, offsets = ctx.saved_tensors
        d_x, d_offsets = ctx.gradients
        d_x_value = d_offsets_value = None
        if ctx.needs_input_grad[0]:
            d_x_value = _laid_out_as(d_x(x, offsets, upstream), x)
        if ctx.needs_input_grad[1]:
            d_offsets_value = d_offsets(x, offsets, upstream)
        return d_x_value, d_offsets_value, None, None, None


def _laid_out_as(gradient, x):
    """`gradient` contiguous, like `x`, where `x` is and it is not (the
    patches' gradient, extraction's groups-first view), copied on the CPU
    into a buffer from `backends.torch_buffers`. Autograd would otherwise
    copy it into x's layout itself (for a leaf's `.grad`; a convolution's
    backward pass likewise), into a fresh buffer whose page faults cost
    more than the copy: a step of the benchmark's placement loss, default
    case, took 24.4 ms that way and 15.7 ms this way. Elsewhere, and under
    `torch.compile`, the gradient is left as it is."""
    if (
        gradient.is_contiguous()
        or not x.is_contiguous()
        or gradient.shape != x.shape
        or gradient.device.type != "cpu"
        or torch.compiler.is_compiling()
    ):
        return gradient
    laid_out = torch_buffers.new_output(gradient.shape, gradient.dtype)
    return laid_out.copy_(gradient)


def differentiable(forward, gradients, ordered=True):
    """`forward(x, offsets)` with the written-out gradients, through a
    `torch.autograd.Function`, as the XLA backends do. (`ordered` is
    JAX's; autograd runs the backward pass after the forward one.)

    `gradients` (d_x, d_offsets) follow TensorFlow's convention for complex
    values, which is PyTorch's too. A gradient autograd does not need (say,
    for offsets that do not require it) is not computed.
    """
    d_x, d_offsets = gradients

    def operator(x, offsets):
        if torch.jit.is_tracing():
            # An ONNX export's trace: no gradient is wanted, and the
            # exporter cannot see through an autograd.Function.
            return forward(x, offsets)
        return _Operator.apply(x, offsets, forward, d_x, d_offsets)

    return operator
