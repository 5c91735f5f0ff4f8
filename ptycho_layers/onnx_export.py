"""ONNX export: knowing that it is under way, and refusing what ONNX
cannot hold.

Keras's `model.export(path, format="onnx")` traces the model once, then
converts the trace (tf2onnx on TensorFlow, `torch.onnx` on PyTorch). The
TensorFlow backend's fast path is XLA-compiled, which no converter reads:
while an export traces it, it runs instead as plain operations ONNX has
(see `backends.tensorflow.differentiable`), with the same numbers. ONNX
Runtime has no complex arithmetic, so complex objects and patches, and
the Fourier kernel (its FFTs are of complex values), are refused here,
when the export traces the layer, rather than by a converter or a
runtime later.
"""

import contextlib
import sys
import threading

from keras.backend import standardize_dtype

from ptycho_layers import backends

__all__ = ["exporting", "for_onnx", "check_real", "check_kernel"]

# The module whose functions run the trace in `model.export(format="onnx")`.
_KERAS_EXPORTER = "keras.src.export.onnx"


class _Forced(threading.local):
    """How many `for_onnx()` blocks this thread is in: another thread
    computing meanwhile is not exporting."""

    depth = 0


_FORCED = _Forced()


def exporting():
    """Whether the caller runs for an ONNX export: inside Keras's
    `model.export(..., format="onnx")` (a function of Keras's ONNX
    exporter module is on the call stack; `tests/test_export.py` fails if
    Keras moves it) or a `for_onnx()` block of this thread. It walks the stack, so the
    callers ask only while tracing or for a complex dtype; not while
    `torch.compile` traces the caller (the backend's `compiling()`), which
    is no export and cannot trace the walk."""
    if _FORCED.depth:
        return True
    if backends.current().compiling():
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == _KERAS_EXPORTER:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def for_onnx():
    """Trace the layers as for ONNX outside `model.export`, e.g. around
    `tf2onnx.convert.from_keras(model)` or a `tf.function` handed to
    another converter: in this thread, which must be the one that traces."""
    _FORCED.depth += 1
    try:
        yield
    finally:
        _FORCED.depth -= 1


def check_real(dtype, argument):
    """Raise ValueError if an ONNX export traces a complex `argument`.

    Args:
        dtype: the tensor's dtype; argument: its name, for the message.
    """
    dtype = standardize_dtype(dtype)
    if dtype not in ("complex64", "complex128") or not exporting():
        return
    raise ValueError(
        f"Cannot export {argument} of dtype {dtype} to ONNX: ONNX Runtime "
        "has no complex arithmetic. Export real models instead: for a "
        "held complex object, one model holding its real part and one "
        "holding its imaginary part (extraction and placement are linear, "
        "so the patches are the first plus i times the second); for "
        "complex inputs, pass the real and imaginary parts through the same "
        f"real model. Received: {argument} of dtype {dtype}"
    )


def check_kernel(interpolation):
    """Raise ValueError if an ONNX export traces the Fourier kernel: its
    FFTs are of complex values, which tf2onnx does not convert (it writes
    a model ONNX Runtime refuses to load) and `torch.onnx` cannot trace
    (it has no `fftfreq`).

    Args:
        interpolation: the layer's kernel name.
    """
    if interpolation != "fourier" or not exporting():
        return
    raise ValueError(
        "Cannot export interpolation='fourier' to ONNX: its FFTs are of "
        "complex values, which ONNX Runtime has no arithmetic for. Export "
        "a model with interpolation='bilinear' or 'nearest', or save the "
        "model as .keras or a SavedModel. Received: "
        f"interpolation={interpolation!r}"
    )
