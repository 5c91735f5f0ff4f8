"""Windowed neighbourhood gather for the TensorFlow backend.

XLA's gather can take whole (N+1)x(N+1) windows, one contiguous copy per
window row instead of an index computation per element; TensorFlow exposes
it only in its tf2xla module (not public API: Keras' TensorFlow backend
uses the same module for its dynamic updates). XLA clamps a window start
that would run past an edge, which would silently shift the window, so the
windows are read from the object zero-padded by N+1 on every side; XLA
fuses the padding into the gather (bounds checks in the loop), so no padded
copy of the object is made.
"""

import functools

import tensorflow as tf

__all__ = ["available", "gather_windows"]


@functools.lru_cache(maxsize=None)
def _xla():
    try:
        from tensorflow.compiler.tf2xla.python import xla
        from tensorflow.compiler.xla import xla_data_pb2
    except ImportError:
        return None
    return xla, xla_data_pb2


def available():
    """True where TensorFlow has the XLA gather (else: element gather)."""
    return _xla() is not None


def gather_windows(images, image_index, x_start, y_start, size):
    """Windows of `size` x `size` entries, (B, c, size, size).

    Args:
        images: (Bi, H, W) with static H, W.
        image_index: (B,) int32, which image each row of offsets reads.
        x_start, y_start: (B, c) int32, each window's first column and row
            in object coordinates (may lie outside the object).
        size: N+1.

    Entries outside the object come back as zeros.
    """
    xla, xla_data_pb2 = _xla()
    _, height, width = images.shape
    numbers = xla_data_pb2.GatherDimensionNumbers()
    numbers.offset_dims.extend([2, 3])
    numbers.collapsed_slice_dims.append(0)
    numbers.start_index_map.extend([0, 1, 2])
    numbers.index_vector_dim = 2
    # Beyond these bounds a window reads only zeros, so clamping there
    # changes nothing and keeps every window inside the padded object.
    starts = tf.stack(
        [
            tf.broadcast_to(image_index[:, None], tf.shape(x_start)),
            tf.clip_by_value(y_start, -size, height) + size,
            tf.clip_by_value(x_start, -size, width) + size,
        ],
        axis=-1,
    )
    padded = tf.pad(images, [[0, 0], [size, size], [size, size]])
    found = xla.gather(padded, starts, numbers, [1, size, size])
    # XLA's gather has no shape inference for a batch unknown at tracing.
    found.set_shape(x_start.shape.concatenate([size, size]))
    return found
