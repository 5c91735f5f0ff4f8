"""Everything specific to one Keras backend, one module per backend.

Each module offers the same functions and constants (the contract in
`docs/architecture.md`), which the implementations and the operators call
through `current()`; nothing outside them names a backend.

The `keras.ops` code calls `keras.ops` through `keras_ops`, which is
`keras.ops` itself except inside `graph_scope_for`: there (TensorFlow
tensors under JAX or PyTorch, as in `tf.data.Dataset.map`) both
`keras_ops` and `current()` give TensorFlow's implementations. Inside
`portable()`, `current()` gives the backend without XLA's runs, as an ONNX
export traces it. Inside `on_host()` both give NumPy's (`backends.numpy`):
the kernels run on host arrays, compiling nothing. The scopes are the
calling thread's alone.
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
    "SUPPORTED", "current", "name", "keras_ops", "graph_scope_for", "portable", "on_host",
    "variable_value",
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
    backend = _SCOPE.backend or name()
    module = _LOADED.get(backend)
    if module is None:
        if backend not in SUPPORTED + ("numpy",):
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
    # The backend whose operations run, where it is not Keras's:
    # "tensorflow" inside `graph_scope_for`, "numpy" inside `on_host`.
    backend = None
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


@contextlib.contextmanager
def on_host():
    """In this thread, `keras_ops` and `current()` give NumPy's
    implementations (`backends.numpy`): the XLA implementation's kernels
    run op by op on NumPy arrays, compiling nothing (`batch_sizes.Sized`,
    for an eager call at shapes never met)."""
    saved = _SCOPE.backend
    _SCOPE.backend = "numpy"
    try:
        yield
    finally:
        _SCOPE.backend = saved


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
        and _SCOPE.backend is None
        and any(_is_tensorflow_tensor(x) for x in tree.flatten(inputs))
    )
    if not switch:
        yield False
        return
    _SCOPE.backend = "tensorflow"
    try:
        yield True
    finally:
        _SCOPE.backend = None


def variable_value(variable):
    """A layer's weight `variable` as a tensor of the code being traced.

    Inside `graph_scope_for` (a TensorFlow graph under JAX or PyTorch:
    `tf.data.Dataset.map`), the weight's value read each time the graph
    runs, not the value it had when the graph was traced, so that a
    pipeline sees the weight as it is now (as it does on TensorFlow);
    elsewhere the variable itself."""
    if _SCOPE.backend != "tensorflow":
        return variable
    tf = importlib.import_module("tensorflow")

    def read():
        return keras.ops.convert_to_numpy(variable.value)

    value = tf.numpy_function(read, [], tf.as_dtype(standardize_dtype(variable.dtype)), stateful=True)
    value.set_shape(variable.shape)
    return value


class _KerasOps:
    """`keras.ops`, or, inside `graph_scope_for` (`on_host`), Keras's
    TensorFlow (NumPy) implementations of the same functions, which take
    TensorFlow tensors (NumPy arrays) under any backend."""

    def __getattr__(self, op):
        if _SCOPE.backend is not None:
            return _backend_op(_SCOPE.backend, op)
        return getattr(keras.ops, op)


keras_ops = _KerasOps()


@functools.lru_cache(maxsize=None)
def _backend_op(backend, op):
    """Keras's implementation of `keras.ops.<op>` for `backend`; on the
    host, this package's (`numpy_ops`)."""
    if backend == "numpy":
        return getattr(importlib.import_module("ptycho_layers.backends.numpy_ops"), op)
    if op == "dtype":
        return lambda x: standardize_dtype(x.dtype)
    implementation = importlib.import_module(f"keras.src.backend.{backend}")
    for group in ("numpy", "core", "math", "nn", "linalg"):
        function = getattr(getattr(implementation, group), op, None)
        if function is not None:
            return function
    raise AttributeError(f"No {backend} implementation of keras.ops.{op}")


# Loaded now, not first inside a traced kernel (see `current`); another
# Keras backend is refused when the operators are used.
if name() in SUPPORTED:
    current()
