"""A drop-in for PtychoPINN's `get_image_patches`."""

from keras import ops

from ptycho_layers import functional
from ptycho_layers import validation

__all__ = ["get_image_patches"]


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
    offsets = ops.convert_to_tensor(global_offsets) + ops.convert_to_tensor(
        local_offsets
    )
    groups = gridsize * gridsize
    if len(offsets.shape) != 4 or tuple(offsets.shape[1:]) != (1, 2, groups):
        raise ValueError(
            "Arguments `global_offsets` + `local_offsets` must have shape "
            f"(B, 1, 2, gridsize**2) = (B, 1, 2, {groups}). Received: "
            f"global_offsets.shape={tuple(ops.shape(global_offsets))}, "
            f"local_offsets.shape={tuple(ops.shape(local_offsets))}"
        )
    # (B, 1, 2, c) -> (B, c, 2): [x, y] moves to the last axis.
    offsets = ops.transpose(offsets[:, 0], (0, 2, 1))
    image = validation.single_object(ops.convert_to_tensor(gt_image), "gt_image")
    image = ops.cast(image, "complex64")
    return functional.extract_patches(image[None], offsets, N, batched)
