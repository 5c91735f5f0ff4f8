"""Everything specific to one Keras backend, one module per backend.

Each module offers the same functions and constants (the contract in
`docs/architecture.md`), which the implementations and the operators call
through `current()`; nothing outside them names a backend.

The `keras.ops` code calls `keras.ops` through `keras_ops`, which is
`keras.ops` itself except inside `graph_scope_for`: there (TensorFlow
tensors under JAX or PyTorch, as in `tf.data.Dataset.map`) both
`keras_ops` and `current()` give TensorFlow's implementations. Inside
`portable()`, `current()` gives the backend without XLA's runs, as an ONNX
export traces it. Both scopes are the calling thread's alone.
"""

import contextlib
import functools
import importlib
import sys
import threading
import types

import keras
from keras import tree
from keras.backend import standardize_dtype

__all__ = [
    "SUPPORTED", "current", "name", "keras_ops", "graph_scope_for", "portable", "variable_value",
]

SUPPORTED = ("tensorflow", "jax", "torch")


def name():
    """The Keras backend in use, e.g. "tensorflow"."""
    return keras.backend.backend()


_LOADED = {}


def current():
    """The module of `ptycho_layers.backends` for the Keras backend in use.

    Loaded once (when `ptycho_layers` is imported), then looked up: the
    kernels ask for it while TensorFlow, JAX or `torch.compile` trace them,
    and tracing the import machinery fails (`torch.compile`) or warns
    (AutoGraph). Inside `portable()`, its portable view."""
    backend = "tensorflow" if _SCOPE.tensorflow_graph else name()
    module = _LOADED.get(backend)
    if module is None:
        if backend not in SUPPORTED:
            raise ValueError(
                f"ptycho_layers runs on the Keras backends {list(SUPPORTED)}. "
                f"Received: KERAS_BACKEND={backend!r}"
            )
        module = importlib.import_module(f"ptycho_layers.backends.{backend}")
        _LOADED[backend] = module
    if _SCOPE.portable:
        return _portable_view(module)
    return module


class _Scope(threading.local):
    tensorflow_graph = False
    portable = False


_SCOPE = _Scope()


@contextlib.contextmanager
def portable():
    """In this thread, `current()` gives the backend's portable view: the
    same names, but no run gather or scatter (`take_runs = add_runs =
    None`), the batch in one piece (`SPLITS_BATCH = False`) and
    `fusion_boundary` a plain call; the kernels then trace as element
    gathers and scatters ONNX has (`backends.tensorflow.differentiable`,
    for an ONNX export). Another thread computing meanwhile keeps the
    backend's own."""
    saved = _SCOPE.portable
    _SCOPE.portable = True
    try:
        yield
    finally:
        _SCOPE.portable = saved


def _plain_call(fn, predicate):
    """`fn()`: no fusion boundary (a conditional) in a portable trace."""
    del predicate
    return fn()


@functools.lru_cache(maxsize=None)  # one per backend module
def _portable_view(module):
    """`module`'s contract with the portable primitives in place of XLA's."""
    names = {name: getattr(module, name) for name in module.__all__}
    names.update(
        take_runs=None, add_runs=None, SPLITS_BATCH=False, fusion_boundary=_plain_call
    )
    return types.SimpleNamespace(**names)


def _is_tensorflow_tensor(value):
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.Tensor)


@contextlib.contextmanager
def graph_scope_for(inputs):
    """Run the operators in TensorFlow ops while `inputs` are TensorFlow
    tensors under another backend: a `tf.data.Dataset.map`, which traces
    its function into a TensorFlow graph whatever Keras's backend (Keras's
    own preprocessing layers switch to TensorFlow there too). Elsewhere,
    this does nothing.

    Decided from the inputs, not from TensorFlow's state: JAX's export
    traces JAX code inside a TensorFlow graph, with JAX tracers as inputs.
    """
    switch = (
        name() != "tensorflow"
        and not _SCOPE.tensorflow_graph
        and any(_is_tensorflow_tensor(x) for x in tree.flatten(inputs))
    )
    if not switch:
        yield False
        return
    _SCOPE.tensorflow_graph = True
    try:
        yield True
    finally:
        _SCOPE.tensorflow_graph = False


def variable_value(variable):
    """A layer's weight `variable` as a tensor of the code being traced.

    Inside `graph_scope_for` (a TensorFlow graph under JAX or PyTorch:
    `tf.data.Dataset.map`), the weight's value read each time the graph
    runs, not the value it had when the graph was traced, so that a
    pipeline sees the weight as it is now (as it does on TensorFlow);
    elsewhere the variable itself."""
    if not _SCOPE.tensorflow_graph:
        return variable
    tf = importlib.import_module("tensorflow")

    def read():
        return keras.ops.convert_to_numpy(variable.value)

    value = tf.numpy_function(read, [], tf.as_dtype(standardize_dtype(variable.dtype)), stateful=True)
    value.set_shape(variable.shape)
    return value


class _KerasOps:
    """`keras.ops`, or, inside `graph_scope_for`, Keras's TensorFlow
    implementations of the same functions, which take TensorFlow tensors
    under any backend."""

    def __getattr__(self, op):
        if _SCOPE.tensorflow_graph:
            return _tensorflow_op(op)
        return getattr(keras.ops, op)


keras_ops = _KerasOps()


@functools.lru_cache(maxsize=None)
def _tensorflow_op(op):
    if op == "dtype":
        return lambda x: standardize_dtype(x.dtype)
    implementation = importlib.import_module("keras.src.backend.tensorflow")
    for group in ("numpy", "core", "math", "nn", "linalg"):
        function = getattr(getattr(implementation, group), op, None)
        if function is not None:
            return function
    raise AttributeError(f"No TensorFlow implementation of keras.ops.{op}")


# Loaded now, not first inside a traced kernel (see `current`); another
# Keras backend is refused when the operators are used.
if name() in SUPPORTED:
    current()
