"""The gradient of extraction with respect to the offsets, written out:
the windows read as the forward pass reads them, and the kernel's
`derivative` of its blend."""

from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.xla import geometry
from ptycho_layers.xla import padded_table
from ptycho_layers.xla import windows

__all__ = ["offsets_gradient"]


def offsets_gradient(images, image_index, x, y, finite, upstream, kernel):
    """d loss / d offsets for `extraction.extract`, before the non-finite
    offsets' are zeroed (`operators.offsets_gradient`).

    Args:
        images: (Bi, H, W); image_index: (B,) int32; x, y: (B, c)
            sanitized offsets; finite: (B, c) bool.
        upstream: (B, N, N, c), d loss / d patches (for complex values
            TensorFlow's convention, dL/d re + i dL/d im).
        kernel: the kernel's module.

    Returns:
        (B, c, 2) in the coordinate dtype: for complex values, the real
        part of upstream times the conjugate derivative.
    """
    dtype = standardize_dtype(images.dtype)
    coord = standardize_dtype(x.dtype)
    patch_size = ops.shape(upstream)[1]
    size = kernel.window_size(patch_size)
    _, height, width = ops.shape(images)
    batch, groups = ops.shape(x)
    # The padded table's runs where they serve; else windows gathered
    # whole (two blends read them, and the fused runs leave the moved rows
    # out).
    padded = padded_table.fits(ops.shape(images), batch, groups, patch_size, size)
    reader = "padded" if padded else "gathered"

    def reads_and_geometry():
        where = geometry.window_geometry(x, y, height, width, patch_size, kernel, coord)
        return windows.window_reads(images, image_index, where, size, reader), where

    # Materialised, and the windows read, as in the forward pass (see
    # `extraction._windows_and_weights`).
    reads, where = backends.current().fusion_boundary(
        reads_and_geometry, ops.all(finite)
    )
    window = windows.read_windows(images, reads, reader, size)
    d_x, d_y = kernel.derivative(
        geometry.real_parts(window, dtype, coord),
        geometry.real_parts(upstream, dtype, coord),
        where,
    )
    return ops.stack([d_x, d_y], axis=-1)
