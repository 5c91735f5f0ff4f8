"""The algorithms this layer is measured against, and float64 references.

Extraction peers take `images` (1, H, W) and `offsets` (B, c, 2) [x, y]
and return (B, N, N, c), the project's convention: patch[i, j] samples the
zero-extended object bilinearly at row y - N//2 + i, column x - N//2 + j.
Placement peers take (B, N, N, c) patches, the offsets and (H, W), and add
patch[i, j] into the object at that same point, spread over its four
pixels with the same weights; what falls outside is dropped.
"""

import numpy as np
from keras import ops
from keras.backend import standardize_dtype

__all__ = ["split_channels", "merge_channels", "tiled_batch", "tiled_chunk",
           "crop_and_resize", "reference_patches", "scatter_nd_placement",
           "reference_placement"]

_COMPLEX = ("complex64", "complex128")


def split_channels(images):
    """(1, H, W) real or complex -> (1, H, W, C): C = 2 (real, imaginary)
    for complex images, 1 for real ones."""
    if standardize_dtype(images.dtype) in _COMPLEX:
        return ops.stack([ops.real(images), ops.imag(images)], axis=-1)
    return images[..., None]


def merge_channels(channels, dtype):
    """(..., C) from `split_channels` -> (...) in `dtype`."""
    if dtype in _COMPLEX:
        real = ops.cast(channels[..., 0], dtype)
        imag = ops.cast(channels[..., 1], dtype)
        return real + imag * ops.cast(1j, dtype)
    return ops.cast(channels[..., 0], dtype)


def _to_groups(patches, offsets_shape, dtype):
    """(K, N, N, C) patches in b-major, c-minor order -> (B, N, N, c)."""
    batch, groups = offsets_shape[0], offsets_shape[1]
    size = patches.shape[1]
    patches = merge_channels(patches, dtype)
    patches = ops.reshape(patches, (batch, groups, size, size))
    return ops.transpose(patches, (0, 2, 3, 1))


def tiled_chunk(padded_bytes, budget_bytes):
    """Patches per chunk of `tiled_batch` so that a chunk's working set,
    about 3 padded objects per patch (the tile, the translated tile and the
    transform's temporaries), stays within `budget_bytes`."""
    return max(1, int(budget_bytes // (3 * padded_bytes)))


def tiled_batch(images, offsets, patch_size, chunk):
    """The first batched design: translate K copies of the object at once.

    The object is zero-padded by N//2 and split into channels; for each
    chunk of patches it is tiled `chunk` times and every tile is translated
    by its own -offset in one `keras.ops.image.affine_transform` call (a
    (chunk, 8) batch of transforms), then cropped to the top-left NxN.
    Work and memory are O(K*H*W), as for the legacy loop, but in few calls.
    `chunk`: patches translated per call (see `tiled_chunk`).
    """
    dtype = standardize_dtype(images.dtype)
    half = patch_size // 2
    padded = ops.pad(
        split_channels(images), [[0, 0], [half, half], [half, half], [0, 0]]
    )
    # affine_transform takes float32 transforms on every backend.
    flat = ops.reshape(ops.cast(offsets, "float32"), (-1, 2))
    count = flat.shape[0]
    pieces = []
    for start in range(0, count, chunk):
        xy = flat[start : start + chunk]
        n = xy.shape[0]
        one = ops.ones((n, 1), "float32")
        zero = ops.zeros((n, 1), "float32")
        # Output (i, j) reads input (i + y, j + x): translate by -offset.
        transforms = ops.concatenate(
            [one, zero, xy[:, :1], zero, one, xy[:, 1:], zero, zero], axis=1
        )
        moved = ops.image.affine_transform(
            ops.tile(padded, (n, 1, 1, 1)),
            transforms,
            interpolation="bilinear",
            fill_mode="constant",
            fill_value=0,
            data_format="channels_last",
        )
        pieces.append(moved[:, :patch_size, :patch_size, :])
    return _to_groups(ops.concatenate(pieces, axis=0), offsets.shape, dtype)


def crop_and_resize(images, offsets, patch_size):
    """TensorFlow's C++ bilinear crop kernel, one box per patch.

    Each box spans rows y - N//2 .. y - N//2 + N - 1 and the same columns
    in x, so the N samples along each side are one pixel apart. The object
    first gets a one-pixel ring of zeros: `crop_and_resize` gives the
    extrapolation value (0) for any sample beyond the outer pixel centres,
    where zero extension still blends the edge pixel with a zero; with the
    ring, both agree everywhere. Box corners are normalised by the padded
    (H+1, W+1). The kernel computes in float32 whatever the input dtype.
    """
    import tensorflow as tf

    dtype = standardize_dtype(images.dtype)
    channels = tf.cast(split_channels(images), tf.float32)
    padded = tf.pad(channels, [[0, 0], [1, 1], [1, 1], [0, 0]])
    height = tf.cast(tf.shape(padded)[1] - 1, tf.float32)
    width = tf.cast(tf.shape(padded)[2] - 1, tf.float32)
    flat = tf.reshape(tf.cast(offsets, tf.float32), (-1, 2))
    # +1: the ring shifts object pixel (r, c) to padded pixel (r+1, c+1).
    top = flat[:, 1] - (patch_size // 2) + 1
    left = flat[:, 0] - (patch_size // 2) + 1
    span = float(patch_size - 1)
    boxes = tf.stack(
        [top / height, left / width, (top + span) / height, (left + span) / width],
        axis=1,
    )
    crops = tf.image.crop_and_resize(
        padded,
        boxes,
        tf.zeros(tf.shape(flat)[:1], tf.int32),
        (patch_size, patch_size),
        method="bilinear",
        extrapolation_value=0.0,
    )
    return _to_groups(crops, offsets.shape, dtype)


def reference_patches(images, offsets, patch_size, groups_per_step=64):
    """Float64 numpy patches, by the convention's formula, vectorized.

    Used to check the vectorized kernel itself, so that the benchmark's
    check of every row against that kernel rests on something independent.
    Takes numpy arrays; `groups_per_step` rows of offsets at a time (bounds
    memory). Returns complex128 for complex images, else float64.
    """
    image = np.asarray(images)[0]
    kind = np.complex128 if np.iscomplexobj(image) else np.float64
    image = image.astype(kind)
    height, width = image.shape
    steps = np.arange(patch_size) - patch_size // 2
    pieces = []
    offsets = np.asarray(offsets, np.float64)
    for start in range(0, offsets.shape[0], groups_per_step):
        part = offsets[start : start + groups_per_step]
        rows = part[..., 1, None] + steps  # (b, c, N)
        cols = part[..., 0, None] + steps
        r0, c0 = np.floor(rows), np.floor(cols)
        fr = (rows - r0)[..., :, None]
        fc = (cols - c0)[..., None, :]
        r0 = r0.astype(np.int64)[..., :, None]
        c0 = c0.astype(np.int64)[..., None, :]

        def pixel(r, c):
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            value = image[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
            return np.where(inside, value, 0)

        patch = (1 - fr) * ((1 - fc) * pixel(r0, c0) + fc * pixel(r0, c0 + 1))
        patch += fr * ((1 - fc) * pixel(r0 + 1, c0) + fc * pixel(r0 + 1, c0 + 1))
        pieces.append(np.transpose(patch, (0, 2, 3, 1)))
    if not pieces:
        return np.zeros((0, patch_size, patch_size, offsets.shape[1]), kind)
    return np.concatenate(pieces, axis=0)


def _bilinear_corners(rows, cols, floor):
    """The four pixels each patch entry is spread over, and their weights.

    rows, cols: (b, c, N) float positions of the patches' rows and columns;
    `floor` the array library's floor. Yields (row, col, weight) for each
    neighbour: its pixel row (b, c, N, 1) and column (b, c, 1, N), still
    floats, and its weight (b, c, N, N) for entry (i, j)."""
    r0, c0 = floor(rows), floor(cols)
    fr, fc = rows - r0, cols - c0
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            weight = wr[..., :, None] * wc[..., None, :]
            yield (r0 + dr)[..., :, None], (c0 + dc)[..., None, :], weight


def scatter_nd_placement(patches, offsets, image_shape):
    """Placement by TensorFlow's `tensor_scatter_nd_add`, the direct way.

    Every patch value becomes four updates of the flattened object, one per
    bilinear neighbour, with their flat indices: 4 K N^2 (index, value)
    pairs, scattered in one call. A neighbour outside the object gets
    weight 0 at a clamped index (out-of-range indices are an error on CPU).
    Weights are computed in the offsets' precision.
    """
    import tensorflow as tf

    height, width = image_shape
    offsets = tf.convert_to_tensor(offsets)
    size = patches.shape[1]
    steps = tf.range(size, dtype=offsets.dtype) - size // 2
    rows = offsets[..., 1, None] + steps  # (B, c, N)
    cols = offsets[..., 0, None] + steps
    values = tf.transpose(patches, (0, 3, 1, 2))  # (B, c, N, N)
    indices, updates = [], []
    for row, col, weight in _bilinear_corners(rows, cols, tf.floor):
        row, col = tf.cast(row, tf.int32), tf.cast(col, tf.int32)
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        weight = tf.where(inside, weight, tf.zeros_like(weight))
        flat = (tf.clip_by_value(row, 0, height - 1) * width
                + tf.clip_by_value(col, 0, width - 1))
        indices.append(flat)
        updates.append(values * tf.cast(weight, patches.dtype))
    total = tf.tensor_scatter_nd_add(
        tf.zeros((height * width,), patches.dtype),
        tf.reshape(tf.stack(indices), (-1, 1)),
        tf.reshape(tf.stack(updates), (-1,)),
    )
    return tf.reshape(total, (1, height, width))


def reference_placement(patches, offsets, image_shape, groups_per_step=64):
    """Float64 numpy placement, by the convention's formula: every patch
    value added into its four pixels with bilinear weights (`np.add.at`)
    of a zero-extended object; what falls outside is dropped, and so is a
    patch whose offset is not finite. Takes numpy arrays, `groups_per_step`
    rows of offsets at a time; returns complex128 for complex patches, else
    float64.
    """
    patches = np.asarray(patches)
    kind = np.complex128 if np.iscomplexobj(patches) else np.float64
    height, width = image_shape
    size = patches.shape[1]
    steps = np.arange(size) - size // 2
    total = np.zeros(height * width, kind)
    offsets = np.asarray(offsets, np.float64)
    for start in range(0, offsets.shape[0], groups_per_step):
        part = offsets[start : start + groups_per_step]
        finite = np.all(np.isfinite(part), axis=-1)  # (b, c)
        part = np.where(finite[..., None], part, 0.0)
        chunk = patches[start : start + groups_per_step].astype(kind)
        values = np.transpose(chunk, (0, 3, 1, 2))  # (b, c, N, N)
        rows = part[..., 1, None] + steps
        cols = part[..., 0, None] + steps
        for row, col, weight in _bilinear_corners(rows, cols, np.floor):
            row, col = row.astype(np.int64), col.astype(np.int64)
            keep = (finite[..., None, None] & (row >= 0) & (row < height)
                    & (col >= 0) & (col < width))
            np.add.at(total, (row * width + col)[keep], (weight * values)[keep])
    return total.reshape(1, height, width)
