"""Windows as runs of a padded copy of a small object: no masks, and the
gather fused into the kernel's blend.

Fused into the blend, the masked runs of `runs` (and its moved rows) made
XLA's loop slower than gathering and blending apart. So where the object
is small beside the patches (`fits`), windows are read from, and added
into, a copy made once per call (`table`: each image row followed by S
zeros, a row of zeros after the last, all after S zeros), materialised
behind the fusion boundary: no run leaves it, and every entry outside the
object is a zero, with no mask.

Shapes: `images` (Bi, H, W); `image_index` (b,) int32; `x_start`,
`y_start` (b, c) int32 window starts in object coordinates; `size` = S,
the window's side; the table (Bi, size + (H+1) * (W+size)).
"""

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.xla.runs import clamp_starts

__all__ = ["PADDED_SHARE", "fits", "length", "table", "starts", "crop"]

# The padded copy's largest size against the patches', in entries: beyond,
# reading the object's own runs fused (`windows`) beats copying it first.
PADDED_SHARE = 0.2


def fits(image_shape, batch, groups, patch_size, size):
    """Whether the operators read and add windows of side `size` in
    `table`: the backend has XLA's run gather, the shapes are static, and
    the table is at most `PADDED_SHARE` of the patches (B, N, N, c), so
    that copying it (or cropping the object out of it) costs less than it
    saves, and the work stays O(K N^2).
    """
    count, height, width = image_shape
    static = all(isinstance(n, int) for n in (count, height, width, batch, groups))
    # Any width: a run starts at most `size` entries before or after its
    # image row, in the zeros.
    if not static or backends.current().take_runs is None:
        return False
    return count * length(height, width, size) <= PADDED_SHARE * batch * groups * patch_size**2


def length(height, width, size):
    """Entries of one image's table: `size` zeros, then H+1 rows of W+size."""
    return size + (height + 1) * (width + size)


def table(images, size):
    """The images (Bi, H, W) as a table of runs that no window row leaves,
    (Bi, size + (H+1) * (W+size)): each image row followed by `size` zeros,
    then a row of zeros, all after `size` zeros. A copy, O(Bi H W), for
    plain reads (`starts`), with no masks and no moved rows."""
    count, height, width = ops.shape(images)
    rows = ops.pad(images, [[0, 0], [0, 1], [0, size]])
    rows = ops.reshape(rows, (count, (height + 1) * (width + size)))
    return ops.pad(rows, [[0, 0], [size, 0]])


def starts(image_index, x_start, y_start, size, height, width):
    """[image, first entry] in `table` of each window row's run,
    (b, c, size, 2) int32. A row inside the object starts in its image row,
    at most `size` entries early (in the zeros after the row above, or
    before the first) and at most `size` late (in the zeros after it); a
    row outside starts at the row of zeros."""
    x_start, y_start = clamp_starts(x_start, y_start, size, height, width)
    rows = y_start[..., None] + ops.arange(size, dtype="int32")
    row_start = size + rows * (width + size) + x_start[..., None]
    outside = ops.logical_or(rows < 0, rows >= height)
    row_start = ops.where(outside, size + height * (width + size), row_start)
    image = ops.broadcast_to(image_index[:, None, None], ops.shape(rows))
    return ops.stack([image, row_start], axis=-1)


def crop(padded, shape):
    """The images (Bi, H, W) `shape` out of their `table` (or sums added
    into one), (Bi, size + (H+1) * (W+size))."""
    count, height, width = shape
    size = (ops.shape(padded)[1] - (height + 1) * width) // (height + 2)
    rows = ops.reshape(padded[:, size:], (count, height + 1, width + size))
    return rows[:, :height, :width]
