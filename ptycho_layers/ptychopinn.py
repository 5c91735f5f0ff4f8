"""Drop-ins for PtychoPINN's `get_image_patches` and `reassemble_position`."""

import numpy as np

from ptycho_layers import functional
from ptycho_layers import placement
from ptycho_layers import validation
from ptycho_layers.backends import keras_ops as ops

__all__ = ["get_image_patches", "reassemble_position"]


def get_image_patches(
    gt_image, global_offsets, local_offsets, N, gridsize, batched=True
):
    """Patches of `gt_image` at `global_offsets + local_offsets`.

    Same arguments and result as PtychoPINN's function, computed by this
    project's kernels: `batched=True` (default) runs the vectorized path,
    `batched=False` the per-patch loop PtychoPINN itself runs.

    Example:

    >>> import numpy as np
    >>> obj = np.ones((32, 32), "complex64")
    >>> global_offsets = np.full((3, 1, 2, 1), 16.0, "float32")
    >>> local_offsets = np.zeros((3, 1, 2, 4), "float32")
    >>> tuple(get_image_patches(obj, global_offsets, local_offsets, 8, 2).shape)
    (3, 8, 8, 4)

    Args:
        gt_image: (H, W) or (H, W, 1) object, real or complex.
        global_offsets: (B, 1, 2, c) or (B, 1, 2, 1), [x, y] on axis 2.
        local_offsets: (B, 1, 2, c), [x, y] on axis 2.
        N: patch size.
        gridsize: the group is gridsize x gridsize scan positions, so
            c = gridsize**2.

    Returns:
        (B, N, N, c) complex64. Flattened b-major, c-minor (row b*c + k),
        patch k of group b sits at `[b, :, :, k]`.
    """
    N = validation.check_positive_int(N, name="N")
    gridsize = validation.check_positive_int(gridsize, name="gridsize")
    validation.check_real_offsets(global_offsets, "global_offsets")
    validation.check_real_offsets(local_offsets, "local_offsets")
    validation.check_numeric(gt_image, "gt_image")
    # NumPy offsets are summed and transposed (below) in NumPy: eager
    # operations on JAX compile, and keep, a program per batch size.
    host = isinstance(global_offsets, np.ndarray) and isinstance(local_offsets, np.ndarray)
    array = np if host else ops
    if not host:
        global_offsets = ops.convert_to_tensor(global_offsets)
        local_offsets = ops.convert_to_tensor(local_offsets)
    offsets = global_offsets + local_offsets
    groups = gridsize * gridsize
    if len(offsets.shape) != 4 or tuple(offsets.shape[1:]) != (1, 2, groups):
        raise ValueError(
            "Arguments `global_offsets` + `local_offsets` must have shape "
            f"(B, 1, 2, gridsize**2) = (B, 1, 2, {groups}). Received: "
            f"global_offsets.shape={tuple(ops.shape(global_offsets))}, "
            f"local_offsets.shape={tuple(ops.shape(local_offsets))}"
        )
    # (B, 1, 2, c) -> (B, c, 2): [x, y] moves to the last axis.
    offsets = array.transpose(offsets[:, 0], (0, 2, 1))
    image = validation.single_object(ops.convert_to_tensor(gt_image), "gt_image")
    image = ops.cast(image, "complex64")
    return functional.extract_patches(image[None], offsets, N, batched)


# The placed canvas's side is a multiple of this (`reassemble_position`).
_CANVAS_STEP = 32


def reassemble_position(obj_tensor, global_offsets, M=10, batched=True):
    """Stitch a scan's patches into one object, as PtychoPINN's function of
    the same name does: same arrays in, same canvas out.

    Each patch's central M x M (rows and columns N//2 - M//2 to
    N//2 + M//2) is placed at its offset, the offsets first centred on
    their mean, on a square canvas of side M + 2 * pad, `pad` being
    ceil(max |centred offset|) rounded up to even; the sum is divided by
    1e-9 + the sum of the crops' ones. A patch at centred offset [0, 0]
    lands in the canvas's centre. Offsets are centred in float64 here
    (PtychoPINN centres and samples in float32: about 1.6e-4 of max|object|
    from exact on random positions; exact positions on a 1/16-pixel grid
    agree to float32 rounding). `batched=False` runs PtychoPINN's
    per-patch shift-and-sum, in float32 coordinates.

    Example:

    >>> import numpy as np
    >>> from keras.ops import convert_to_numpy
    >>> patches = np.ones((2, 8, 8, 1), "complex64")
    >>> offsets = np.array([[0.0, 0.0], [4.0, 0.0]]).reshape(2, 1, 1, 2)
    >>> canvas = convert_to_numpy(reassemble_position(patches, offsets, M=4))
    >>> canvas.shape, canvas.dtype   # side 4 + 2 * pad, pad = 2
    ((8, 8, 1), dtype('complex64'))
    >>> canvas[:, :, 0].real.round(6).sum(axis=1)   # rows 2 to 5 covered
    array([0., 0., 8., 8., 8., 8., 0., 0.], dtype=float32)

    Args:
        obj_tensor: (K, N, N, 1) patches, complex64 (real is cast).
        global_offsets: (K, 1, 1, 2), [x, y] on the last axis.
        M: the side of the central crop that counts (PtychoPINN's crop
            takes 2 * (M // 2) pixels).

    Returns:
        (S, S, 1) complex64, S = 2 * (M // 2) + 2 * pad.
    """
    M = validation.check_positive_int(M, name="M")
    validation.check_numeric(obj_tensor, "obj_tensor")
    validation.check_real_offsets(global_offsets, "global_offsets")
    if isinstance(obj_tensor, np.ndarray):
        # Cast and cropped (below) in NumPy: eager operations on JAX
        # compile, and keep, a program per number of patches.
        patches = obj_tensor.astype("complex64", copy=False)
    else:
        patches = ops.cast(ops.convert_to_tensor(obj_tensor), "complex64")
    offsets = ops.convert_to_numpy(global_offsets).astype("float64")
    shape = tuple(patches.shape)
    if len(shape) != 4 or shape[-1] != 1 or shape[1] != shape[2]:
        raise ValueError(
            "Argument `obj_tensor` must have shape (K, N, N, 1). "
            f"Received: obj_tensor.shape={shape}"
        )
    if offsets.shape != (shape[0], 1, 1, 2):
        raise ValueError(
            "Argument `global_offsets` must have shape (K, 1, 1, 2) with K = "
            f"{shape[0]}, [x, y] on the last axis. Received: "
            f"global_offsets.shape={offsets.shape}"
        )
    size = shape[1]
    half_crop = min(M // 2, size // 2)
    crop = 2 * half_crop
    if crop < 1:
        raise ValueError(
            f"Argument `M` must be at least 2 (the crop is 2 * (M // 2) "
            f"pixels). Received: M={M}"
        )
    start = size // 2 - half_crop
    patches = patches[:, start:start + crop, start:start + crop, :]
    offsets = offsets[:, 0, 0, :]
    # The canvas's side comes from the offsets: each must be finite, and
    # the canvas indexable (as for any object).
    if not np.all(np.isfinite(offsets)):
        bad = offsets[~np.all(np.isfinite(offsets), axis=-1)][0]
        raise ValueError(
            "Argument `global_offsets` must be finite: the canvas's size is "
            "computed from them. Received: global_offsets with "
            f"{int(np.sum(~np.all(np.isfinite(offsets), axis=-1)))} non-finite "
            f"position(s), the first [x, y] = {bad.tolist()}"
        )
    # The canvas size follows PtychoPINN's float32 arithmetic; the
    # positions are centred in float64.
    as_float32 = offsets.astype("float32")
    spread = float(np.max(np.abs(offsets - offsets.mean(axis=0))))
    if not np.isfinite(np.max(np.abs(as_float32 - as_float32.mean(axis=0)))) or (
        crop + 2 * spread + 2 > validation.INDEX_LIMIT**0.5
    ):
        raise ValueError(
            "Argument `global_offsets` spreads too far for one canvas: the "
            f"canvas would be about {crop + 2 * spread:.3g} pixels on a side, "
            f"more than {int(validation.INDEX_LIMIT**0.5)}. Received: "
            f"global_offsets with max |x - mean x|, |y - mean y| = {spread:.6g}"
        )
    pad = int(np.ceil(np.max(np.abs(as_float32 - as_float32.mean(axis=0)))))
    pad += pad % 2
    side = crop + 2 * pad
    # Placed into a canvas of a side rounded up to a multiple of
    # _CANVAS_STEP, the canvas cut out of its centre: the side follows the
    # offsets, and each new side would compile new programs (placement's
    # are per object shape). What falls in the margin is cut off, as it
    # would have been dropped.
    placed_side = -(-side // _CANVAS_STEP) * _CANVAS_STEP if batched else side
    margin = (placed_side - side) // 2  # both even
    centred = offsets - offsets.mean(axis=0) + pad + crop // 2 + margin
    image, _ = placement.normalized(
        patches, centred[:, None, :], (placed_side, placed_side), None, batched,
        False, floor=1e-9,
    )
    return image[0, margin:margin + side, margin:margin + side, None]
