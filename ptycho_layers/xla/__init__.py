"""The XLA implementation, TensorFlow's and JAX's: `keras.ops` code that
XLA compiles, with XLA's gather and scatter of contiguous runs
(`backends.current().take_runs` / `add_runs`) where the backend has them.

- `geometry`: sanitized offsets -> where each window lies, and the
  kernel's weights;
- `runs`: windows as contiguous runs of the flattened object;
- `padded_table`: the runs of a padded copy of a small object instead,
  with no masks;
- `windows`: how extraction reads its windows (padded table, fused runs,
  or gathered into a buffer);
- `extraction`, `placement`, `gradient`: the window gather, the
  window scatter-add and the offsets' gradient, each composed with a
  kernel;
- `bilinear`: the bilinear kernel (blend, its adjoint, its derivative).

Where there is no run gather (an ONNX export's trace on TensorFlow) the
same code reads windows element by element.
"""

from ptycho_layers.xla import bilinear
from ptycho_layers.xla.extraction import extract
from ptycho_layers.xla.gradient import offsets_gradient
from ptycho_layers.xla.placement import place

__all__ = ["KERNELS", "extract", "place", "offsets_gradient"]

# Each kernel's module, by name.
KERNELS = {bilinear.NAME: bilinear}
