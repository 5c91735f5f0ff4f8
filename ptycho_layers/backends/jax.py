"""The JAX backend: XLA's run gather and scatter, operators under `jax.jit`
with their written-out gradients (checked against JAX's autodiff in the
tests). The JAX runtime takes large outputs fresh from the system at every
call; `ptycho_layers.memory` changes that, on request only (a process's
allocator is its owner's choice).
"""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from keras import ops

from ptycho_layers.backends import batch_sizes

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

NAME = "jax"
# The operators' code: `ptycho_layers.xla`.
IMPLEMENTATION = "xla"
# Under XLA each piece of the batch is written into the output in place.
SPLITS_BATCH = True


def complex(real, imag):
    """real + i*imag, (...) float32/float64 -> complex64/complex128."""
    return lax.complex(real, imag)


def cos_sin(angles):
    """(cos, sin) of `angles` (...) float, in its dtype; `keras.ops.cos` computes float64 in float32 on JAX."""
    return jnp.cos(angles), jnp.sin(angles)


def where(condition, x, y):
    """Select (broadcasting); `keras.ops.where` makes complex128 complex64."""
    return jnp.where(condition, x, y)


def take(flat, positions):
    """flat (L,) at int32 positions (...) -> (...)."""
    return ops.take(flat, positions, axis=0)


def add_at(values, positions, size):
    """zeros (size,) with values (M,) added at int32 positions (M,)."""
    return jax.ops.segment_sum(values, positions, size)


def _run_numbers(kind, starts, run_axis=None):
    """Dimension numbers for runs of a 2-D table at `starts` (..., 2)
    [row, first entry]: the run is the last axis of the result (gather) or,
    scattering, axis `run_axis` of the updates (by default their last)."""
    last = starts.ndim - 1
    if kind == "gather":
        return lax.GatherDimensionNumbers(
            offset_dims=(last,), collapsed_slice_dims=(0,), start_index_map=(0, 1)
        )
    return lax.ScatterDimensionNumbers(
        update_window_dims=(last if run_axis is None else run_axis,),
        inserted_window_dims=(0,),
        scatter_dims_to_operand_dims=(0, 1),
    )


def take_runs(table, starts, size):
    """Runs of `size` entries of `table` (A, L) at `starts` (..., 2) int32
    [row, first entry], (..., size); XLA moves a run that would leave its
    row (mode "clip": `lax.gather`'s default, "fill", would give a run that
    leaves its row as fill values instead)."""
    return lax.gather(table, starts, _run_numbers("gather", starts), (1, size), mode="clip")


def add_runs(table, starts, runs, run_axis=None):
    """`table` (A, L) with `runs` added at `starts` (..., 2) int32 [row,
    first entry]: `runs` (..., size), or with the run on axis `run_axis`
    and the other axes those of `starts`' (...), in order; a run that
    would leave its row is moved ("clip"), like the gather's."""
    numbers = _run_numbers("scatter", starts, run_axis)
    return lax.scatter_add(table, starts, runs, numbers, mode="clip")


def fusion_boundary(fn, predicate):
    """`fn()` where XLA cannot fuse it with its consumers: a conditional
    whose branches are both `fn`; `predicate` is any scalar bool computed
    from the data. `fn` must hold a gather or a transpose (XLA turns an
    elementwise-only conditional into a select)."""
    return ops.cond(predicate, fn, fn)


def _after(offsets, finished):
    """`offsets` (B, c, 2), unchanged, made to depend on the scalar bool
    `finished`: adding -0.0 leaves every value as it was (NaN, infinities
    and the sign of zero included), and XLA does not fold a float product
    with zero, so whatever reads the result waits for `finished`. Integer
    offsets are returned as they are (XLA would fold the product)."""
    if not jnp.issubdtype(offsets.dtype, jnp.floating):
        return offsets
    flag = jnp.asarray(finished, offsets.dtype)
    return offsets + flag * jnp.asarray(-0.0, offsets.dtype)


def _on_cpu(value):
    """Whether `value` (a JAX array, or a NumPy one) is in host memory."""
    devices = getattr(value, "devices", None)
    return devices is None or all(device.platform == "cpu" for device in devices())


def _pad_rows(value, count, fill):
    """`value` (B, ...) with `count` rows of `fill` appended. On the CPU
    in NumPy: an eager `jnp` operation (`jnp.asarray` too) compiles a
    program per shape, and the point of padding is to compile nothing."""
    shape = (count, *value.shape[1:])
    if _on_cpu(value):
        host = np.asarray(value)
        padded = np.concatenate([host, np.full(shape, fill, host.dtype)])
        # As it came: `jax.jit` keeps a program per argument kind too.
        return padded if isinstance(value, np.ndarray) else jax.device_put(padded)
    return jnp.concatenate([value, jnp.full(shape, fill, value.dtype)], axis=0)


def _first_rows(value, count):
    """Rows :count of `value` (B, ...), a copy; in NumPy on the CPU, as
    `_pad_rows`."""
    if _on_cpu(value):
        return jax.device_put(np.asarray(value)[:count])
    return value[:count]


def differentiable(forward, gradients, ordered=True, elements=None):
    """`forward(x, offsets)` under `jax.jit` (one XLA program, the caller
    eager or traced), with the written-out `gradients` (JAX's own transpose
    of a kernel in pieces behind conditionals is far slower), in
    TensorFlow's convention for complex values: JAX's cotangent is its
    conjugate, so both gradients take it conjugated, and the input's is
    given back conjugated (a kernel's weights may be complex).

    Under `jax.jit` of a training step both passes are one program, and
    where the loss is linear in the result the backward pass does not
    depend on the forward one: XLA may interleave their pieces, adding up
    their working memory. `ordered`: the backward pass reads the offsets
    through the forward result's last value (`_after`), so it starts once
    the forward pass is done (for placement, whose object is materialised
    anyway, less memory at no cost). Extraction is not ordered: its patches
    are fused into what reads them, and reading one made XLA materialise
    the windows.

    Called eagerly at a new batch size, the operator first runs a larger
    batch's program; at shapes never met, where `elements(x, offsets)`
    (the window elements it moves) is small, `forward` uncompiled on the
    host (`batch_sizes`).
    """
    d_x, d_offsets = gradients

    @jax.custom_vjp
    def operator(x, offsets):
        return forward(x, offsets)

    def forward_with_residuals(x, offsets):
        y = forward(x, offsets)
        finished = None
        if ordered and y.size:
            # The last value: in the batch piece computed last.
            finished = jnp.isfinite(y[(-1,) * y.ndim])
        return y, (x, offsets, finished)

    def backward(residuals, cotangent):
        x, offsets, finished = residuals
        waited = offsets if finished is None else _after(offsets, finished)
        if jnp.issubdtype(offsets.dtype, jnp.floating):
            d_off = d_offsets(x, waited, jnp.conj(cotangent)).astype(offsets.dtype)
        else:  # integer offsets have no gradient
            d_off = np.zeros(offsets.shape, jax.dtypes.float0)
        # Conjugated in and out: the kernel's weights may be complex
        # (Fourier's ramp), and conj(A^H conj(g)) is A^H g only for real A.
        d_x_value = jnp.conj(d_x(x, waited, jnp.conj(cotangent)))
        return d_x_value.astype(x.dtype), d_off

    operator.defvjp(forward_with_residuals, backward)
    return batch_sizes.Sized(jax.jit(operator), _EAGER_ROWS, host=forward, elements=elements)


def compiling():
    """False: `jax.jit` traces Python as it runs, so the ONNX-export check
    may walk the stack (`onnx_export.exporting`); PyTorch's Dynamo cannot."""
    return False


def compiles_per_shape(*values):
    """Whether a call of an operator on `values` compiles a program for
    their shapes: on arrays, yes (`jax.jit` per input shape); on a trace's
    values, the caller's program holds the operator."""
    return not any(isinstance(value, jax.core.Tracer) for value in values)


def persistent_cache(directory):
    """JAX's persistent compilation cache in `directory`, for every program
    however fast it compiled (JAX's default threshold, one second, is
    above the operators' compiles). Returns True."""
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return True


# What `batch_sizes.Sized` asks of a backend.
_EAGER_ROWS = types.SimpleNamespace(
    compiles_per_shape=compiles_per_shape,
    is_floating=lambda value: jnp.issubdtype(value.dtype, jnp.floating),
    pad_rows=_pad_rows,
    first_rows=_first_rows,
    on_host=_on_cpu,
    from_host=jax.device_put,
)
