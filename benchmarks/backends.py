"""What differs between Keras backends: compiling, waiting, copying, grads.

Compile modes, by name:

- ``"eager"``: the function as written, op by op.
- ``"graph"``: the backend's tracing compiler: ``tf.function``,
  ``jax.jit`` or ``torch.compile``.
- ``"xla"``: ``tf.function(jit_compile=True)``; TensorFlow only (``jax.jit``
  already is XLA, and torch has no XLA mode on CPU).
"""

import importlib.metadata

import keras
import numpy as np
from keras import ops

__all__ = ["name", "require", "prepare", "quiet_retracing", "mode_label",
           "mode_unavailable", "compile_fn", "peer_mode", "block", "to_tensor",
           "to_numpy", "native_copy", "native_copy_label", "value_and_grad",
           "versions"]

_GRAPH = {"tensorflow": "tf.function", "jax": "jax.jit", "torch": "torch.compile"}
_COPY = {"tensorflow": "tf.raw_ops.DeepCopy", "jax": "jnp.array(copy=True)",
         "torch": "torch.clone"}
_FFT = {"tensorflow": "tf.signal.fft2d/ifft2d", "jax": "jnp.fft.fft2/ifft2",
        "torch": "torch.fft.fft2/ifft2"}


def name():
    return keras.backend.backend()


def require(backend):
    """Fail clearly if Keras is running another backend than `backend`."""
    if backend is not None and backend != name():
        raise RuntimeError(
            f"Keras is already imported with backend {name()!r}, so the "
            f"{backend!r} backend cannot be benchmarked in this process: "
            f"set KERAS_BACKEND={backend} before Keras is imported (`python "
            f"-m benchmarks --backend {backend}` does)."
        )


def prepare(dtype):
    """Backend settings a dtype needs before any array is made."""
    if name() == "jax" and dtype in ("float64", "complex128"):
        # Without 64-bit mode JAX quietly computes float64 in float32.
        import jax

        jax.config.update("jax_enable_x64", True)


def quiet_retracing():
    """Silence TensorFlow's retracing warning: sweeps trace every function
    once per shape on purpose."""
    if name() == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")


def mode_label(mode):
    if mode == "graph":
        return _GRAPH[name()]
    if mode == "xla" and name() == "tensorflow":
        return "tf.function(jit_compile=True)"
    return {"eager": "eager", "xla": "XLA"}[mode]


def mode_unavailable(mode):
    """None if `mode` runs on this backend, else the reason it does not."""
    if mode == "xla" and name() == "jax":
        return "n/a: jax.jit is already XLA"
    if mode == "xla" and name() == "torch":
        return "n/a: no XLA mode on the torch backend"
    return None


def compile_fn(fn, mode):
    """`fn` (tensors -> tensor) wrapped for `mode` on this backend."""
    if mode == "eager":
        return fn
    if name() == "tensorflow":
        import tensorflow as tf

        # No AutoGraph: the functions use keras.ops control flow already.
        return tf.function(fn, jit_compile=(mode == "xla"), autograph=False)
    if mode == "xla":
        raise ValueError(mode_unavailable(mode))
    if name() == "jax":
        import jax

        return jax.jit(fn)
    import torch

    return torch.compile(fn)


def peer_mode():
    """How peers run: traced on TensorFlow and JAX (as they would inside a
    model), eager on torch (compiling a per-patch loop is not practical)."""
    return "eager" if name() == "torch" else "graph"


def block(value):
    """Wait until `value` (a tensor, numpy array or tuple) is computed."""
    if name() == "jax":
        import jax

        jax.block_until_ready(value)
    elif name() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    else:
        import tensorflow as tf

        # Eager CPU ops return finished results; GPU ops are queued.
        if tf.config.list_logical_devices("GPU"):
            tf.test.experimental.sync_devices()
    return value


def to_tensor(array):
    return ops.convert_to_tensor(array)


def to_numpy(value):
    return value if isinstance(value, np.ndarray) else ops.convert_to_numpy(value)


def native_copy(tensor):
    """A fresh copy of `tensor` made by the backend itself."""
    if name() == "tensorflow":
        import tensorflow as tf

        # tf.identity may alias its input; DeepCopy always copies.
        return tf.raw_ops.DeepCopy(x=tensor)
    if name() == "jax":
        import jax.numpy as jnp

        return jnp.array(tensor, copy=True)
    import torch

    return torch.clone(tensor)


def native_copy_label():
    return _COPY[name()]


def fft_label():
    """The backend's FFT functions, as `peers.fft_round_trip` calls them."""
    return _FFT[name()]


def value_and_grad(loss_fn, mode):
    """(x, offsets) -> (loss, d loss / d x), compiled for `mode` (torch:
    always eager, autograd); `loss_fn(x, offsets)` is a real scalar, x the
    object for extraction, the patches for placement."""
    if name() == "tensorflow":
        import tensorflow as tf

        def step(x, offsets):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_fn(x, offsets)
            return loss, tf.convert_to_tensor(tape.gradient(loss, x))

        return compile_fn(step, mode)
    if name() == "jax":
        import jax

        return compile_fn(jax.value_and_grad(loss_fn), mode)

    def torch_step(x, offsets):
        x = x.detach().requires_grad_(True)
        loss = loss_fn(x, offsets)
        loss.backward()
        return loss.detach(), x.grad

    return torch_step


def versions():
    """Installed versions of the packages the benchmark depends on."""
    found = {}
    for package in ("keras", "numpy", "tensorflow", "jax", "jaxlib", "torch"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found
