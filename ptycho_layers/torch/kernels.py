"""The PyTorch implementation's kernels, by name (a custom operator
takes its kernel by name: `operators.kernel_spec`)."""

from ptycho_layers.torch import bilinear
from ptycho_layers.torch import fourier
from ptycho_layers.torch import nearest

__all__ = ["KERNELS", "kernel"]

KERNELS = {module.NAME: module for module in (bilinear, fourier, nearest)}


def kernel(spec):
    """The kernel for `spec`: its module, or for a kernel with a
    parameter ("fourier:m") the module's `configured` object."""
    name, _, parameter = spec.partition(":")
    module = KERNELS[name]
    return module.configured(int(parameter)) if parameter else module
