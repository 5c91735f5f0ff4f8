"""The PyTorch implementation: the operators in PyTorch's own terms, in
real pairs (`torch.view_as_real`: inductor generates no code for complex
tensors; viewing the result as complex is free).

No run gather, no fusion across a boundary, and no conditional on data (a
device synchronisation, and it breaks `torch.compile(fullgraph=True)` and
`torch.export`): on the CPU the batch a piece at a time (`pieces`,
`placement`, outputs from `buffers`); elsewhere whole windows of the
object zero-padded (`windows`). Patches are computed groups first,
(b, c, N, N), in which a patch row is contiguous, and returned as the
(B, N, N, c) view. The offsets' gradient is the XLA implementation's
`keras.ops` code with the kernel's XLA module (the same interpolation).
"""

from ptycho_layers import validation
from ptycho_layers import xla
from ptycho_layers.torch.kernels import KERNELS
from ptycho_layers.torch.kernels import kernel
from ptycho_layers.torch.windows import extract
from ptycho_layers.torch.windows import place

__all__ = ["KERNELS", "kernel", "extract", "place", "offsets_gradient"]


def offsets_gradient(images, image_index, x, y, finite, upstream, kernel):
    """`xla.offsets_gradient` with `kernel`'s XLA module: (b, c, 2) from
    `images` (Bi, H, W), `image_index` (b,), sanitized `x`, `y` and
    `finite` (b, c), and `upstream` (b, N, N, c). Its 32-bit positions
    bound the object's size."""
    validation.check_object_size(
        *images.shape, upstream.shape[1], "xla", "images",
        f"images.shape={tuple(images.shape)}",
    )
    kernel = xla.kernel(kernel.NAME)
    return xla.offsets_gradient(images, image_index, x, y, finite, upstream, kernel)
