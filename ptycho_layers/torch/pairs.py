"""Real pairs as elements, for the PyTorch kernels: the implementation
keeps values as (..., q) real parts (q = 2 for complex values, 1 for real
ones); a kernel that moves or transforms whole values views them as one
element each.

Shapes: pairs (..., q); elements (...).
"""

import torch

__all__ = ["elements"]


def elements(pairs):
    """(..., q) pairs as (...) elements: complex for q = 2 (a view), the
    real values for q = 1.

    Copied as complex elements, a value's two parts move as one 8- or
    16-byte element: a copy across the groups of (B, N, N, c) patches
    (strided by c) ran at under half the speed as real pairs.
    """
    if pairs.shape[-1] == 2:
        return torch.view_as_complex(pairs)
    return pairs[..., 0]
