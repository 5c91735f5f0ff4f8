"""PtychoPINN's per-patch algorithm, kept as the reference.

Per patch: zero-pad the object by N//2, translate the *whole* padded object
by -offset with bilinear interpolation and zero fill, in float32
whole-image coordinates, and keep the top-left NxN. O(H*W) work per patch,
one patch after another.
"""

from keras import ops
from keras.src.backend import standardize_dtype

from ptycho_layers.ops import geometry

__all__ = ["extract_patches_legacy"]


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
    (i, j) is the bilinear sample at (i + dy, j + dx), zero outside.
    dx, dy: scalars. Returns (Hp, Wp)."""
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
    """PtychoPINN's per-patch algorithm, for the B*c patches in b-major,
    c-minor order. Runs as a loop inside the graph (`keras.ops.map`: a
    differentiable loop that XLA compiles).

    Args:
        images: (Bi, H, W), real or complex; Bi is 1 or B.
        offsets: (B, c, 2), [x, y] in object pixels.
        patch_size: N, a positive Python int.

    Returns:
        (B, N, N, c) in the images' dtype; NaN patches where an offset is
        not finite.
    """
    images = ops.convert_to_tensor(images)
    dtype = standardize_dtype(images.dtype)
    half = patch_size // 2
    num_images, height, width = ops.shape(images)
    batch, groups = ops.shape(offsets)[0], ops.shape(offsets)[1]

    x, y, finite = geometry.sanitize_offsets(
        offsets, height, width, patch_size, "float32"
    )
    padded = ops.pad(images, [[0, 0], [half, half], [half, half]])
    # Patch k = b*c + j (b-major, c-minor) reads image b, or the only one.
    image_index = geometry.image_indices(batch, num_images)[:, None]
    image_index = image_index + ops.zeros((1, groups), "int32")

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
        canvas = ops.map(
            translate_one,
            (
                ops.reshape(x, (-1,)),
                ops.reshape(y, (-1,)),
                ops.reshape(image_index, (-1,)),
            ),
        )
    patches = ops.reshape(canvas, (batch, groups, patch_size, patch_size))
    return geometry.nan_where_not_finite(
        ops.transpose(patches, (0, 2, 3, 1)), finite
    )

