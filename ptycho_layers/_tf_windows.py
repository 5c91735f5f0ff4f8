"""Windowed neighbourhood gather and scatter for the TensorFlow backend.

XLA's gather and scatter can take whole (N+1)x(N+1) windows, one
contiguous copy per window row instead of an index computation per element;
TensorFlow exposes them only in its tf2xla module (not public API: Keras'
TensorFlow backend uses the same module for its dynamic updates). XLA
moves (gather) or drops (scatter) a window that runs past an edge, so both
work on the object padded by N+1 on every side, where every window fits:
the gather reads the object zero-padded (XLA fuses the padding into the
gather, so no padded copy of the object is made); the scatter adds into
padded zeros and cuts the object out of the middle.
"""

import functools

import tensorflow as tf

__all__ = ["available", "gather_windows", "add_windows"]


@functools.lru_cache(maxsize=None)
def _xla():
    try:
        from tensorflow.compiler.tf2xla.python import xla
        from tensorflow.compiler.xla import xla_data_pb2
    except ImportError:
        return None
    return xla, xla_data_pb2


def available():
    """True where TensorFlow has XLA's gather and scatter (else: the
    element gather and scatter serve)."""
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
    starts = _padded_starts(image_index, x_start, y_start, size, height, width)
    padded = tf.pad(images, [[0, 0], [size, size], [size, size]])
    found = xla.gather(padded, starts, numbers, [1, size, size])
    # XLA's gather has no shape inference for a batch unknown at tracing.
    found.set_shape(x_start.shape.concatenate([size, size]))
    return found


def add_windows(contributions, image_index, x_start, y_start, shape):
    """Zeros of `shape` (Bi, H, W) with window (b, k) of `contributions`
    (B, c, size, size) added at rows y_start[b, k]..., columns
    x_start[b, k]... of image image_index[b], as one XLA scatter of whole
    windows (about twice as fast as adding element by element). Entries
    outside the images are dropped.
    """
    xla, xla_data_pb2 = _xla()
    size = contributions.shape[-1]
    count, height, width = shape
    numbers = xla_data_pb2.ScatterDimensionNumbers()
    numbers.update_window_dims.extend([2, 3])
    numbers.inserted_window_dims.append(0)
    numbers.scatter_dims_to_operand_dims.extend([0, 1, 2])
    numbers.index_vector_dim = 2
    starts = _padded_starts(image_index, x_start, y_start, size, height, width)
    padded = tf.zeros(
        [count, height + 2 * size, width + 2 * size], contributions.dtype
    )
    padded = xla.scatter(
        padded, starts, contributions, _add(contributions.dtype), numbers
    )
    return padded[:, size:size + height, size:size + width]


def _padded_starts(image_index, x_start, y_start, size, height, width):
    """(B, c, 3) [image, row, column] starts of the windows in the images
    padded by `size` on every side. Beyond [-size, extent] a window lies
    wholly outside the object (reads zeros, adds zeros), so clamping there
    changes nothing and keeps every window inside the padded images."""
    return tf.stack(
        [
            tf.broadcast_to(image_index[:, None], tf.shape(x_start)),
            tf.clip_by_value(y_start, -size, height) + size,
            tf.clip_by_value(x_start, -size, width) + size,
        ],
        axis=-1,
    )


@functools.lru_cache(maxsize=None)
def _add(dtype):
    """a + b on scalars of `dtype`, the scatter's combiner."""
    spec = tf.TensorSpec([], dtype)
    return tf.function(lambda a, b: a + b).get_concrete_function(spec, spec)
