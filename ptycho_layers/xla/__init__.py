"""The XLA implementation, TensorFlow's and JAX's: `keras.ops` code that
XLA compiles, with XLA's gather and scatter of contiguous runs where the
backend has them (its modules: docs/architecture.md); where there is none
(an ONNX export's trace on TensorFlow), windows are read element by
element.
"""

from ptycho_layers.xla import bilinear
from ptycho_layers.xla.extraction import extract
from ptycho_layers.xla.gradient import offsets_gradient
from ptycho_layers.xla.placement import place

__all__ = ["KERNELS", "extract", "place", "offsets_gradient"]

# Each kernel's module, by name.
KERNELS = {bilinear.NAME: bilinear}
