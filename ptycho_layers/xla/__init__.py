"""The XLA implementation, TensorFlow's and JAX's: `keras.ops` code that
XLA compiles, with XLA's gather and scatter of contiguous runs where the
backend has them (its modules: docs/architecture.md); where there is none
(an ONNX export's trace on TensorFlow), windows are read element by
element.
"""

from ptycho_layers.xla import bilinear
from ptycho_layers.xla import fourier
from ptycho_layers.xla import nearest
from ptycho_layers.xla.extraction import extract
from ptycho_layers.xla.gradient import offsets_gradient
from ptycho_layers.xla.placement import place

__all__ = ["KERNELS", "kernel", "extract", "place", "offsets_gradient"]

# Each kernel's module, by name.
KERNELS = {module.NAME: module for module in (bilinear, fourier, nearest)}


def kernel(spec):
    """The kernel for `spec` (`operators.kernel_spec`): its module, or for
    a kernel with a parameter ("fourier:m") the module's `configured`
    object."""
    name, _, parameter = spec.partition(":")
    module = KERNELS[name]
    return module.configured(int(parameter)) if parameter else module
