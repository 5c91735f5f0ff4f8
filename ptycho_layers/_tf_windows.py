"""XLA's run gather and scatter for the TensorFlow backend.

XLA's gather and scatter copy or add whole slices, one contiguous run per
window row (see `windows`); TensorFlow exposes them only in its tf2xla
module (not public API: Keras' TensorFlow backend uses the same module for
its dynamic updates). Both run only XLA-compiled, as the kernel does on
TensorFlow.
"""

import functools

import tensorflow as tf

from ptycho_layers import windows

__all__ = ["available", "take_runs", "add_windows"]


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


def _run_numbers(kind, starts):
    """Gather or scatter dimension numbers for runs of a 2-D table at
    `starts` (..., 2) [row, first entry]: the run is the last axis of the
    result (or of the updates)."""
    xla, xla_data_pb2 = _xla()
    last = len(starts.shape) - 1
    if kind == "gather":
        numbers = xla_data_pb2.GatherDimensionNumbers()
        numbers.offset_dims.append(last)
        numbers.collapsed_slice_dims.append(0)
        numbers.start_index_map.extend([0, 1])
    else:
        numbers = xla_data_pb2.ScatterDimensionNumbers()
        numbers.update_window_dims.append(last)
        numbers.inserted_window_dims.append(0)
        numbers.scatter_dims_to_operand_dims.extend([0, 1])
    numbers.index_vector_dim = last
    return numbers


def take_runs(table, starts, size):
    """Runs of `size` entries of `table` (A, L) at `starts` (..., 2) int32
    [row, first entry], (..., size); XLA moves a run that would leave its
    row."""
    xla, _ = _xla()
    found = xla.gather(table, starts, _run_numbers("gather", starts), [1, size])
    # XLA's gather has no shape inference for a batch unknown at tracing.
    found.set_shape(starts.shape[:-1].concatenate([size]))
    return found


def add_windows(contributions, image_index, x_start, y_start, shape):
    """Zeros of `shape` (Bi, H, W), W >= size, with window (b, k) of
    `contributions` (B, c, size, size) added at rows y_start[b, k]...,
    columns x_start[b, k]... of image image_index[b], entries outside the
    object dropped: the adjoint of `windows.gather_windows`, as XLA
    scatters of runs (about twice as fast as adding element by element).

    Each window row is added as a run of the flattened images, save the
    rows the gather read from the padded first and last object rows: those
    are added there, then into rows 0 and H-1. No object-sized buffer but
    the result.
    """
    xla, _ = _xla()
    size = contributions.shape[-1]
    count, height, width = shape
    x_start, y_start = windows.clamp_starts(x_start, y_start, size, height, width)
    rows, columns, image, starts = windows.runs(
        image_index, x_start, y_start, size, height, width
    )
    replaced, edge_starts = windows.moved_rows(
        image, x_start, y_start, size, height, width
    )
    zeros = tf.zeros_like(contributions)
    keep = tf.logical_and(
        windows.inside(rows, columns, height, width), tf.logical_not(replaced)
    )
    # A run XLA cannot place whole (one the gather moved) holds zeros here,
    # whether XLA drops it or moves it.
    in_runs = tf.where(keep, contributions, zeros)
    # The replaced row of each window (zeros where none was), picked out:
    # a sum over the rows would make XLA read every window whole.
    which = tf.argmax(tf.cast(replaced[..., 0], tf.int32), axis=-1, output_type=tf.int32)
    in_edges = tf.gather(contributions, which, axis=2, batch_dims=2)
    any_replaced = tf.reduce_any(replaced, axis=(2, 3))[..., None]
    in_edges = tf.where(any_replaced, in_edges, tf.zeros_like(in_edges))

    add = _add(contributions.dtype)
    flat = tf.zeros([count, height * width], contributions.dtype)
    flat = xla.scatter(flat, starts, in_runs, add, _run_numbers("scatter", starts))
    ends = tf.zeros([count * 2, width + 2 * size], contributions.dtype)
    ends = xla.scatter(
        ends, edge_starts, in_edges, add, _run_numbers("scatter", edge_starts)
    )
    ends = tf.reshape(ends[:, size:size + width], [count, 2, width])

    total = tf.reshape(flat, [count, height, width])
    # Rows 0 and H-1 take what was added to the first and last rows, in
    # place (the same row when H = 1).
    for row, end in ((0, 0), (height - 1, 1)):
        updated = total[:, row:row + 1] + ends[:, end:end + 1]
        total = xla.dynamic_update_slice(total, updated, tf.constant([0, row, 0]))
    return total


@functools.lru_cache(maxsize=None)
def _add(dtype):
    """a + b on scalars of `dtype`, the scatter's combiner."""
    spec = tf.TensorSpec([], dtype)
    return tf.function(lambda a, b: a + b).get_concrete_function(spec, spec)
