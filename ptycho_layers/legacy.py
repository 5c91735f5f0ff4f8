"""PtychoPINN's per-patch algorithm, kept as the reference.

Per patch: zero-pad the object by N//2, translate the *whole* padded object
by -offset with bilinear interpolation and zero fill, in float32
whole-image coordinates, and keep the top-left NxN. O(H*W) work per patch,
one patch after another.
"""

from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers import operators

__all__ = ["extract_patches_legacy", "place_patches_legacy"]


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
    return _neighbours(ops.cast(lower, "int32"), coords - lower, size)


def _split_axis(start, fraction, size):
    """As `_whole_axis` for a shift given as an integer `start` and a
    `fraction` in [0, 1]: output index i samples `i + start + fraction`,
    its weights exact whatever i (no whole-image float coordinates)."""
    lower = ops.arange(size, dtype="int32") + start
    return _neighbours(lower, fraction + ops.zeros((size,), "float32"), size)


def _neighbours(lower, fraction, size):
    """Clamped lower and upper neighbours of each output index, (size,)
    int32, and their weights, zero outside the axis."""
    upper = lower + 1

    def inside(index):
        return ops.cast(ops.logical_and(index >= 0, index < size), "float32")

    return (
        ops.clip(lower, 0, size - 1),
        ops.clip(upper, 0, size - 1),
        (1 - fraction) * inside(lower),
        fraction * inside(upper),
    )


def _translate(image, rows, cols):
    """The whole (Hp, Wp) `image` resampled along both axes: `rows` and
    `cols` are (lower, upper, w_lower, w_upper) from `_whole_axis` or
    `_split_axis`, for Hp and Wp outputs. Returns (Hp, Wp)."""
    dtype = image.dtype
    top, bottom, w_top, w_bottom = rows
    left, right, w_left, w_right = cols
    # Row gathers go through a leading axis of 1: on the torch backend a
    # 2-D `take` along axis 0 becomes an embedding lookup, which has no
    # complex gradient.
    stack = image[None]
    along_rows = ops.cast(w_top[:, None], dtype) * ops.take(stack, top, axis=1)[0]
    along_rows += ops.cast(w_bottom[:, None], dtype) * ops.take(stack, bottom, axis=1)[0]
    moved = ops.cast(w_left[None, :], dtype) * ops.take(along_rows, left, axis=1)
    moved += ops.cast(w_right[None, :], dtype) * ops.take(along_rows, right, axis=1)
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

    # Bilinear: windows of N + 1.
    x, y, finite = operators.sanitize_offsets(
        offsets, height, width, patch_size + 1, "float32"
    )
    padded = ops.pad(images, [[0, 0], [half, half], [half, half]])
    # Patch k = b*c + j (b-major, c-minor) reads image b, or the only one.
    image_index = operators.image_indices(batch, num_images)[:, None]
    image_index = image_index + ops.zeros((1, groups), "int32")

    def translate_one(args):
        x_k, y_k, b_k = args
        image = ops.take(padded, b_k, axis=0)
        height_p, width_p = ops.shape(image)
        moved = _translate(image, _whole_axis(y_k, height_p), _whole_axis(x_k, width_p))
        return moved[:patch_size, :patch_size]

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
    return operators.nan_where_not_finite(
        ops.transpose(patches, (0, 2, 3, 1)), finite
    )


def place_patches_legacy(patches, offsets, image_shape):
    """PtychoPINN's shift-and-sum, per patch: the adjoint of
    `extract_patches_legacy`, and the reference for placement.

    For each of the B*c patches, in b-major, c-minor order: put the patch
    at the top-left of a zero canvas the size of the object padded by N//2,
    translate the *whole* canvas by +offset with bilinear interpolation and
    zero fill, cut the object out of it and add it in. O(H*W) work per
    patch, one patch after another (`keras.ops.fori_loop`). Unlike
    PtychoPINN's, the translation splits each offset into its integer part
    and its fraction first, so its weights are exact wherever the canvas
    pixel: it is the reference, and the exact adjoint of the vectorized
    extraction.

    Args:
        patches: (B, N, N, c), real or complex.
        offsets: (B, c, 2), [x, y] in object pixels.
        image_shape: (Bi, H, W) static ints, Bi being 1 or B.

    Returns:
        (Bi, H, W) in the patches' dtype; a patch whose offset is not
        finite adds nothing.
    """
    patches = ops.convert_to_tensor(patches)
    num_images, height, width = image_shape
    patch_size = ops.shape(patches)[1]
    half = patch_size // 2
    batch, groups = ops.shape(offsets)[0], ops.shape(offsets)[1]
    # Bilinear: windows of N + 1.
    x, y, finite = operators.sanitize_offsets(
        offsets, height, width, patch_size + 1, "float32"
    )
    # Not a product with the mask: 0 * NaN would still be NaN.
    patches = backends.current().where(
        finite[:, None, None, :], patches, ops.zeros_like(patches)
    )
    pad = [[0, height + 2 * half - patch_size], [0, width + 2 * half - patch_size]]
    x_floor, y_floor = ops.floor(x), ops.floor(y)
    x_frac, y_frac = x - x_floor, y - y_floor
    x_floor, y_floor = ops.cast(x_floor, "int32"), ops.cast(y_floor, "int32")
    image_index = operators.image_indices(batch, num_images)

    def add_one(k, total):
        b, j = k // groups, k % groups
        canvas = ops.pad(ops.take(ops.take(patches, b, axis=0), j, axis=-1), pad)
        # Translating by +offset samples the canvas at -offset (bilinear
        # weights are symmetric in the shift): at -floor - 1 + (1 - frac).
        rows = _split_axis(-y_floor[b, j] - 1, 1 - y_frac[b, j], height + 2 * half)
        cols = _split_axis(-x_floor[b, j] - 1, 1 - x_frac[b, j], width + 2 * half)
        moved = _translate(canvas, rows, cols)
        moved = moved[half:half + height, half:half + width]
        row = ops.take(image_index, b)
        updated = ops.take(total, row, axis=0) + moved
        # Start indices of one dtype (JAX refuses int32 beside int64).
        zero = ops.zeros((), ops.dtype(row))
        return ops.slice_update(total, (row, zero, zero), updated[None])

    total = ops.zeros(image_shape, patches.dtype)
    return ops.fori_loop(0, batch * groups, add_one, total)
