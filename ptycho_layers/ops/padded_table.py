"""Windows as runs of a padded copy of a small object: no masks, and the
gather fused into the blend.

`ops.runs` reads window rows from the object itself, where a run can
leave it: the entries outside are masked and the rows XLA would move are
read from the padded end rows. That costs little where the windows are
gathered into a buffer, but fused into the blend XLA's loop over it ran
3x slower than gathering and blending apart. So where the object is
small beside the patches (`fits`), the windows are read from, and
added into, a copy of it made once per call (`table`: each image
row followed by N+1 zeros, a row of zeros after the last, all after N+1
zeros), materialised behind the fusion boundary rather than fused into
the gather: no run leaves it and every entry outside the object is a
zero, with no mask.

Shapes: `images` (Bi, H, W); `image_index` (b,) int32; `x_start`,
`y_start` (b, c) int32 window starts in object coordinates; `size` = N+1;
the table (Bi, size + (H+1) * (W+size)).
"""

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.ops.runs import clamp_starts

__all__ = ["PADDED_SHARE", "fits", "length", "table", "starts", "crop"]

# The padded copy's largest size against the patches', in entries.
# Extraction, K = 64 to 1024 patches of 64x64, CPU, against the object's
# own runs fused (`ops.windows`): with the table 1.3-2.2x faster at 0.04,
# 0.13 and 0.17 of the patches (TensorFlow; JAX the same or better), even
# at 0.27 and 1.2-1.9x slower at 0.69 and 1.03; the bound sits between.
PADDED_SHARE = 0.2


def fits(image_shape, batch, groups, patch_size):
    """Whether the operators read and add windows in `table`: the
    backend has XLA's run gather, the shapes are static, and the table is
    at most `PADDED_SHARE` of the patches (B, N, N, c), so that copying it
    (or cropping the object out of it) costs less than it saves, and the
    work stays O(K N^2).

    Default case on this CPU, output memory reused: extraction JAX 1.4 ms,
    TensorFlow 1.7-2.0; from the object's own runs, fused, 1.8 and 2.6;
    gathered into a buffer, 2.5 and 3.2. Placement TensorFlow 5.0 ms
    against 6.5.
    """
    count, height, width = image_shape
    size = patch_size + 1
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
    """The images (Bi, H, W) as a table of runs that no window row leaves:
    (Bi, size + (H+1) * (W+size)), each image row followed by `size`
    zeros, then a row of zeros, all after `size` zeros.

    A copy of the images, O(Bi H W); in exchange every window entry is a
    plain read (`starts`), with no masks and no moved rows, and XLA
    fuses the gather into the blend (see `extraction`).
    """
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
