"""Everything specific to one Keras backend, one module per backend.

Each module offers the same small set of functions and constants (the
contract in `docs/architecture.md`); the math in `ptycho_layers.ops` calls
them through `current()` and never names a backend itself:

- `complex(real, imag)`: real + i*imag, complex64 or complex128 as the
  parts are float32 or float64.
- `where(condition, x, y)`: elementwise select that keeps complex128.
- `take(flat, positions)`: the element gather, flat (L,) at int32
  positions (...) -> (...).
- `add_at(values, positions, size)`: the element scatter-add, zeros (size,)
  with values (M,) added at int32 positions (M,).
- `take_runs(table, starts, size)` and `add_runs(table, starts, runs)`:
  XLA's gather and scatter-add of contiguous runs of a 2-D table (see
  `ops.runs`), or None where the backend has no such primitive.
- `fusion_boundary(fn, predicate)`: `fn()` where a compiler cannot fuse it
  with what reads it, or plainly `fn()`.
- `SPLITS_BATCH`: whether taking a large batch in pieces saves memory
  (XLA writes each piece into the output in place).
- `differentiable(forward, gradients)`: the backend's compiled, differentiable
  form of a two-argument operator (see `ptycho_layers.operators`).
"""

import importlib

import keras

__all__ = ["SUPPORTED", "current", "name"]

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
    backend = name()
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
