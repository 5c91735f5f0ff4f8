"""The PyTorch backend: the primitives and the autograd wiring; the
operators are PyTorch's own implementation (`ptycho_layers.torch`). No
run gather, no fusion across a boundary, no batch split for memory.
"""

import torch
from keras import ops

from ptycho_layers.torch import buffers as torch_buffers
from ptycho_layers.torch.windows import add_rows

__all__ = [
    "NAME",
    "IMPLEMENTATION",
    "SPLITS_BATCH",
    "complex",
    "cos_sin",
    "where",
    "take",
    "add_at",
    "take_runs",
    "add_runs",
    "fusion_boundary",
    "differentiable",
    "compiling",
    "compiles_per_shape",
    "persistent_cache",
]

NAME = "torch"
# The operators' code: `ptycho_layers.torch`.
IMPLEMENTATION = "torch"
# Every intermediate is materialised op by op: pieces would save nothing.
SPLITS_BATCH = False
take_runs = None
add_runs = None


def complex(real, imag):
    """real + i*imag, (...) float32/float64 -> complex64/complex128."""
    return torch.complex(real, imag)


def cos_sin(angles):
    """(cos, sin) of `angles` (...) float, in its dtype."""
    return torch.cos(angles), torch.sin(angles)


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
    return add_rows(total, positions.long(), values)


def fusion_boundary(fn, predicate):
    """`fn()`: nothing to keep apart op by op."""
    del predicate
    return fn()


def compiling():
    """Whether `torch.compile` (Dynamo) traces the caller, not an export:
    Dynamo cannot trace `sys._getframe`, so the ONNX-export check walks no
    stack then (`onnx_export.exporting`). Under `torch.export` and
    `torch.onnx.export` this is False: their trace is the one to check."""
    return torch.compiler.is_compiling() and not torch.compiler.is_exporting()


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
    """`gradient` contiguous, like `x` (same shape), where `x` is and it is
    not (extraction's groups-first patches), copied on the CPU into a
    pooled buffer (`torch.buffers`): autograd would copy it into x's layout
    itself, into a fresh buffer whose page faults cost more than the copy.
    Elsewhere, and under `torch.compile`, left as it is."""
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


def differentiable(forward, gradients, ordered=True, elements=None):
    """`forward(x, offsets)` with the written-out `gradients` (d_x,
    d_offsets), in TensorFlow's convention for complex values (PyTorch's
    too), through a `torch.autograd.Function`; a gradient autograd does not
    need is not computed. (`ordered` is JAX's: autograd runs them in order; `elements`
    is for compiled backends: nothing here compiles.)
    """
    d_x, d_offsets = gradients

    def operator(x, offsets):
        if torch.jit.is_tracing():
            # An ONNX export's trace: no gradient is wanted, and the
            # exporter cannot see through an autograd.Function.
            return forward(x, offsets)
        return _Operator.apply(x, offsets, forward, d_x, d_offsets)

    return operator


def compiles_per_shape(*values):
    """Whether a call of an operator on `values` compiles a program for
    their shapes: never (op by op; `torch.compile`'s recompiles are its
    own)."""
    del values
    return False


def persistent_cache(directory):
    """False: nothing here is compiled per shape (`torch.compile` keeps
    caches of its own); nothing is changed."""
    del directory
    return False
