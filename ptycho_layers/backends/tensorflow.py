"""The TensorFlow backend: XLA's run gather and scatter, and the operators
XLA-compiled with their written-out gradients (`differentiable`): op by op
the kernels are far slower, Keras does not compile on CPU unless asked,
and TensorFlow cannot differentiate the kernels' conditionals under XLA.
"""

import functools
import os
import types

import tensorflow as tf

from ptycho_layers import backends
from ptycho_layers.backends import batch_sizes
from ptycho_layers.backends import keras_ops as ops

from ptycho_layers import onnx_export

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

NAME = "tensorflow"
# The operators' code: `ptycho_layers.xla`.
IMPLEMENTATION = "xla"
# Under XLA each piece of the batch is written into the output in place.
SPLITS_BATCH = True


def complex(real, imag):
    """real + i*imag, (...) float32/float64 -> complex64/complex128."""
    return tf.complex(real, imag)


def cos_sin(angles):
    """(cos, sin) of `angles` (...) float, in its dtype."""
    return tf.cos(angles), tf.sin(angles)


def where(condition, x, y):
    """Select (broadcasting); `keras.ops.where` makes complex128 complex64
    on TensorFlow."""
    return tf.where(condition, x, y)


def take(flat, positions):
    """flat (L,) at int32 positions (...) -> (...); `keras.ops.take` would
    add a pass mapping negative indices."""
    return tf.gather(flat, positions)


def add_at(values, positions, size):
    """zeros (size,) with values (M,) added at int32 positions (M,)."""
    return tf.math.unsorted_segment_sum(values, positions, size)


@functools.lru_cache(maxsize=None)
def _xla():
    """tf2xla's XLA ops (not public API: Keras's TensorFlow backend uses the
    same module for its dynamic updates), or None."""
    try:
        from tensorflow.compiler.tf2xla.python import xla
        from tensorflow.compiler.xla import xla_data_pb2
    except ImportError:
        return None
    return xla, xla_data_pb2


def _run_numbers(kind, starts, run_axis=None):
    """Gather or scatter dimension numbers for runs of a 2-D table at
    `starts` (..., 2) [row, first entry]: the run is the last axis of the
    result, or axis `run_axis` of the updates (by default their last)."""
    _, xla_data_pb2 = _xla()
    last = len(starts.shape) - 1
    if kind == "gather":
        numbers = xla_data_pb2.GatherDimensionNumbers()
        numbers.offset_dims.append(last)
        numbers.collapsed_slice_dims.append(0)
        numbers.start_index_map.extend([0, 1])
    else:
        numbers = xla_data_pb2.ScatterDimensionNumbers()
        numbers.update_window_dims.append(last if run_axis is None else run_axis)
        numbers.inserted_window_dims.append(0)
        numbers.scatter_dims_to_operand_dims.extend([0, 1])
    numbers.index_vector_dim = last
    return numbers


def _take_runs(table, starts, size):
    """Runs of `size` entries of `table` (A, L) at `starts` (..., 2) int32
    [row, first entry], (..., size); XLA moves a run that would leave its
    row. XLA-compiled code only."""
    xla, _ = _xla()
    found = xla.gather(table, starts, _run_numbers("gather", starts), [1, size])
    # XLA's gather has no shape inference for a batch unknown at tracing.
    found.set_shape(starts.shape[:-1].concatenate([size]))
    return found


def _add_runs(table, starts, runs, run_axis=None):
    """`table` (A, L) with `runs` added at `starts` (..., 2) int32 [row,
    first entry]: `runs` (..., size), or with the run on axis `run_axis`
    and the other axes those of `starts`' (...), in order. XLA-compiled
    code only."""
    xla, _ = _xla()
    numbers = _run_numbers("scatter", starts, run_axis)
    return xla.scatter(table, starts, runs, _add(runs.dtype), numbers)


@functools.lru_cache(maxsize=None)
def _add(dtype):
    """a + b on scalars of `dtype`, the scatter's combiner."""
    spec = tf.TensorSpec([], dtype)
    return tf.function(lambda a, b: a + b).get_concrete_function(spec, spec)


take_runs = _take_runs if _xla() is not None else None
add_runs = _add_runs if _xla() is not None else None


def _portable():
    """The kernels as plain TensorFlow operations that ONNX has, for the
    trace of an ONNX export: the element gather and scatter instead of
    XLA's runs, no conditionals, the batch in one piece. The same
    numbers (each window entry is read, weighted and summed alike). In
    this thread only (`backends.portable`): this module is left as it is,
    for any other thread computing meanwhile."""
    return backends.portable()


def fusion_boundary(fn, predicate):
    """`fn()` where XLA cannot fuse it with its consumers: a conditional
    whose branches are both `fn` (an optimisation barrier is dropped on
    CPU); `predicate` is any scalar bool computed from the data. XLA turns
    a conditional whose branches hold only elementwise operations into a
    select, so `fn` must hold a gather or a transpose. Plainly `fn()` in
    an ONNX export's trace (`backends.portable`)."""
    return ops.cond(predicate, fn, fn)


def _pad_rows(value, count, fill):
    """`value` (B, ...) with `count` rows of `fill` appended."""
    rows = tf.fill([count, *value.shape[1:]], tf.cast(fill, value.dtype))
    return tf.concat([value, rows], axis=0)


def differentiable(forward, gradients, ordered=True, elements=None):
    """`forward(x, offsets)` -> y, pure `keras.ops` code, XLA-compiled, with
    the written-out `gradients` (d_x, d_offsets), each (x, offsets,
    upstream) -> the gradient with respect to its argument, upstream being
    d loss / d y (for complex values TensorFlow's convention, dL/d re +
    i dL/d im). `ordered` is JAX's: here the passes are separate XLA
    functions, run one after the other.

    Each of the three is compiled per input shape and cached (inlined under
    an enclosing `jit_compile=True`); called eagerly at a new batch size,
    `forward` first runs a larger batch's program (`batch_sizes`). The
    custom gradient sits outside them, so in a graph a gradient nobody
    asks for is pruned. Called eagerly at shapes never met, `forward`
    runs uncompiled on the host where `elements(x, offsets)` (the window
    elements it moves) is small (`batch_sizes.HOST_ELEMENTS`). Traced for an
    ONNX export, `forward` runs uncompiled as ONNX-convertible operations
    (`_portable`): no converter reads an XLA function.
    """
    plain = forward
    # No AutoGraph: the kernels are Python over static shapes, with no
    # control flow on tensors, and converting each of their functions (the
    # closures of every piece and fusion boundary, anew per trace) was most
    # of the time a first call spent tracing.
    compiled = functools.partial(tf.function, jit_compile=True, autograph=False)
    forward = compiled(forward)
    d_x, d_offsets = (compiled(fn) for fn in gradients)
    forward = batch_sizes.Sized(forward, _EAGER_ROWS, host=plain, elements=elements)

    @tf.custom_gradient
    def operator(x, offsets):
        def gradient(upstream):
            d_offsets_value = None  # integer offsets have no gradient
            if offsets.dtype.is_floating:
                d_offsets_value = d_offsets(x, offsets, upstream)
            return d_x(x, offsets, upstream), d_offsets_value

        # Stopped: the gradient is `gradient`; a tape watching the inputs
        # would otherwise try to derive one for the compiled function.
        return forward(tf.stop_gradient(x), tf.stop_gradient(offsets)), gradient

    def dispatch(x, offsets):
        if not tf.executing_eagerly() and onnx_export.exporting():
            with _portable():
                return plain(x, offsets)
        return operator(x, offsets)

    dispatch.forward = forward
    return dispatch


def compiling():
    """False: `tf.function` traces Python as it runs, so the ONNX-export
    check may walk the stack (`onnx_export.exporting`); PyTorch's Dynamo
    cannot."""
    return False


def compiles_per_shape(*values):
    """Whether a call of an operator on `values` compiles a program for
    their shapes: eagerly, yes (each operator is XLA-compiled per input
    shape); traced, the caller's program holds the operator."""
    return tf.executing_eagerly()


_CACHE_FLAG = "--tf_xla_persistent_cache_directory="


def persistent_cache(directory):
    """XLA's persistent cache in `directory`: the flag in `TF_XLA_FLAGS`
    (any earlier setting of it replaced). TensorFlow reads the variable
    once, when it first looks at its devices (its first operation, or
    `tf.config.list_physical_devices`); once it has run an operation the
    setting would be silently ignored, so that is refused. Returns True."""
    from tensorflow.python.eager import context

    if getattr(context.context(), "_initialized", False):
        raise RuntimeError(
            "persistent_cache() must be called before TensorFlow's first "
            "operation: TensorFlow reads its XLA flags (TF_XLA_FLAGS) once, "
            "when it starts, and has started. Call it right after importing "
            "ptycho_layers, or set TF_XLA_FLAGS="
            f"{_CACHE_FLAG}{directory} before starting Python."
        )
    os.makedirs(directory, exist_ok=True)
    flags = [
        flag for flag in os.environ.get("TF_XLA_FLAGS", "").split()
        if not flag.startswith(_CACHE_FLAG)
    ]
    os.environ["TF_XLA_FLAGS"] = " ".join(flags + [_CACHE_FLAG + directory])
    return True


# What `batch_sizes.Sized` asks of a backend.
_EAGER_ROWS = types.SimpleNamespace(
    compiles_per_shape=compiles_per_shape,
    is_floating=lambda value: tf.as_dtype(value.dtype).is_floating,
    pad_rows=_pad_rows,
    first_rows=lambda value, count: value[:count],
    on_host=lambda value: "CPU" in getattr(value, "device", "CPU"),
    from_host=tf.convert_to_tensor,
)
