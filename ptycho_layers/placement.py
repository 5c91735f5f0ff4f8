"""`place_patches` and `reassemble`: placement as plain functions.

Placement is the exact adjoint of `extract_patches`, under the same
convention: a patch of size N at offset [x, y] puts its entry [i, j] into
the object at row y - N//2 + i, column x - N//2 + j, spread over the
pixels it would have been sampled from by the same kernel (bilinear: up
to four); what falls outside the object is dropped.
"""

import collections
import threading

import numpy as np
from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers import functional
from ptycho_layers import legacy
from ptycho_layers import operators
from ptycho_layers import validation
from ptycho_layers.backends import batch_sizes
from ptycho_layers.backends import keras_ops as ops

__all__ = [
    "place_patches",
    "reassemble",
    "prepare_patches",
    "dispatch",
    "cropped",
    "normalized",
]


def prepare_patches(patches, offsets):
    """Convert and check `patches` (B, N, N, c) and `offsets` (B, c, 2);
    integer and bool patches are taken as float32."""
    dtype = validation.check_numeric(patches, "patches")
    validation.check_real_offsets(offsets)
    patches = functional.as_float(ops.convert_to_tensor(patches), dtype)
    offsets = ops.convert_to_tensor(offsets)
    patches_shape = validation.check_patches_shape(patches.shape)
    offsets_shape = validation.check_offsets_shape(offsets.shape)
    validation.check_patches_match_offsets(patches_shape, offsets_shape)
    return patches, offsets


def dispatch(patches, offsets, image_shape, batched, per_row, kernel="bilinear"):
    """Place checked patches into (1, H, W), or (B, H, W) per row."""
    height, width = image_shape
    batch, patch_size = tuple(patches.shape)[:2]
    validation.check_object_size(
        batch if per_row else 1, height, width, patch_size or 0,
        backends.current().IMPLEMENTATION, "image_shape",
        f"image_shape={tuple(image_shape)}" + (f", per_row with {batch} rows" if per_row else ""),
    )
    if not batched:
        count = ops.shape(patches)[0] if per_row else 1
        return legacy.place_patches_legacy(patches, offsets, (count, height, width))
    placement = operators.placement(height, width, per_row, kernel, backends.current())
    return placement(patches, offsets)


def place_patches(
    patches, offsets, image_shape, batched=True, per_row=False,
    interpolation="bilinear", fourier_margin=1,
):
    """Add every patch into the object at its offset: the adjoint of
    `extract_patches`.

    Example:

    >>> import numpy as np
    >>> from keras.ops import convert_to_numpy
    >>> patches = np.ones((1, 2, 2, 1), "float32")
    >>> convert_to_numpy(place_patches(patches, [[[2.0, 1.0]]], (3, 4)))[0]
    array([[0., 1., 1., 0.],
           [0., 1., 1., 0.],
           [0., 0., 0., 0.]], dtype=float32)

    Args:
        patches: (B, N, N, c), real or complex: patch k of group b at
            [b, :, :, k].
        offsets: (B, c, 2), [x, y] in object pixels (x = column).
        image_shape: (H, W) of the object.
        batched: True for the vectorized path, False for PtychoPINN's
            per-patch shift-and-sum (the reference, O(H*W) per patch).
        per_row: False: every patch into one object, (1, H, W) (the adjoint
            of extraction from one shared object). True: row b's c patches
            into object b, (B, H, W) (the adjoint of extraction with one
            object per row).
        interpolation, fourier_margin: the kernel, as for
            `extract_patches`; placement is its exact adjoint.

    Returns:
        (1, H, W) or (B, H, W) in the patches' dtype. Integer offsets give
        plain slice-adds; a patch whose offset is not finite adds nothing.
    """
    image_shape = validation.check_image_shape(image_shape)
    batched = validation.check_batched(batched)
    per_row = validation.check_bool(per_row, "per_row")
    kernel = operators.kernel_spec(
        *validation.check_interpolation(interpolation, fourier_margin, batched)
    )
    with backends.graph_scope_for((patches, offsets)):
        patches, offsets = prepare_patches(patches, offsets)
        return dispatch(patches, offsets, image_shape, batched, per_row, kernel)


def _crop_mask(patch_size, crop, dtype):
    """(N, N) ones on the central crop x crop of a patch (rows and columns
    N//2 - crop//2 onwards), zeros elsewhere; all ones for crop None."""
    mask = np.zeros((patch_size, patch_size), dtype)
    crop = patch_size if crop is None else crop
    start = patch_size // 2 - crop // 2
    mask[start:start + crop, start:start + crop] = 1
    return mask


def cropped(patches, crop):
    """(B, N, N, c) patches with zeros outside their central crop x crop
    (as they are for crop None); non-finite values outside it too."""
    if crop is None:
        return patches
    coord = operators.coordinate_dtype(patches.dtype)
    mask = _crop_mask(ops.shape(patches)[1], crop, coord)[None, :, :, None]
    return backends.current().where(mask > 0, patches, ops.zeros_like(patches))


# Coverages placed in the patches' dtype, by the program their own dtype
# would need; bounded (a key is a few numbers).
_FIRST_COVERAGES = collections.OrderedDict()
_FIRST_COVERAGES_KEPT = 256
_LOCK = threading.Lock()


def _mask_dtype(patches, image_shape, per_row, kernel, coord):
    """The dtype to place the crop masks in: `coord`, theirs (real: half
    the work of complex masks); but at the first eager call at a shape of
    complex `patches` (B, N, N, c), the patches' dtype: the program that
    places the patches places the masks too and nothing more is compiled,
    a compile costing far more than the work saved. Their own program is
    compiled when the shape comes again (`backends.batch_sizes` does the
    same for batch sizes)."""
    dtype = standardize_dtype(patches.dtype)
    if dtype not in operators.COMPLEX or not backends.current().compiles_per_shape(patches):
        return coord
    key = (tuple(image_shape), per_row, kernel, tuple(patches.shape), dtype)
    with _LOCK:
        if key in _FIRST_COVERAGES:
            # Kept, not deleted: every later call is not the first.
            _FIRST_COVERAGES.move_to_end(key)
            return coord
        _FIRST_COVERAGES[key] = None
        while len(_FIRST_COVERAGES) > _FIRST_COVERAGES_KEPT:
            _FIRST_COVERAGES.popitem(last=False)
    return dtype


def normalized(
    patches, offsets, image_shape, crop, batched, per_row, floor=None,
    kernel="bilinear",
):
    """place(cropped patches) / place(crop mask), and place(crop mask), the
    coverage, both placed by `kernel` (an `operators.kernel_spec`).

    `floor` None: the average, 0 where no patch reaches; else
    total / (floor + coverage), PtychoPINN's rule.
    """
    dtype = standardize_dtype(patches.dtype)
    coord = operators.coordinate_dtype(dtype)
    mask = _crop_mask(ops.shape(patches)[1], crop, coord)[None, :, :, None]
    mask_dtype = _mask_dtype(patches, image_shape, per_row, kernel, coord)
    if backends.current().compiles_per_shape(patches):
        # In NumPy: an eager operation on JAX compiles (and keeps) a
        # program per batch size.
        masks = np.broadcast_to(mask.astype(mask_dtype), tuple(patches.shape))
    else:  # traced (the batch may be unknown), or PyTorch
        masks = ops.zeros_like(ops.real(patches) if dtype in operators.COMPLEX else patches)
        masks = ops.cast(masks, coord) + mask
    where = backends.current().where
    total = dispatch(
        cropped(patches, crop), offsets, image_shape, batched, per_row, kernel
    )
    if mask_dtype == coord:
        coverage = dispatch(masks, offsets, image_shape, batched, per_row, kernel)
    else:
        with batch_sizes.repeated():
            coverage = dispatch(masks, offsets, image_shape, batched, per_row, kernel)
        coverage = ops.real(coverage)
    if floor is not None:
        return total / ops.cast(floor + coverage, dtype), coverage
    covered = coverage > 0
    safe = ops.cast(where(covered, coverage, ops.ones_like(coverage)), dtype)
    return where(covered, total / safe, ops.zeros_like(total)), coverage


def reassemble(
    patches, offsets, image_shape, crop=None, per_row=False,
    return_coverage=False, batched=True, interpolation="bilinear",
    fourier_margin=1,
):
    """Stitch patches into the object, averaging where they overlap.

    place(patches * mask) / place(mask), `mask` being ones on the central
    crop x crop of each patch (the whole patch for crop None); 0 where no
    patch reaches.

    Example:

    >>> import numpy as np
    >>> from keras.ops import convert_to_numpy
    >>> patches = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)], -1)
    >>> offsets = [[[1.0, 1.0], [2.0, 1.0]]]   # overlapping in column 1
    >>> image = reassemble(patches[None].astype("float32"), offsets, (2, 4))
    >>> convert_to_numpy(image)[0]
    array([[1., 2., 3., 0.],
           [1., 2., 3., 0.]], dtype=float32)

    Args:
        patches, offsets, image_shape, per_row, batched: as for
            `place_patches`.
        crop: None, or the side of each patch's central square that counts.
        return_coverage: also return place(mask), the sum of the weights
            each object pixel received.
        interpolation, fourier_margin: the kernel of both placements, as
            for `extract_patches`. With "fourier" the coverage rings near
            the edges of the scanned area (a band-limited shift of each
            mask's edges), so there the average is less even.

    Returns:
        (1, H, W) or (B, H, W) in the patches' dtype; with
        `return_coverage`, (image, coverage), the coverage real, in the
        coordinate dtype (float32, or float64 for 64-bit patches).
    """
    image_shape = validation.check_image_shape(image_shape)
    batched = validation.check_batched(batched)
    per_row = validation.check_bool(per_row, "per_row")
    return_coverage = validation.check_bool(return_coverage, "return_coverage")
    kernel = operators.kernel_spec(
        *validation.check_interpolation(interpolation, fourier_margin, batched)
    )
    with backends.graph_scope_for((patches, offsets)):
        patches, offsets = prepare_patches(patches, offsets)
        crop = validation.check_crop(crop, patches.shape[1])
        image, coverage = normalized(
            patches, offsets, image_shape, crop, batched, per_row, kernel=kernel
        )
    return (image, coverage) if return_coverage else image
