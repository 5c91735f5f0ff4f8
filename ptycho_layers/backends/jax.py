"""The JAX backend: XLA's run gather and scatter, kernels under `jax.jit`
with their written-out gradients (checked against JAX's own autodiff of
the kernels in the tests)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
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
    "padded_patches",
    "padded_placement",
    "fusion_boundary",
    "differentiable",
]

NAME = "jax"
# Under XLA each piece of the batch is written into the output in place.
SPLITS_BATCH = True


def complex(real, imag):
    """real + i*imag, (...) float32/float64 -> complex64/complex128."""
    return lax.complex(real, imag)


def where(condition, x, y):
    """Select (broadcasting); `keras.ops.where` makes complex128 complex64."""
    return jnp.where(condition, x, y)


def take(flat, positions):
    """flat (L,) at int32 positions (...) -> (...)."""
    return ops.take(flat, positions, axis=0)


def add_at(values, positions, size):
    """zeros (size,) with values (M,) added at int32 positions (M,)."""
    return jax.ops.segment_sum(values, positions, size)


def _run_numbers(kind, starts):
    """Dimension numbers for runs of a 2-D table at `starts` (..., 2)
    [row, first entry]: the run is the last axis of the result (gather) or
    of the updates (scatter)."""
    last = starts.ndim - 1
    if kind == "gather":
        return lax.GatherDimensionNumbers(
            offset_dims=(last,), collapsed_slice_dims=(0,), start_index_map=(0, 1)
        )
    return lax.ScatterDimensionNumbers(
        update_window_dims=(last,),
        inserted_window_dims=(0,),
        scatter_dims_to_operand_dims=(0, 1),
    )


def take_runs(table, starts, size):
    """Runs of `size` entries of `table` (A, L) at `starts` (..., 2) int32
    [row, first entry], (..., size); XLA moves a run that would leave its
    row (mode "clip": `lax.gather`'s default, "fill", would give a run that
    leaves its row as fill values instead)."""
    return lax.gather(table, starts, _run_numbers("gather", starts), (1, size), mode="clip")


def add_runs(table, starts, runs):
    """`table` (A, L) with `runs` (..., size) added at `starts` (..., 2)
    int32 [row, first entry]; a run that would leave its row is moved
    ("clip"), like the gather's."""
    return lax.scatter_add(
        table, starts, runs, _run_numbers("scatter", starts), mode="clip"
    )


# XLA gathers and adds the windows as runs (`ops.runs`), with no padded
# copy of the object: the shared kernels serve.
padded_patches = None
padded_placement = None


def fusion_boundary(fn, predicate):
    """`fn()` where XLA cannot fuse it with its consumers: a conditional
    whose branches are both `fn`; `predicate` is any scalar bool computed
    from the data. `fn` must hold a gather or a transpose (XLA turns an
    elementwise-only conditional into a select)."""
    return ops.cond(predicate, fn, fn)


def differentiable(forward, gradients):
    """`forward(x, offsets)` under `jax.jit`, with the written-out gradients.

    One XLA program whether the caller is eager or traced (op by op, JAX
    would run each of the kernel's dozens of operations separately). The
    gradients are the written-out ones, as on TensorFlow: JAX's own
    transpose of a kernel taken in pieces behind conditionals was 14x the
    forward pass for placement. `gradients` follow TensorFlow's convention
    for complex values; JAX's cotangent is its conjugate, which the
    object's gradient (linear, real weights) passes through unchanged and
    the offsets' gradient takes conjugated.
    """
    d_x, d_offsets = gradients

    @jax.custom_vjp
    def operator(x, offsets):
        return forward(x, offsets)

    def forward_with_residuals(x, offsets):
        return forward(x, offsets), (x, offsets)

    def backward(residuals, cotangent):
        x, offsets = residuals
        if jnp.issubdtype(offsets.dtype, jnp.floating):
            d_off = d_offsets(x, offsets, jnp.conj(cotangent)).astype(offsets.dtype)
        else:  # integer offsets have no gradient
            d_off = np.zeros(offsets.shape, jax.dtypes.float0)
        return d_x(x, offsets, cotangent), d_off

    operator.defvjp(forward_with_residuals, backward)
    return jax.jit(operator)
