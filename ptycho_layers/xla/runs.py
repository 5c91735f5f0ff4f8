"""Each patch's whole S x S window, gathered or added as runs.

XLA's gather and scatter (`take_runs`, `add_runs`) move one contiguous
run per window row, where an element gather computes an index per entry.
But XLA moves a slice that would leave its operand, and reading from the
object padded with zeros makes XLA test every element against the
padding, which keeps the copy from vectorising. So window rows are runs
of the *flattened* object, which can leave it only at its start or end:

- window row r of a window starting at (y, x) is the run of S entries
  from (y + r) * W + x, its row clamped into the object; entries carried
  on into the previous or next object row, like rows outside the object,
  are zeroed in the same loop;
- with W >= S, XLA moves only the run of object row 0 in a window
  starting left of the object and that of row H-1 in one ending right of
  it (at most one per window); that row is read instead from the first
  and last object rows padded by S zeros at both ends.

Shapes: `images` (Bi, H, W); `image_index` (b,) int32; `x_start`,
`y_start` (b, c) int32 window starts; `size` = S, the window's side.
"""


from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops

__all__ = [
    "available",
    "gather_windows",
    "fused_reads",
    "take_fused",
    "add_windows",
    "add_window_runs",
    "join_window_runs",
    "clamp_starts",
    "runs",
    "inside",
    "moved_rows",
]


def available(width, size):
    """Whether windows of `size` can be moved as runs here: the backend has
    XLA's run gather and the object's width is static and >= size."""
    return (
        backends.current().take_runs is not None
        and isinstance(width, int)
        and width >= size
    )


def gather_windows(images, image_index, x_start, y_start, size):
    """Windows (b, c, size, size), groups first, of `images` (Bi, H, W),
    static W >= size, at starts anywhere; entries outside the object are
    zeros, whatever the object holds elsewhere."""
    backend = backends.current()
    _, height, width = ops.shape(images)
    x_start, y_start = clamp_starts(x_start, y_start, size, height, width)
    rows, columns, image, starts = runs(image_index, x_start, y_start, size, height, width)
    found = backend.take_runs(ops.reshape(images, (-1, height * width)), starts, size)
    found = backend.where(
        inside(rows, columns, height, width), found, ops.zeros_like(found)
    )

    replaced, edge_starts = moved_rows(image, x_start, y_start, size, height, width)
    edge_rows = backend.take_runs(_end_rows(images, size), edge_starts, size)
    return backend.where(replaced, edge_rows[..., None, :], found)


def _end_rows(images, size):
    """The first and last row of each image (Bi, H, W), padded by `size`
    zeros at both ends: (2*Bi, W + 2*size), where `moved_rows` points."""
    _, height, width = ops.shape(images)
    ends = ops.pad(
        ops.take(images, [0, height - 1], axis=1), [[0, 0], [0, 0], [size, size]]
    )
    return ops.reshape(ends, (-1, width + 2 * size))


def fused_reads(images, image_index, x_start, y_start, size):
    """What `take_fused` and the moved rows' share of the blend read from
    `images` (Bi, H, W), O(K N), for a kernel to materialise: (starts,
    keep_rows, col_inside, moved, edge_rows), the runs' [image, first
    entry] (b, c, size, 2); the rows `take_fused` keeps (inside, not
    moved) and the columns inside, (b, c, size) bool each; the row read
    from the padded end rows instead, (b, c) int32, -1 for none; and that
    row, (b, c, size), zeros for none."""
    backend = backends.current()
    _, height, width = ops.shape(images)
    x_start, y_start = clamp_starts(x_start, y_start, size, height, width)
    rows, columns, image, starts = runs(image_index, x_start, y_start, size, height, width)
    replaced, edge_starts = moved_rows(image, x_start, y_start, size, height, width)
    replaced = replaced[..., 0]
    any_moved = ops.any(replaced, axis=-1)
    which = ops.cast(ops.argmax(ops.cast(replaced, "int32"), axis=-1), "int32")
    moved = ops.where(any_moved, which, -1)
    edge_rows = backend.take_runs(_end_rows(images, size), edge_starts, size)
    edge_rows = backend.where(any_moved[..., None], edge_rows, ops.zeros_like(edge_rows))
    keep_rows = ops.logical_and(_within(rows, height), ops.logical_not(replaced))
    return starts, keep_rows, _within(columns, width), moved, edge_rows


def take_fused(images, starts, keep_rows, col_inside, size):
    """Windows (b, c, size, size) of `images` (Bi, H, W) from `fused_reads`,
    moved rows and entries outside zero: one select past the gather, so XLA
    fuses it into the blend (a second, for the moved rows, slowed it)."""
    backend = backends.current()
    _, height, width = ops.shape(images)
    found = backend.take_runs(ops.reshape(images, (-1, height * width)), starts, size)
    keep = ops.logical_and(keep_rows[..., :, None], col_inside[..., None, :])
    return backend.where(keep, found, ops.zeros_like(found))


def add_windows(contributions, image_index, x_start, y_start, shape):
    """The adjoint of `gather_windows`: zeros of `shape` (Bi, H, W), static
    W >= size, with window (b, k) of `contributions` (b, c, size, size)
    added at rows y_start[b, k]..., columns x_start[b, k]... of image
    image_index[b]; entries outside the object are dropped. Each window
    row is added as a run, save the rows the gather reads from the padded
    end rows: those are added there, then into rows 0 and H-1."""
    sums = add_window_runs(contributions, image_index, x_start, y_start, shape)
    return join_window_runs(*sums, shape)


def zero_window_sums(shape, size, dtype):
    """`add_window_runs`' sums before any window, for objects of `shape`
    (Bi, H, W) and windows of side `size`: (flat (Bi, H*W), ends
    (2*Bi, W + 2*size)) zeros of `dtype`."""
    count, height, width = shape
    return (
        ops.zeros((count, height * width), dtype),
        ops.zeros((count * 2, width + 2 * size), dtype),
    )


def add_window_runs(contributions, image_index, x_start, y_start, shape, sums=None):
    """`add_windows` in two steps, for a batch in pieces: each piece adds
    `contributions` (b, c, size, size) into `sums` (flat, ends), the runs
    (Bi, H*W) and padded end rows (2*Bi, W + 2*size), zeros for None, and
    returns the new sums; `join_window_runs` adds the ends into rows 0 and
    H-1 once, at the end (joined per piece, XLA copied the whole object)."""
    backend = backends.current()
    size = contributions.shape[-1]
    _, height, width = shape
    x_start, y_start = clamp_starts(x_start, y_start, size, height, width)
    rows, columns, image, starts = runs(
        image_index, x_start, y_start, size, height, width
    )
    replaced, edge_starts = moved_rows(
        image, x_start, y_start, size, height, width
    )
    zeros = ops.zeros_like(contributions)
    keep = ops.logical_and(
        inside(rows, columns, height, width), ops.logical_not(replaced)
    )
    # A run XLA cannot place whole (one the gather moved) is zeros, dropped or moved.
    in_runs = backend.where(keep, contributions, zeros)
    # Each window's replaced row (zeros for none) by a gather of rows: a sum
    # over the rows would make XLA read every window whole.
    which = ops.argmax(ops.cast(replaced[..., 0], "int32"), axis=-1)
    which = ops.reshape(ops.cast(which, "int32"), (-1,))
    picks = ops.arange(ops.shape(which)[0], dtype="int32") * size + which
    in_edges = ops.take(ops.reshape(contributions, (-1, size)), picks, axis=0)
    in_edges = ops.reshape(in_edges, ops.shape(edge_starts)[:-1] + (size,))
    any_replaced = ops.any(replaced, axis=(2, 3))[..., None]
    in_edges = backend.where(any_replaced, in_edges, ops.zeros_like(in_edges))

    dtype = contributions.dtype
    if sums is None:
        sums = zero_window_sums(shape, size, dtype)
    return (
        backend.add_runs(sums[0], starts, in_runs),
        backend.add_runs(sums[1], edge_starts, in_edges),
    )


def join_window_runs(flat, ends, shape):
    """The object (Bi, H, W) from `add_window_runs`' sums."""
    count, height, width = shape
    size = (ops.shape(ends)[1] - width) // 2
    ends = ops.reshape(ends[:, size:size + width], (count, 2, width))
    total = ops.reshape(flat, (count, height, width))
    # Rows 0 and H-1 take what was added to the first and last rows, in
    # place (the same row when H = 1).
    for row, end in ((0, 0), (height - 1, 1)):
        updated = total[:, row:row + 1] + ends[:, end:end + 1]
        total = ops.slice_update(total, (0, row, 0), updated)
    return total


def clamp_starts(x_start, y_start, size, height, width):
    """Starts clamped into [-size, extent]: beyond, a window lies wholly
    outside the object, so clamping changes nothing (and keeps the flat
    positions far from overflowing). (b, c) int32 each."""
    return ops.clip(x_start, -size, width), ops.clip(y_start, -size, height)


def runs(image_index, x_start, y_start, size, height, width):
    """Where each window row lies in the flattened images: (rows, columns,
    image, starts), the object row of each window row and column of each
    window column, (b, c, size) int32 each; each window's image, (b, c);
    and each row's run's [image, first entry], (b, c, size, 2), its row
    clamped into the object."""
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


def _within(index, extent):
    return ops.logical_and(index >= 0, index < extent)


def inside(rows, columns, height, width):
    """(b, c, size, size) bool: which window entries lie in the object."""
    return ops.logical_and(
        _within(rows, height)[..., :, None], _within(columns, width)[..., None, :]
    )


def moved_rows(image, x_start, y_start, size, height, width):
    """The window rows whose run XLA would move, and where they lie in the
    end rows padded by `size` zeros: (replaced, edge_starts), (b, c, size,
    1) bool, true at the row holding object row 0 of a window starting
    left of the object or row H-1 of one ending right of it; and (b, c, 2)
    [padded row 2*image (first) or 2*image + 1 (last), first entry]."""
    left = x_start < 0
    right = x_start > width - size
    moved = ops.where(left, -y_start, ops.where(right, height - 1 - y_start, -1))
    steps = ops.arange(size, dtype="int32")
    replaced = (steps == moved[..., None])[..., :, None]
    edge_starts = ops.stack(
        [2 * image + ops.cast(right, "int32"), x_start + size], axis=-1
    )
    return replaced, edge_starts
