"""Each patch's whole (N+1)x(N+1) neighbourhood, gathered as runs.

XLA's gather can copy whole slices, one contiguous run per window row,
where an element gather computes an index for every entry; TensorFlow and
JAX both reach it (`_tf_windows.take_runs`, `_jax_windows.take_runs`).
But XLA moves a slice that would leave its operand, and reading from the
object padded with zeros instead makes XLA test every element against the
padding, which keeps the copy from vectorising (2x slower from an object
too large for the cache). So window rows are runs of the *flattened*
object, which can leave it only at its very start or end:

- window row r of a window starting at (y, x) is the run of N+1 entries
  from (y + r) * W + x, its row clamped into the object; where the window
  sticks out left or right, the run carries on into the previous or next
  object row, and those entries, like the rows outside the object, are set
  to zero in the same loop;
- with W >= N+1, XLA moves only the run of object row 0 in a window
  starting left of the object and that of row H-1 in one ending right of
  it (at most one per window); that row is read instead from the first and
  last object rows padded by N+1 zeros at both ends, 2(W + 2N + 2) entries.

Pure functions of tensors, in `keras.ops`; the backend passes its run
gather. Shapes: `images` (Bi, H, W); `image_index` (b,) int32; `x_start`,
`y_start` (b, c) int32 window starts in object coordinates.
"""

import keras
from keras import ops

__all__ = ["gather_windows", "clamp_starts", "runs", "inside", "moved_rows"]


def gather_windows(images, image_index, x_start, y_start, size, take_runs):
    """Windows of `size` x `size` entries, (b, c, size, size), groups first.

    Args:
        images: (Bi, H, W) with static W >= size.
        image_index, x_start, y_start: as above; starts may lie anywhere.
        size: N+1.
        take_runs: the backend's run gather, (table, starts, size) ->
            runs: `table` (A, L), `starts` (..., 2) int32 [row of the
            table, first entry], result (..., size); XLA moves a run that
            would leave its row.

    Entries outside the object come back as zeros, whatever the object
    holds elsewhere.
    """
    _, height, width = ops.shape(images)
    x_start, y_start = clamp_starts(x_start, y_start, size, height, width)
    rows, columns, image, starts = runs(image_index, x_start, y_start, size, height, width)
    found = take_runs(ops.reshape(images, (-1, height * width)), starts, size)
    found = _where(inside(rows, columns, height, width), found, ops.zeros_like(found))

    replaced, edge_starts = moved_rows(image, x_start, y_start, size, height, width)
    ends = ops.pad(
        ops.take(images, [0, height - 1], axis=1), [[0, 0], [0, 0], [size, size]]
    )
    edge_rows = take_runs(ops.reshape(ends, (-1, width + 2 * size)), edge_starts, size)
    return _where(replaced, edge_rows[..., None, :], found)


def _where(condition, x, y):
    """`where` that keeps complex128 (`keras.ops.where` gives complex64 on
    TensorFlow and JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.where(condition, x, y)
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.where(condition, x, y)
    return ops.where(condition, x, y)


def clamp_starts(x_start, y_start, size, height, width):
    """Starts clamped into [-size, extent]: beyond, a window lies wholly
    outside the object, so clamping changes nothing (and keeps the flat
    positions far from overflowing)."""
    return ops.clip(x_start, -size, width), ops.clip(y_start, -size, height)


def runs(image_index, x_start, y_start, size, height, width):
    """Where each window row lies in the flattened images.

    Returns (rows, columns, image, starts): the object row of each window
    row and the object column of each window column, (b, c, size) int32
    each; each window's image, (b, c); and the [image, first entry] of
    each window row's run, (b, c, size, 2), its row clamped into the
    object.
    """
    steps = ops.arange(size, dtype="int32")
    rows = y_start[..., None] + steps
    columns = x_start[..., None] + steps
    image = ops.broadcast_to(image_index[:, None], ops.shape(x_start))
    starts = ops.stack(
        [
            ops.broadcast_to(image[..., None], ops.shape(rows)),
            ops.clip(rows, 0, height - 1) * width + x_start[..., None],
        ],
        axis=-1,
    )
    return rows, columns, image, starts


def inside(rows, columns, height, width):
    """(b, c, size, size) bool: which window entries lie in the object."""
    def within(index, extent):
        return ops.logical_and(index >= 0, index < extent)

    return ops.logical_and(
        within(rows, height)[..., :, None], within(columns, width)[..., None, :]
    )


def moved_rows(image, x_start, y_start, size, height, width):
    """The window rows whose run XLA would move, and where they lie in the
    first and last object rows padded by `size` zeros at both ends.

    Returns (replaced, edge_starts): (b, c, size, 1) bool, true at the
    window row holding object row 0 of a window starting left of the
    object or row H-1 of one ending right of it; and (b, c, 2) [padded row
    2*image (first) or 2*image + 1 (last), first entry].
    """
    left = x_start < 0
    right = x_start > width - size
    moved = ops.where(left, -y_start, ops.where(right, height - 1 - y_start, -1))
    steps = ops.arange(size, dtype="int32")
    replaced = (steps == moved[..., None])[..., :, None]
    edge_starts = ops.stack(
        [2 * image + ops.cast(right, "int32"), x_start + size], axis=-1
    )
    return replaced, edge_starts
