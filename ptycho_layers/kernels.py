"""Patch-extraction kernels: pure functions of tensors, written with `keras.ops`.

Both kernels compute the same thing under the project's coordinate
convention. For a patch of size `N` at offset `[x, y]`:

    patch[i, j] = bilinear(object, row = y - N//2 + i, col = x - N//2 + j)

where the object is extended by zeros outside its bounds. Integer offsets
therefore give plain slices of the object.

- `extract_patches_batched` gathers each patch's (N+1)x(N+1) neighbourhood
  from the flattened object(s) in one gather and blends it with separable
  bilinear weights: O(K*N^2) work and memory for K patches, whatever the
  object's size. The patches of a group stay on the last axis throughout,
  so the blend writes the output layout directly, and a large batch is
  done in a few pieces so that the neighbourhoods never take more memory
  than 3/4 of the output. Its gradients are in `gradients`.
- `extract_patches_legacy` is PtychoPINN's original algorithm, kept as the
  reference: per patch, zero-pad the object by N//2, translate the *whole*
  padded object by -offset and keep the top-left NxN. O(K*H*W).

Shapes used throughout: `images` is (Bi, H, W), Bi being 1 (one object
shared by every row of offsets) or B; `offsets` is (B, c, 2) with [x, y] on
the last axis; the result is (B, N, N, c), the c patches of a group on the
last axis.
"""

import functools

import keras
from keras import ops
from keras.src.backend import standardize_dtype

from ptycho_layers import windows as windows_lib

__all__ = [
    "coordinate_dtype",
    "extract_patches_batched",
    "batch_pieces",
    "extract_patches_legacy",
    "flat_positions",
    "fusion_boundary",
    "image_indices",
    "sanitize_offsets",
    "window_geometry",
    "windows",
]


def coordinate_dtype(image_dtype):
    """The float dtype used for coordinates and bilinear weights.

    float64 for float64 and complex128 images, float32 for everything else
    (float16/bfloat16 images included: half precision cannot hold a sub-pixel
    position in an object a few thousand pixels wide).
    """
    dtype = standardize_dtype(image_dtype)
    return "float64" if dtype in ("float64", "complex128") else "float32"


def sanitize_offsets(offsets, height, width, patch_size, dtype):
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

    patches: (B, N, N, c); finite: (B, c) bool.
    """
    # Adding 0 or NaN, rather than `ops.where`, which on the TensorFlow
    # backend turns complex128 into complex64 (losing precision).
    nan = ops.where(finite, 0.0, float("nan"))[:, None, None, :]
    dtype = standardize_dtype(patches.dtype)
    if dtype in ("complex64", "complex128"):
        # NaN in both parts, not NaN + 0j.
        nan = ops.cast(nan, dtype) * ops.cast(1 + 1j, dtype)
    return patches + ops.cast(nan, dtype)


def fusion_boundary(fn, predicate):
    """`fn()`, computed where XLA cannot fuse it with its consumers.

    A conditional is a boundary XLA does not fuse across (an optimisation
    barrier is dropped on CPU), so both branches are `fn` and the predicate
    only has to be data. XLA turns a conditional whose branches hold only
    elementwise operations into a select, so `fn` must hold at least one
    other operation (a gather, a transpose). Without XLA this is a plain
    call.
    """
    return ops.cond(predicate, fn, fn)


def _axis_indices(start, fraction, size, patch_size, coord_dtype):
    """Clamped indices and masked bilinear weights along one axis.

    Args:
        start: (b, c) int32, the first object index of each window.
        fraction: (b, c) the sub-pixel part of each offset, in [0, 1).
        size: the object's extent along this axis.
        patch_size: N; each window spans N+1 object indices.

    Returns:
        (index, inside, w0, w1), groups last: `index` (b, N+1, c) int32
        clamped into [0, size-1]; `inside` (b, N+1, c), 1 where the
        unclamped index lies inside the object, else 0; `w0`, `w1` (b, N,
        c): the weights of window entries n and n+1 for output entry n,
        already zero outside the object. Folding the zero extension into
        these 1-D weights costs O(N) per patch instead of a mask over the
        window.
    """
    index = start[:, None, :] + ops.arange(patch_size + 1, dtype="int32")[:, None]
    inside = ops.cast(
        ops.logical_and(index >= 0, index < size), coord_dtype
    )
    index = ops.clip(index, 0, size - 1)
    fraction = fraction[:, None, :]
    w0 = (1 - fraction) * inside[:, :-1]
    w1 = fraction * inside[:, 1:]
    return index, inside, w0, w1


def window_geometry(x, y, height, width, patch_size, coord_dtype):
    """Where each window lies and how it is blended.

    Args:
        x, y: (b, c) sanitized offsets in the coordinate dtype.

    Returns:
        dict with x_start, y_start (b, c) int32 and, per axis (see
        `_axis_indices`), rows/row_inside/row_w0/row_w1 and
        cols/col_inside/col_w0/col_w1.
    """
    half = patch_size // 2
    # Split into integer and fraction *before* subtracting N//2: the
    # fraction of the offset itself is exact in its own precision.
    x_floor = ops.floor(x)
    y_floor = ops.floor(y)
    x_start = ops.cast(x_floor, "int32") - half
    y_start = ops.cast(y_floor, "int32") - half
    row_index, row_inside, row_w0, row_w1 = _axis_indices(
        y_start, y - y_floor, height, patch_size, coord_dtype
    )
    col_index, col_inside, col_w0, col_w1 = _axis_indices(
        x_start, x - x_floor, width, patch_size, coord_dtype
    )
    return {
        "x_start": x_start, "y_start": y_start,
        "rows": row_index, "row_inside": row_inside,
        "row_w0": row_w0, "row_w1": row_w1,
        "cols": col_index, "col_inside": col_inside,
        "col_w0": col_w0, "col_w1": col_w1,
    }


def complex_from_parts(real, imag, dtype):
    """real + i*imag as `dtype` (complex64 or complex128), in one op."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.complex(real, imag)
    if backend == "jax":
        from jax import lax

        return lax.complex(real, imag)
    if backend == "torch":
        import torch

        return torch.complex(real, imag)
    return ops.cast(real, dtype) + ops.cast(imag, dtype) * ops.cast(1j, dtype)


def _blend(window, row_w0, row_w1, col_w0, col_w1, dtype):
    """Separable bilinear blend of windows into patches.

    Args:
        window: (b, N+1, N+1, c) in the images' dtype.
        row_w0, row_w1, col_w0, col_w1: (b, N, c) real weights in the
            coordinate dtype (see `_axis_indices`).
        dtype: the images' dtype, the result's.

    Returns:
        (b, N, N, c) patches.

    With the groups last the windows' rows are contiguous runs of (N+1)*c
    values and the weights broadcast along them, so the loops vectorise
    and the result is already in the output layout. Complex windows are
    blended as their real and imaginary parts: real weights times complex
    values would cost a complex product each.
    """
    col_w0 = col_w0[:, None]
    col_w1 = col_w1[:, None]
    row_w0 = row_w0[:, :, None]
    row_w1 = row_w1[:, :, None]

    def blend(values):
        across = col_w0 * values[:, :, :-1] + col_w1 * values[:, :, 1:]
        return row_w0 * across[:, :-1] + row_w1 * across[:, 1:]

    if dtype in ("complex64", "complex128"):
        return complex_from_parts(blend(ops.real(window)), blend(ops.imag(window)), dtype)
    # float16/bfloat16 images blend in the float32 coordinate dtype.
    return ops.cast(blend(ops.cast(window, row_w0.dtype)), dtype)


def batch_pieces(batch, groups, patch_size):
    """Split the batch into pieces whose windows stay small.

    The (N+1)^2 windows of all patches together are larger than the output
    itself; gathering and blending part of the batch at a time keeps the
    working memory beyond the output under 3/4 of the output's size. Only
    for a static batch on the XLA backends (TensorFlow runs the kernel
    compiled, JAX traces it), where each piece is written in place into
    the output; elsewhere every intermediate is materialised anyway.

    Returns:
        [(start, stop), ...] static row ranges covering the batch, or
        [(0, None)] for the whole batch in one piece.
    """
    if (
        keras.backend.backend() not in ("tensorflow", "jax")
        or not isinstance(batch, int)
        or not isinstance(groups, int)
        or batch < 2
    ):
        return [(0, None)]
    window_to_output = (patch_size + 1) ** 2 / patch_size**2
    # Pieces as large as the bound allows: the first is blended straight
    # into the output with its zero padding (a loop XLA runs on every
    # core), later ones are written in place by a single-threaded update.
    step = max(1, int(batch * 0.75 / window_to_output))
    if step >= batch:
        return [(0, None)]
    return [(start, min(start + step, batch)) for start in range(0, batch, step)]


def _place(output, piece, start):
    """`output` with rows [start, start + len(piece)) replaced by `piece`
    (in place under XLA)."""
    return ops.slice_update(output, (start, 0, 0, 0), piece)


def _windows_and_weights(images, image_index, x, y, patch_size, predicate):
    """Each patch's window and blend weights, materialised.

    Args:
        images: (Bi, H, W); image_index: (b,) int32.
        x, y: (b, c) sanitized offsets in the coordinate dtype.
        predicate: a scalar bool computed from the data.

    Returns:
        (window, row_w0, row_w1, col_w0, col_w1): the (b, N+1, N+1, c)
        neighbourhoods and the (b, N, c) weights (see `_axis_indices`).

    Both sit behind a fusion boundary: fused into the blend, XLA would redo
    the gather for each of the four neighbours that read a window entry,
    and recompute the weights from the offsets for every output value.
    """
    _, height, width = ops.shape(images)
    coord = standardize_dtype(x.dtype)

    def compute():
        geometry = window_geometry(x, y, height, width, patch_size, coord)
        window = gathered_windows(images, image_index, geometry, patch_size)
        return (window, geometry["row_w0"], geometry["row_w1"],
                geometry["col_w0"], geometry["col_w1"])

    window, *weights = fusion_boundary(compute, predicate)
    if _windowed_gather(images, patch_size) is not None:
        # Groups first: transposed outside the boundary, so that the
        # transpose fuses into the blend and the gather copies whole rows.
        window = ops.transpose(window, (0, 2, 3, 1))
    return (window, *weights)


def flat_positions(image_index, rows, cols, height, width):
    """Flat positions in the (Bi, H, W) images, (b, N+1, N+1, c) int32."""
    return (
        (image_index[:, None, None, None] * height + rows[:, :, None, :])
        * width
        + cols[:, None, :, :]
    )


def windows(images, image_index, geometry, patch_size):
    """The neighbourhood gather, (b, N+1, N+1, c): `gathered_windows` in
    the groups-last layout."""
    window = gathered_windows(images, image_index, geometry, patch_size)
    if _windowed_gather(images, patch_size) is not None:
        return ops.transpose(window, (0, 2, 3, 1))
    return window


def _windowed_gather(images, patch_size):
    """This backend's windowed gather for these images, or None.

    JAX and TensorFlow (through XLA) copy each window row whole
    (`windows.gather_windows`), far cheaper than indexing every element;
    the gather takes (images, image_index, x_start, y_start, N+1) and
    returns the windows groups first, (b, c, N+1, N+1). It needs the
    object's width at tracing, at least N+1.
    """
    size = patch_size + 1
    _, height, width = ops.shape(images)
    if not (isinstance(height, int) and isinstance(width, int)) or width < size:
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        from ptycho_layers import _jax_windows

        return functools.partial(
            windows_lib.gather_windows, take_runs=_jax_windows.take_runs
        )
    if backend == "tensorflow":
        from ptycho_layers import _tf_windows

        if _tf_windows.available():
            return functools.partial(
                windows_lib.gather_windows, take_runs=_tf_windows.take_runs
            )
    return None


def gathered_windows(images, image_index, geometry, patch_size):
    """The neighbourhood gather in the layout it comes in: groups first,
    (b, c, N+1, N+1), from the windowed gather where the backend has one
    (see `_windowed_gather`; best transposed where the blend reads it, so
    the transpose fuses into the blend), else groups last,
    (b, N+1, N+1, c), from the element gather every backend has.
    """
    windowed = _windowed_gather(images, patch_size)
    if windowed is not None:
        return windowed(
            images, image_index, geometry["x_start"], geometry["y_start"],
            patch_size + 1,
        )
    _, height, width = ops.shape(images)
    positions = flat_positions(
        image_index, geometry["rows"], geometry["cols"], height, width
    )
    flat = ops.reshape(images, (-1,))
    # Entries read at clamped indices get zero weight in the blend.
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # keras.ops.take would add a pass mapping negative indices.
        return tf.gather(flat, positions)
    return ops.take(flat, positions, axis=0)


def extract_patches_batched(images, offsets, patch_size):
    """Extract all patches at once by a windowed gather and a bilinear blend.

    Differentiable by autodiff on JAX and PyTorch. On TensorFlow the pass
    is meant to run XLA-compiled with the gradients of `gradients` attached,
    as `functional.extract_patches` does: TensorFlow cannot differentiate
    its conditionals under XLA.

    Args:
        images: (Bi, H, W), real or complex; Bi is 1 or B.
        offsets: (B, c, 2), [x, y] in object pixels.
        patch_size: N, a positive Python int.

    Returns:
        (B, N, N, c) in the images' dtype (for float16/bfloat16 images the
        blend runs in float32 and the result is cast back).
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    dtype = standardize_dtype(images.dtype)
    coord = coordinate_dtype(dtype)
    num_images, height, width = ops.shape(images)
    batch, groups = ops.shape(offsets)[0], ops.shape(offsets)[1]

    x, y, finite = sanitize_offsets(offsets, height, width, patch_size, coord)
    image_index = image_indices(batch, num_images)
    # Any data-dependent predicate serves the fusion boundaries.
    predicate = ops.all(finite)

    output = None
    for start, stop in batch_pieces(batch, groups, patch_size):
        part = slice(start, stop)
        window, *weights = _windows_and_weights(
            images, image_index[part], x[part], y[part], patch_size, predicate
        )
        patches = _nan_where_not_finite(
            _blend(window, *weights, dtype), finite[part]
        )
        if stop is None:
            return patches
        if output is None:
            # The first piece, blended straight into the zero-padded output.
            output = ops.pad(
                patches, [[0, batch - stop], [0, 0], [0, 0], [0, 0]]
            )
        else:
            output = _place(output, patches, start)
        # The next piece's gather waits for this piece's result, so only one
        # piece's windows are alive at a time.
        predicate = ops.all(ops.isfinite(ops.real(output[stop - 1, 0, 0, :1])))
    return output


def image_indices(batch, num_images):
    """(batch,) int32: which image each row of offsets reads. With one
    shared object every row reads image 0; with one object per row, row b
    reads image b."""
    return ops.minimum(
        ops.arange(batch, dtype="int32"), ops.cast(num_images - 1, "int32")
    )


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

    x, y, finite = sanitize_offsets(
        offsets, height, width, patch_size, "float32"
    )
    padded = ops.pad(images, [[0, 0], [half, half], [half, half]])
    # Patch k = b*c + j (b-major, c-minor) reads image b, or the only one.
    image_index = image_indices(batch, num_images)[:, None]
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
    return _nan_where_not_finite(ops.transpose(patches, (0, 2, 3, 1)), finite)
