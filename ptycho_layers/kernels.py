"""Patch-extraction kernels: pure functions of tensors, written with `keras.ops`.

Both kernels compute the same thing under the project's coordinate
convention. For a patch of size `N` at offset `[x, y]`:

    patch[i, j] = bilinear(object, row = y - N//2 + i, col = x - N//2 + j)

where the object is extended by zeros outside its bounds. Integer offsets
therefore give plain slices of the object.

- `extract_patches_batched` gathers each patch's (N+1)x(N+1) neighbourhood
  from the flattened object(s) in one gather and blends it with separable
  bilinear weights: O(K*N^2) work and memory for K patches, whatever the
  object's size.
- `extract_patches_legacy` is PtychoPINN's original algorithm, kept as the
  reference: per patch, zero-pad the object by N//2, translate the *whole*
  padded object by -offset and keep the top-left NxN. O(K*H*W).

Shapes used throughout: `images` is (Bi, H, W), Bi being 1 (one object
shared by every row of offsets) or B; `offsets` is (B, c, 2) with [x, y] on
the last axis; the result is (B, N, N, c), the c patches of a group on the
last axis.
"""

import keras
from keras import ops
from keras.src.backend import standardize_dtype

__all__ = [
    "coordinate_dtype",
    "extract_patches_batched",
    "extract_patches_legacy",
]


def coordinate_dtype(image_dtype):
    """The float dtype used for coordinates and bilinear weights.

    float64 for float64 and complex128 images, float32 for everything else
    (float16/bfloat16 images included: half precision cannot hold a sub-pixel
    position in an object a few thousand pixels wide).
    """
    dtype = standardize_dtype(image_dtype)
    return "float64" if dtype in ("float64", "complex128") else "float32"


def _sanitize_offsets(offsets, height, width, patch_size, dtype):
    """Split offsets into x and y, made safe to turn into indices.

    Args:
        offsets: (B, c, 2) [x, y], any real or integer dtype.
        height, width: the object's size (ints or scalar tensors).
        patch_size: N.
        dtype: the coordinate dtype.

    Returns:
        (x, y, finite): x and y (B, c) in `dtype`, with non-finite values
        replaced by 0 and values clipped to a range beyond which a patch is
        wholly outside the object anyway (so the integer cast cannot
        overflow and the result is unchanged); `finite` (B, c) bool marks
        the offsets that were finite.
    """
    offsets = ops.cast(offsets, dtype)
    x = offsets[..., 0]
    y = offsets[..., 1]
    finite = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
    x = ops.where(finite, x, ops.zeros_like(x))
    y = ops.where(finite, y, ops.zeros_like(y))
    # A window starting N+2 pixels beyond either edge reads only zeros, both
    # before and after clipping, so clipping changes nothing but the range.
    margin = patch_size + 2
    x = ops.clip(x, -margin, ops.cast(width + margin, dtype))
    y = ops.clip(y, -margin, ops.cast(height + margin, dtype))
    return x, y, finite


def _nan_where_not_finite(patches, finite):
    """Replace whole patches whose offset was not finite by NaN.

    patches: (B, c, N, N); finite: (B, c) bool.
    """
    # Adding 0 or NaN, rather than `ops.where`, which on the TensorFlow
    # backend turns complex128 into complex64 (losing precision).
    nan = ops.where(finite, 0.0, float("nan"))[:, :, None, None]
    dtype = standardize_dtype(patches.dtype)
    if dtype in ("complex64", "complex128"):
        # NaN in both parts, not NaN + 0j.
        nan = ops.cast(nan, dtype) * ops.cast(1 + 1j, dtype)
    return patches + ops.cast(nan, dtype)


def _fusion_boundary(fn, predicate):
    """`fn()`, computed where XLA cannot fuse it with its consumers.

    A conditional is a boundary XLA does not fuse across (an optimisation
    barrier is dropped on CPU), so both branches are `fn` and the predicate
    only has to be data. Without XLA this is a plain call.
    """
    return ops.cond(predicate, fn, fn)


def _axis_indices(start, fraction, size, patch_size, coord_dtype):
    """Clamped indices and masked bilinear weights along one axis.

    Args:
        start: (B, c) int32, the first object index of each window.
        fraction: (B, c) the sub-pixel part of each offset, in [0, 1).
        size: the object's extent along this axis.
        patch_size: N; each window spans N+1 object indices.

    Returns:
        (index, w0, w1): `index` (B, c, N+1) int32 clamped into
        [0, size-1]; `w0`, `w1` (B, c, N): the weights of window entries n
        and n+1 for output entry n, already zero where the object index
        lies outside the object. Folding the zero extension into these 1-D
        weights costs O(N) per patch instead of a mask over the window.
    """
    index = start[..., None] + ops.arange(patch_size + 1, dtype="int32")
    inside = ops.cast(
        ops.logical_and(index >= 0, index < size), coord_dtype
    )
    index = ops.clip(index, 0, size - 1)
    fraction = fraction[..., None]
    w0 = (1 - fraction) * inside[..., :-1]
    w1 = fraction * inside[..., 1:]
    return index, w0, w1


def _gather_windows(images, image_index, rows, cols, predicate):
    """Each patch's (N+1)x(N+1) neighbourhood, (B, c, N+1, N+1).

    images: (Bi, H, W); image_index: (B,) int32; rows, cols: (B, c, N+1)
    int32 clamped indices. One element gather from the flattened images;
    entries read at clamped indices get zero weight in the blend.

    The gathered windows are materialised behind a fusion boundary: fused
    into the blend, XLA would redo the gather for each of the four
    neighbours that read an entry (4x the work).
    """
    _, height, width = ops.shape(images)
    flat = (
        (image_index[:, None, None, None] * height + rows[..., :, None])
        * width
        + cols[..., None, :]
    )
    flat_images = ops.reshape(images, (-1,))
    if keras.backend.backend() == "tensorflow":
        return _tf_gather(flat_images, flat, predicate)
    return _fusion_boundary(
        lambda: ops.take(flat_images, flat, axis=0), predicate
    )


def _tf_gather(flat, index, predicate):
    """TensorFlow's gather behind the fusion boundary, with a scatter-add of
    the upstream values (sized by the static object size) as its gradient.

    TensorFlow's own gradient through a gather inside a conditional sizes
    its result from a run-time shape, which XLA refuses for large objects;
    keras.ops.take would also add a pass mapping negative indices.
    """
    import tensorflow as tf

    size = flat.shape[0]

    @tf.custom_gradient
    def gather(values, positions, materialise):
        def scatter_add(upstream):
            segments = size if size is not None else tf.shape(values)[0]
            added = tf.math.unsorted_segment_sum(
                tf.reshape(upstream, [-1]),
                tf.reshape(positions, [-1]),
                segments,
            )
            return added, None, None

        windows = _fusion_boundary(
            lambda: tf.gather(values, positions), materialise
        )
        return windows, scatter_add

    return gather(flat, index, predicate)


def extract_patches_batched(images, offsets, patch_size):
    """Extract all patches at once by a windowed gather and a bilinear blend.

    Args:
        images: (Bi, H, W), real or complex; Bi is 1 or B.
        offsets: (B, c, 2), [x, y] in object pixels.
        patch_size: N, a positive Python int.

    Returns:
        (B, N, N, c) in the images' dtype (for float16/bfloat16 images the
        blend runs in float32 and the result is cast back).
    """
    images = ops.convert_to_tensor(images)
    dtype = standardize_dtype(images.dtype)
    coord = coordinate_dtype(dtype)
    half = patch_size // 2
    num_images, height, width = ops.shape(images)

    x, y, finite = _sanitize_offsets(offsets, height, width, patch_size, coord)
    # Split into integer and fraction *before* subtracting N//2: the
    # fraction of the offset itself is exact in its own precision.
    x_floor = ops.floor(x)
    y_floor = ops.floor(y)
    x_start = ops.cast(x_floor, "int32") - half
    y_start = ops.cast(y_floor, "int32") - half
    rows, row_w0, row_w1 = _axis_indices(
        y_start, y - y_floor, height, patch_size, coord
    )
    cols, col_w0, col_w1 = _axis_indices(
        x_start, x - x_floor, width, patch_size, coord
    )
    # With one shared object every patch reads image 0; with one object
    # per row, row b reads image b.
    image_index = ops.minimum(
        ops.arange(ops.shape(offsets)[0], dtype="int32"),
        ops.cast(num_images - 1, "int32"),
    )
    # Any data-dependent predicate serves the fusion boundaries.
    all_finite = ops.all(finite)
    window = _windows(images, image_index, x_start, y_start, rows, cols,
                      patch_size, all_finite)

    # Blend in (B, c, ., .) layout: the window rows are contiguous, so the
    # loops vectorise; the channels-last transpose comes once, at the end.
    blend_dtype = dtype if dtype in ("complex64", "complex128") else coord
    window = ops.cast(window, blend_dtype)
    col_w0 = ops.cast(col_w0[:, :, None, :], blend_dtype)
    col_w1 = ops.cast(col_w1[:, :, None, :], blend_dtype)
    row_w0 = ops.cast(row_w0[..., None], blend_dtype)
    row_w1 = ops.cast(row_w1[..., None], blend_dtype)
    blended = col_w0 * window[..., :-1] + col_w1 * window[..., 1:]
    patches = row_w0 * blended[:, :, :-1] + row_w1 * blended[:, :, 1:]
    patches = _nan_where_not_finite(ops.cast(patches, dtype), finite)
    # XLA would fuse the transpose into the blend loop; with the c patches
    # of a group innermost that loop does not vectorise (about 5x slower
    # than blend-then-transpose).
    return _fusion_boundary(
        lambda: ops.transpose(patches, (0, 2, 3, 1)), all_finite
    )


def _windows(images, image_index, x_start, y_start, rows, cols, patch_size,
             predicate):
    """Dispatch the neighbourhood gather, (B, c, N+1, N+1).

    JAX has a windowed gather (one contiguous slice per patch), cheap enough
    for XLA to fuse into the blend; every backend has the element gather.
    """
    size = patch_size + 1
    shape = tuple(images.shape)
    if (
        keras.backend.backend() == "jax"
        and shape[1] >= size
        and shape[2] >= size
    ):
        from ptycho_layers import _jax_windows

        return _jax_windows.gather_windows(
            images, image_index, x_start, y_start, size
        )
    return _gather_windows(images, image_index, rows, cols, predicate)


def _whole_axis(shift, size):
    """Source indices and weights for translating a whole axis.

    Output index i samples input coordinate `i + shift`, computed in
    float32 for every i as the legacy transform did (whole-image
    coordinates: the larger i, the fewer bits are left for the fraction).

    Returns (lower, upper, w_lower, w_upper), each (size,): clamped indices
    of the two neighbours and their weights, zero where a neighbour lies
    outside the axis.
    """
    coords = ops.arange(size, dtype="float32") + shift
    lower = ops.floor(coords)
    fraction = coords - lower
    lower = ops.cast(lower, "int32")
    upper = lower + 1

    def inside(index):
        return ops.cast(ops.logical_and(index >= 0, index < size), "float32")

    return (
        ops.clip(lower, 0, size - 1),
        ops.clip(upper, 0, size - 1),
        (1 - fraction) * inside(lower),
        fraction * inside(upper),
    )


def _translate(image, dx, dy):
    """The whole (Hp, Wp) `image` translated by (-dx, -dy): output pixel
    (i, j) is the bilinear sample at (i + dy, j + dx), zero outside."""
    height, width = ops.shape(image)
    dtype = image.dtype
    top, bottom, w_top, w_bottom = _whole_axis(dy, height)
    left, right, w_left, w_right = _whole_axis(dx, width)
    # Row gathers go through a leading axis of 1: on the torch backend a
    # 2-D `take` along axis 0 becomes an embedding lookup, which has no
    # complex gradient.
    stack = image[None]
    rows = ops.cast(w_top[:, None], dtype) * ops.take(stack, top, axis=1)[0]
    rows += ops.cast(w_bottom[:, None], dtype) * ops.take(stack, bottom, axis=1)[0]
    moved = ops.cast(w_left[None, :], dtype) * ops.take(rows, left, axis=1)
    moved += ops.cast(w_right[None, :], dtype) * ops.take(rows, right, axis=1)
    return moved


def extract_patches_legacy(images, offsets, patch_size):
    """PtychoPINN's per-patch algorithm, kept as the reference.

    For each of the B*c patches, in b-major, c-minor order: zero-pad the
    object by N//2, translate the *whole* padded object by -offset with
    bilinear interpolation and zero fill, in float32 whole-image
    coordinates, and keep the top-left NxN. O(H*W) work per patch. Runs as
    a loop inside the graph (`keras.ops.map`), which XLA compiles.

    Args:
        images: (Bi, H, W), real or complex; Bi is 1 or B.
        offsets: (B, c, 2), [x, y] in object pixels.
        patch_size: N, a positive Python int.

    Returns:
        (B, N, N, c) in the images' dtype.
    """
    images = ops.convert_to_tensor(images)
    dtype = standardize_dtype(images.dtype)
    half = patch_size // 2
    num_images, height, width = ops.shape(images)
    batch, groups = ops.shape(offsets)[0], ops.shape(offsets)[1]

    x, y, finite = _sanitize_offsets(
        offsets, height, width, patch_size, "float32"
    )
    padded = ops.pad(images, [[0, 0], [half, half], [half, half]])
    # Patch k = b*c + j (b-major, c-minor) reads image b, or the only one.
    image_index = ops.minimum(
        ops.arange(batch, dtype="int32"), ops.cast(num_images - 1, "int32")
    )
    image_index = image_index[:, None] + ops.zeros((1, groups), "int32")

    def translate_one(args):
        x_k, y_k, b_k = args
        image = ops.take(padded, b_k, axis=0)
        return _translate(image, x_k, y_k)[:patch_size, :patch_size]

    count = batch * groups
    if isinstance(count, int) and count == 0:
        # Nothing to translate (and `ops.map` would trace the loop body on a
        # first element that does not exist).
        canvas = ops.zeros((0, patch_size, patch_size), dtype=dtype)
    else:
        # `ops.map` is a loop in the graph (tf.map_fn, lax.map) that is
        # differentiable and compiles under XLA.
        canvas = ops.map(
            translate_one,
            (
                ops.reshape(x, (-1,)),
                ops.reshape(y, (-1,)),
                ops.reshape(image_index, (-1,)),
            ),
        )
    patches = ops.reshape(canvas, (batch, groups, patch_size, patch_size))
    patches = _nan_where_not_finite(patches, finite)
    return ops.transpose(patches, (0, 2, 3, 1))
