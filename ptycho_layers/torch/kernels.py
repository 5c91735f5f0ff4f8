"""The PyTorch implementation's kernels, by name (a custom operator
takes its kernel by name)."""

from ptycho_layers.torch import bilinear

__all__ = ["KERNELS"]

KERNELS = {bilinear.NAME: bilinear}
