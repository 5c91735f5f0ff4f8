"""Windowed neighbourhood gather and scatter for the TensorFlow backend.

XLA's gather and scatter can take whole slices, one contiguous copy per
window row instead of an index computation per element; TensorFlow exposes
them only in its tf2xla module (not public API: Keras' TensorFlow backend
uses the same module for its dynamic updates). XLA moves (gather) or drops
(scatter) a slice that runs past an edge, so neither can read or write a
window overlapping the object's edge as it is:

- the gather reads each window row as a run of the flattened object
  (`_gather_rows`), where only two rows of the object can make XLA move a
  run; those come from a small zero-padded copy of the first and last rows;
- the scatter adds whole windows into zeros padded by N+1 on every side
  and cuts the object out of the middle.
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
    _, height, width = images.shape
    # Beyond [-size, extent] a window lies wholly outside the object, so
    # clamping there changes nothing.
    x_start = tf.clip_by_value(x_start, -size, width)
    y_start = tf.clip_by_value(y_start, -size, height)
    if width < size:
        found = _gather_padded(images, image_index, x_start, y_start, size)
    else:
        found = _gather_rows(images, image_index, x_start, y_start, size)
    # XLA's gather has no shape inference for a batch unknown at tracing.
    found.set_shape(x_start.shape.concatenate([size, size]))
    return found


def _gather_rows(images, image_index, x_start, y_start, size):
    """`gather_windows` for objects at least `size` wide, row by row.

    Window row r is the run of `size` entries of the flattened image that
    starts at (y_start + r) * W + x_start, the row clamped into the object.
    Where a window sticks out left or right, its run carries on into the
    next or previous object row; rows and columns outside the object are
    set to zero in the same loop. With W >= size, XLA has to move a run
    (to keep it inside the flattened image) only for object row 0 of a
    window starting left of the object and for row H-1 of one ending right
    of it, at most one row per window: that row is read instead from the
    first and last object rows padded by `size` zeros at both ends.

    Reading from the object zero-padded (as `_gather_padded` does) would
    be simpler, but XLA then tests every element against the padding,
    which keeps the copy from vectorising: 2x slower from an object too
    large for the cache (2048x2048), no faster from a small one.
    """
    xla, xla_data_pb2 = _xla()
    _, height, width = images.shape
    rows, columns, image, runs = _runs(image_index, x_start, y_start, size, height, width)
    numbers = xla_data_pb2.GatherDimensionNumbers()
    numbers.offset_dims.append(3)
    numbers.collapsed_slice_dims.append(0)
    numbers.start_index_map.extend([0, 1])
    numbers.index_vector_dim = 3
    flat = tf.reshape(images, [-1, height * width])
    found = xla.gather(flat, runs, numbers, [1, size])
    inside = tf.logical_and(
        _within(rows, height)[..., :, None], _within(columns, width)[..., None, :]
    )
    found = tf.where(inside, found, tf.zeros_like(found))

    # The moved rows, from the first and last object rows zero-padded.
    replaced, edge_starts = _moved_rows(image, x_start, y_start, size, height, width)
    ends = tf.pad(
        tf.gather(images, [0, height - 1], axis=1), [[0, 0], [0, 0], [size, size]]
    )
    numbers = xla_data_pb2.GatherDimensionNumbers()
    numbers.offset_dims.append(2)
    numbers.collapsed_slice_dims.extend([0, 1])
    numbers.start_index_map.extend([0, 1, 2])
    numbers.index_vector_dim = 2
    edge_rows = xla.gather(ends, edge_starts, numbers, [1, 1, size])  # (B, c, size)
    return tf.where(replaced, edge_rows[..., None, :], found)


def _runs(image_index, x_start, y_start, size, height, width):
    """Where each window row lies in the flattened images.

    Returns (rows, columns, image, runs): the object row and column of
    each window row and column, (B, c, size) int32 each; the image of each
    window, (B, c); and [image, flat start] of each window row's run,
    (B, c, size, 2), its row clamped into the object.
    """
    steps = tf.range(size)
    rows = y_start[..., None] + steps
    columns = x_start[..., None] + steps
    image = tf.broadcast_to(image_index[:, None], tf.shape(x_start))
    runs = tf.stack(
        [
            tf.broadcast_to(image[..., None], tf.shape(rows)),
            tf.clip_by_value(rows, 0, height - 1) * width + x_start[..., None],
        ],
        axis=-1,
    )
    return rows, columns, image, runs


def _moved_rows(image, x_start, y_start, size, height, width):
    """The window rows whose run XLA would move, and where they lie in the
    first and last object rows padded by `size` zeros at both ends.

    Returns (replaced, edge_starts): (B, c, size, 1) bool, true at the
    window row holding object row 0 of a window starting left of the
    object or row H-1 of one ending right of it (at most one per window,
    as W >= size); and (B, c, 3) [image, 0 first / 1 last, column] starts
    in the padded rows.
    """
    left = x_start < 0
    right = x_start > width - size
    moved = tf.where(left, -y_start, tf.where(right, height - 1 - y_start, -1))
    replaced = tf.equal(tf.range(size), moved[..., None])[..., :, None]
    edge_starts = tf.stack([image, tf.cast(right, tf.int32), x_start + size], axis=-1)
    return replaced, edge_starts


def _within(index, extent):
    return tf.logical_and(index >= 0, index < extent)


def _gather_padded(images, image_index, x_start, y_start, size):
    """`gather_windows` from the object zero-padded by `size` on every
    side, where every window fits (XLA fuses the padding into the gather,
    so no padded copy of the object is made)."""
    xla, xla_data_pb2 = _xla()
    _, height, width = images.shape
    numbers = xla_data_pb2.GatherDimensionNumbers()
    numbers.offset_dims.extend([2, 3])
    numbers.collapsed_slice_dims.append(0)
    numbers.start_index_map.extend([0, 1, 2])
    numbers.index_vector_dim = 2
    starts = _padded_starts(image_index, x_start, y_start, size, height, width)
    padded = tf.pad(images, [[0, 0], [size, size], [size, size]])
    return xla.gather(padded, starts, numbers, [1, size, size])


def add_windows(contributions, image_index, x_start, y_start, shape):
    """Zeros of `shape` (Bi, H, W) with window (b, k) of `contributions`
    (B, c, size, size) added at rows y_start[b, k]..., columns
    x_start[b, k]... of image image_index[b]: the adjoint of
    `gather_windows` (entries outside the images are dropped), as XLA
    scatters of whole runs (about twice as fast as adding element by
    element).
    """
    size = contributions.shape[-1]
    _, height, width = shape
    x_start = tf.clip_by_value(x_start, -size, width)
    y_start = tf.clip_by_value(y_start, -size, height)
    if width < size:
        return _add_padded(contributions, image_index, x_start, y_start, shape)
    return _add_rows(contributions, image_index, x_start, y_start, shape)


def _add_rows(contributions, image_index, x_start, y_start, shape):
    """`add_windows` for images at least `size` wide, the adjoint of
    `_gather_rows`: each window row is added as a run of the flattened
    images, except the entries outside the object (dropped) and the rows
    that gather read from the padded first and last object rows (added
    there, then into rows 0 and H-1). No object-sized buffer but the
    result."""
    xla, xla_data_pb2 = _xla()
    size = contributions.shape[-1]
    count, height, width = shape
    rows, columns, image, runs = _runs(image_index, x_start, y_start, size, height, width)
    replaced, edge_starts = _moved_rows(image, x_start, y_start, size, height, width)
    zeros = tf.zeros_like(contributions)
    inside = tf.logical_and(
        _within(rows, height)[..., :, None], _within(columns, width)[..., None, :]
    )
    in_runs = tf.where(tf.logical_and(inside, tf.logical_not(replaced)), contributions, zeros)
    # At most one row per window was replaced: its entries, (B, c, size),
    # picked out (a sum over the rows would read every window whole).
    row = tf.argmax(tf.cast(replaced[..., 0], tf.int32), axis=-1, output_type=tf.int32)
    in_edges = tf.gather(contributions, row, axis=2, batch_dims=2)
    in_edges = tf.where(tf.reduce_any(replaced, axis=(2, 3))[..., None], in_edges, tf.zeros_like(in_edges))

    numbers = xla_data_pb2.ScatterDimensionNumbers()
    numbers.update_window_dims.append(3)
    numbers.inserted_window_dims.append(0)
    numbers.scatter_dims_to_operand_dims.extend([0, 1])
    numbers.index_vector_dim = 3
    # A run XLA cannot place whole (the ones gather moved) holds zeros
    # here, whether XLA drops it or moves it.
    flat = tf.zeros([count, height * width], contributions.dtype)
    flat = xla.scatter(flat, runs, in_runs, _add(contributions.dtype), numbers)

    numbers = xla_data_pb2.ScatterDimensionNumbers()
    numbers.update_window_dims.append(2)
    numbers.inserted_window_dims.extend([0, 1])
    numbers.scatter_dims_to_operand_dims.extend([0, 1, 2])
    numbers.index_vector_dim = 2
    ends = tf.zeros([count, 2, width + 2 * size], contributions.dtype)
    ends = xla.scatter(ends, edge_starts, in_edges, _add(contributions.dtype), numbers)
    ends = ends[:, :, size:size + width]

    total = tf.reshape(flat, [count, height, width])
    # Rows 0 and H-1 take what was added to the first and last rows, in
    # place (the same row when H = 1).
    for row, end in ((0, 0), (height - 1, 1)):
        start = tf.constant([0, row, 0], tf.int32)
        updated = total[:, row:row + 1] + ends[:, end:end + 1]
        total = xla.dynamic_update_slice(total, updated, start)
    return total


def _add_padded(contributions, image_index, x_start, y_start, shape):
    """`add_windows` into zeros padded by `size` on every side, where every
    window fits, cutting the images out of the middle."""
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
    padded by `size` on every side (starts already clamped into
    [-size, extent], where every window fits the padded images)."""
    return tf.stack(
        [
            tf.broadcast_to(image_index[:, None], tf.shape(x_start)),
            y_start + size,
            x_start + size,
        ],
        axis=-1,
    )


@functools.lru_cache(maxsize=None)
def _add(dtype):
    """a + b on scalars of `dtype`, the scatter's combiner."""
    spec = tf.TensorSpec([], dtype)
    return tf.function(lambda a, b: a + b).get_concrete_function(spec, spec)
