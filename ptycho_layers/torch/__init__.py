"""The PyTorch implementation: the operators in PyTorch's own terms, in
real pairs.

PyTorch has no gather of contiguous runs and none of XLA's tricks apply:
nothing is fused across a boundary, and a conditional on data would only
cost a device synchronisation and break graph capture
(`torch.compile(fullgraph=True)`, `torch.export`). So:

- Complex values travel as `torch.view_as_real` pairs (inductor generates
  no code for complex tensors) and are viewed as complex at the end,
  which is free.
- On the CPU (`pieces`, `placement`) the batch goes a piece at a time,
  written in place, with outputs from a pool of freed buffers
  (`buffers`): op by op, every intermediate as large as the output would
  cost as much in page faults as the arithmetic. `torch.compile` calls
  these as custom operators.
- On other devices (`windows`), whole windows of the object zero-padded,
  gathered by one advanced indexing of an `as_strided` view and blended
  in one expression that inductor fuses; placement adds the windows with
  one scatter-add.
- Patches are computed groups first, (b, c, N, N), the layout in which a
  patch row is contiguous, and returned as the (B, N, N, c) view of it.

The offsets' gradient is the XLA implementation's `keras.ops` code
(`ptycho_layers.xla.gradient`), which reads the windows element by element
here, with the kernel's XLA module: both kernels' modules define the same
interpolation.
"""

from ptycho_layers import xla
from ptycho_layers.torch.kernels import KERNELS
from ptycho_layers.torch.windows import extract
from ptycho_layers.torch.windows import place

__all__ = ["KERNELS", "extract", "place", "offsets_gradient"]


def offsets_gradient(images, image_index, x, y, finite, upstream, kernel):
    """`xla.offsets_gradient` with `kernel`'s XLA module."""
    kernel = xla.KERNELS[kernel.NAME]
    return xla.offsets_gradient(images, image_index, x, y, finite, upstream, kernel)
