"""The operators' math, written once in `keras.ops`, with no backend names.

What differs between backends (the run gather, complex assembly, how a
kernel is compiled) is asked of `ptycho_layers.backends.current()`.

- `geometry`: offsets -> window starts and bilinear weights, shared by
  every direction of the operator.
- `runs`: windows as contiguous runs of the flattened object (XLA).
- `padded_table`: the runs of a padded copy of a small object instead, with
  no masks.
- `windows`: how extraction reads its windows (padded table, fused runs, or
  gathered into a buffer).
- `extraction`: the vectorized extraction kernel.
- `placement`: its exact adjoint (and its gradient w.r.t. the object).
- `offsets_gradient`: extraction's gradient w.r.t. the offsets.
- `legacy`: PtychoPINN's per-patch algorithms (extraction, shift-and-sum),
  the references.
"""

from ptycho_layers.ops.extraction import batch_pieces
from ptycho_layers.ops.extraction import extract_patches_batched
from ptycho_layers.ops.geometry import coordinate_dtype
from ptycho_layers.ops.legacy import extract_patches_legacy
from ptycho_layers.ops.legacy import place_patches_legacy
from ptycho_layers.ops.offsets_gradient import offsets_gradient
from ptycho_layers.ops.placement import place_patches_batched

__all__ = [
    "batch_pieces",
    "coordinate_dtype",
    "extract_patches_batched",
    "extract_patches_legacy",
    "offsets_gradient",
    "place_patches_batched",
    "place_patches_legacy",
]
