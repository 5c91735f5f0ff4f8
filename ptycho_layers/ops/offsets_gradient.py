"""The gradient of extraction with respect to the offsets, written out.

Per patch, the sum of the upstream values times the derivative of the
patch with respect to x and y. The bilinear weights w0 = (1 - f) *
inside[n] and w1 = f * inside[n+1] carry each offset's fraction f, so the
derivative is the blend with -inside[n] and inside[n+1] in place of the
weights along that axis.
"""

from keras.src.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.ops import extraction
from ptycho_layers.ops import geometry
from ptycho_layers.ops import padded_table
from ptycho_layers.ops import windows

__all__ = ["offsets_gradient"]


def offsets_gradient(images, offsets, upstream):
    """d loss / d offsets for `extraction.extract_patches_batched`.

    Args:
        images: (Bi, H, W), offsets: (B, c, 2), as for the forward pass.
        upstream: (B, N, N, c), d loss / d patches (for complex values
            TensorFlow's convention, dL/d re + i dL/d im).

    Returns:
        (B, c, 2) in the offsets' dtype (the coordinate dtype for integer
        offsets): for complex values, the real part of upstream times the
        conjugate derivative; zero for non-finite offsets.
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    upstream = ops.convert_to_tensor(upstream)
    dtype = standardize_dtype(images.dtype)
    coord = geometry.coordinate_dtype(dtype)
    patch_size = ops.shape(upstream)[1]
    num_images, height, width = ops.shape(images)
    x, y, finite = geometry.sanitize_offsets(
        offsets, height, width, patch_size, coord
    )
    batch, groups = ops.shape(offsets)[0], ops.shape(offsets)[1]
    image_index = geometry.image_indices(batch, num_images)
    # The padded table's runs where they serve; else windows gathered
    # whole (two blends read them, and the fused runs leave the moved rows
    # out).
    padded = padded_table.fits(ops.shape(images), batch, groups, patch_size)
    reader = "padded" if padded else "gathered"

    def reads_and_geometry():
        where = geometry.window_geometry(x, y, height, width, patch_size, coord)
        return windows.window_reads(images, image_index, where, patch_size, reader), where

    # Materialised, and the windows read, as in the forward pass (see
    # `extraction._windows_and_weights`).
    reads, where = backends.current().fusion_boundary(
        reads_and_geometry, ops.all(finite)
    )
    window = windows.read_windows(images, reads, reader, patch_size)
    # d w0 / d f = -inside[n], d w1 / d f = inside[n + 1].
    col_d0 = -where["col_inside"][:, :-1]
    col_d1 = where["col_inside"][:, 1:]
    row_d0 = -where["row_inside"][:, :-1]
    row_d1 = where["row_inside"][:, 1:]
    weights = (where["row_w0"], where["row_w1"], where["col_w0"], where["col_w1"])

    d_x = 0
    d_y = 0
    for part, values in zip(
        geometry.real_parts(upstream, dtype, coord), geometry.real_parts(window, dtype, coord)
    ):
        by_x = extraction.blend_parts(values, *weights[:2], col_d0, col_d1)
        by_y = extraction.blend_parts(values, row_d0, row_d1, *weights[2:])
        d_x = d_x + ops.sum(part * by_x, axis=(1, 2))
        d_y = d_y + ops.sum(part * by_y, axis=(1, 2))
    d_offsets = ops.stack([d_x, d_y], axis=-1)
    d_offsets = ops.where(finite[..., None], d_offsets, ops.zeros_like(d_offsets))
    offsets_dtype = standardize_dtype(offsets.dtype)
    if "float" in offsets_dtype:
        d_offsets = ops.cast(d_offsets, offsets_dtype)
    return d_offsets
