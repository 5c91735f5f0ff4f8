"""Everything specific to one Keras backend, one module per backend.

Each module offers the same functions and constants (the contract in
`docs/architecture.md`), which the implementations and the operators call
through `current()`; nothing outside them names a backend.

The `keras.ops` code calls `keras.ops` through `keras_ops`, which is
`keras.ops` itself except inside `graph_scope_for`: there (TensorFlow
tensors under JAX or PyTorch, as in `tf.data.Dataset.map`) both
`keras_ops` and `current()` give TensorFlow's implementations.
"""

import contextlib
import functools
import importlib
import sys
import threading

import keras
from keras import tree
from keras.backend import standardize_dtype

__all__ = ["SUPPORTED", "current", "name", "keras_ops", "graph_scope_for"]

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
    (AutoGraph)."""
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
    return module


class _Scope(threading.local):
    tensorflow_graph = False


_SCOPE = _Scope()


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
