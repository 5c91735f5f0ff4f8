"""The PyTorch backend: element gather and scatter, run op by op.

PyTorch has no gather of contiguous runs, and none of XLA's tricks apply:
nothing is fused across a boundary, and a conditional on data would only
cost a device synchronisation and break graph capture
(`torch.compile(fullgraph=True)`, `torch.export`). So `fusion_boundary` is
a plain call and the batch is never split. PyTorch differentiates the
kernels itself.
"""

import torch
from keras import ops

__all__ = [
    "NAME",
    "SPLITS_BATCH",
    "complex",
    "where",
    "take",
    "add_at",
    "take_runs",
    "add_runs",
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
    if torch.jit.is_tracing():
        # The same sum: the ONNX export of a trace writes `index_add_` as a
        # scatter that keeps one of the values added at the same position.
        return total.scatter_add_(0, positions.long(), values)
    return total.index_add_(0, positions.long(), values)


def fusion_boundary(fn, predicate):
    """`fn()`: nothing to keep apart op by op (see the module's note)."""
    del predicate
    return fn()


def differentiable(forward, gradients):
    """`forward` itself: PyTorch derives the gradient; `gradients` is
    unused."""
    del gradients
    return forward
