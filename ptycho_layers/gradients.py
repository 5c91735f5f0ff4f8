"""The vector-Jacobian products of the vectorized kernel, written out.

`kernels.extract_patches_batched` is differentiable by autodiff on JAX and
PyTorch. TensorFlow cannot differentiate it under XLA (the gradient of a
conditional keeps the branch's intermediates as optionals, which XLA lacks,
and the in-place update of a piece has none), so on TensorFlow these
functions are its gradient; written out, they are also faster than the
derived ones. They are pure functions of tensors, like the kernels, so
every backend can check them against its own autodiff.

Upstream values follow TensorFlow's convention for complex tensors: for a
real loss L, `upstream = dL/d(re) + i dL/d(im)` (JAX's cotangent is its
conjugate).
"""

import keras
from keras import ops
from keras.src.backend import standardize_dtype

from ptycho_layers import kernels

__all__ = ["images_gradient", "offsets_gradient"]

COMPLEX = ("complex64", "complex128")


def _real_parts(values, dtype, coord):
    """[real, imag] of complex `values`, else [values in `coord`]."""
    if dtype in COMPLEX:
        return [ops.real(values), ops.imag(values)]
    return [ops.cast(values, coord)]


def _groups_first_geometry(images, x, y, patch_size, predicate):
    """Window starts and blend weights with the groups first, materialised.

    x, y: (b, c) sanitized offsets. Returns (x_start, y_start, row_w0,
    row_w1, col_w0, col_w1): (b, c) int32 starts and (b, c, N) weights.

    Behind a fusion boundary: fused into the loops over window entries, XLA
    would recompute them from the offsets for every entry. (The transposes
    also keep XLA from turning the boundary into a select, which it does
    when a branch holds only elementwise operations.)
    """
    _, height, width = ops.shape(images)
    coord = standardize_dtype(x.dtype)

    def compute():
        geometry = kernels.window_geometry(
            x, y, height, width, patch_size, coord
        )
        weights = [
            ops.transpose(geometry[k], (0, 2, 1))
            for k in ("row_w0", "row_w1", "col_w0", "col_w1")
        ]
        return (geometry["x_start"], geometry["y_start"], *weights)

    return kernels.fusion_boundary(compute, predicate)


def _spread(upstream, row_w0, row_w1, col_w0, col_w1):
    """The adjoint of the bilinear blend, on real values, groups first.

    upstream: (b, c, N, N); weights (b, c, N). Returns (b, c, N+1, N+1):
    what each window entry contributed, summed over the patch entries that
    read it. Window entry (p, q) is read by patch entries (p or p-1, q or
    q-1); with the upstream values and the weights padded by zeros that is
    one elementwise expression (one loop under XLA).
    """
    pad_end = [[0, 0], [0, 0], [0, 1]]
    pad_start = [[0, 0], [0, 0], [1, 0]]
    # (b, c, N+1): weight of window entry n as the first neighbour of
    # patch entry n (w0) or the second neighbour of patch entry n-1 (w1).
    col_w0 = ops.pad(col_w0, pad_end)[:, :, None, :]
    col_w1 = ops.pad(col_w1, pad_start)[:, :, None, :]
    row_w0 = ops.pad(row_w0, pad_end)[:, :, :, None]
    row_w1 = ops.pad(row_w1, pad_start)[:, :, :, None]
    padded = ops.pad(upstream, [[0, 0], [0, 0], [1, 1], [1, 1]])
    size = ops.shape(upstream)[-1] + 1

    def at(row, col):
        # padded[p + row, q + col] for every window entry (p, q).
        return padded[:, :, row:row + size, col:col + size]

    same_row = col_w0 * at(1, 1) + col_w1 * at(1, 0)
    row_above = col_w0 * at(0, 1) + col_w1 * at(0, 0)
    return row_w0 * same_row + row_w1 * row_above


def images_gradient(images, offsets, patch_size, upstream):
    """d loss / d images for `kernels.extract_patches_batched`.

    Args:
        images: (Bi, H, W), offsets: (B, c, 2), patch_size: N, as for the
            forward pass.
        upstream: (B, N, N, c), d loss / d patches.

    Returns:
        (Bi, H, W) in the images' dtype: each window's share of the
        upstream values added back into its object. O(K*N^2) work, plus
        zeroing an object-sized result.
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    dtype = standardize_dtype(images.dtype)
    coord = kernels.coordinate_dtype(dtype)
    num_images, height, width = ops.shape(images)
    x, y, finite = kernels.sanitize_offsets(
        offsets, height, width, patch_size, coord
    )
    x_start, y_start, *weights = _groups_first_geometry(
        images, x, y, patch_size, ops.all(finite)
    )
    upstream = ops.transpose(ops.convert_to_tensor(upstream), (0, 3, 1, 2))
    spread = [
        _spread(part, *weights) for part in _real_parts(upstream, dtype, coord)
    ]
    if dtype in COMPLEX:
        contributions = kernels.complex_from_parts(*spread, dtype)
    else:
        contributions = ops.cast(spread[0], dtype)
    image_index = kernels.image_indices(ops.shape(offsets)[0], num_images)
    return _add_windows(
        contributions, image_index, x_start, y_start, ops.shape(images)
    )


def _add_windows(contributions, image_index, x_start, y_start, shape):
    """Add (b, c, P, P) windows into zeros of `shape` (Bi, H, W), window
    (b, k) at rows y_start[b, k]... and columns x_start[b, k]... of image
    image_index[b]. Entries outside the images are zero and dropped."""
    size = ops.shape(contributions)[-1]
    _, height, width = shape
    if keras.backend.backend() == "tensorflow" and isinstance(width, int) and width >= size:
        from ptycho_layers import _tf_windows

        if _tf_windows.available():
            return _tf_windows.add_windows(
                contributions, image_index, x_start, y_start, shape
            )
    span = ops.arange(size, dtype="int32")
    rows = ops.clip(y_start[:, :, None] + span, 0, height - 1)
    cols = ops.clip(x_start[:, :, None] + span, 0, width - 1)
    # Entries at clamped indices are zero: adding them changes nothing.
    positions = (
        (image_index[:, None, None, None] * height + rows[:, :, :, None])
        * width
        + cols[:, :, None, :]
    )
    total = _add_at(
        ops.reshape(contributions, (-1,)),
        ops.reshape(positions, (-1,)),
        shape[0] * height * width,
    )
    return ops.reshape(total, shape)


def _add_at(values, positions, size):
    """zeros(size) with values[k] added at positions[k] (1-D tensors).

    Not `keras.ops.segment_sum`: on PyTorch it casts the values to float32,
    dropping imaginary parts and float64 precision.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        total = torch.zeros(size, dtype=values.dtype, device=values.device)
        return total.index_add_(0, positions.long(), values)
    return ops.segment_sum(values, positions, num_segments=size)


def offsets_gradient(images, offsets, patch_size, upstream):
    """d loss / d offsets for `kernels.extract_patches_batched`.

    Args:
        images: (Bi, H, W), offsets: (B, c, 2), patch_size: N, as for the
            forward pass.
        upstream: (B, N, N, c), d loss / d patches.

    Returns:
        (B, c, 2) in the offsets' dtype: per patch, the sum of upstream
        times the derivative of the patch with respect to x and y (for
        complex values, the real part of upstream times its conjugate).
        The weights w0 = (1 - f) * inside[n] and w1 = f * inside[n+1] carry
        the offsets' fraction f; zero for non-finite offsets.
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    dtype = standardize_dtype(images.dtype)
    coord = kernels.coordinate_dtype(dtype)
    num_images, height, width = ops.shape(images)
    x, y, finite = kernels.sanitize_offsets(
        offsets, height, width, patch_size, coord
    )
    image_index = kernels.image_indices(ops.shape(offsets)[0], num_images)

    def windows_and_geometry():
        geometry = kernels.window_geometry(
            x, y, height, width, patch_size, coord
        )
        window = kernels.windows(images, image_index, geometry, patch_size)
        return window, geometry

    # Materialised, as in the forward pass (see `_windows_and_weights`).
    window, geometry = kernels.fusion_boundary(
        windows_and_geometry, ops.all(finite)
    )
    # d w0 / d f = -inside[n], d w1 / d f = inside[n + 1].
    col_d0 = -geometry["col_inside"][:, None, :-1]
    col_d1 = geometry["col_inside"][:, None, 1:]
    row_d0 = -geometry["row_inside"][:, :-1, None]
    row_d1 = geometry["row_inside"][:, 1:, None]
    col_w0 = geometry["col_w0"][:, None]
    col_w1 = geometry["col_w1"][:, None]
    row_w0 = geometry["row_w0"][:, :, None]
    row_w1 = geometry["row_w1"][:, :, None]

    d_x = 0
    d_y = 0
    parts = zip(
        _real_parts(ops.convert_to_tensor(upstream), dtype, coord),
        _real_parts(window, dtype, coord),
    )
    for part, values in parts:
        across = col_w0 * values[:, :, :-1] + col_w1 * values[:, :, 1:]
        across_dx = col_d0 * values[:, :, :-1] + col_d1 * values[:, :, 1:]
        by_x = row_w0 * across_dx[:, :-1] + row_w1 * across_dx[:, 1:]
        by_y = row_d0 * across[:, :-1] + row_d1 * across[:, 1:]
        d_x = d_x + ops.sum(part * by_x, axis=(1, 2))
        d_y = d_y + ops.sum(part * by_y, axis=(1, 2))
    d_offsets = ops.stack([d_x, d_y], axis=-1)
    d_offsets = ops.where(finite[..., None], d_offsets, ops.zeros_like(d_offsets))
    offsets_dtype = standardize_dtype(offsets.dtype)
    if "float" in offsets_dtype:
        d_offsets = ops.cast(d_offsets, offsets_dtype)
    return d_offsets
