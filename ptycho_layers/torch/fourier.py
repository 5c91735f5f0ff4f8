"""The Fourier-shift kernel of the PyTorch implementation, in every
direction (the definition: `ptycho_layers.xla.fourier`).

With margin m, a patch of size N reads the S x S window, S = N + 2m,
whose top-left is (floor(y) - N//2 - m, floor(x) - N//2 - m), and is the
central N x N of IDFT(DFT(window) * ramp), the ramp
exp(2 pi i (u fy + v fx)) applied as its row and column factors (two
products with (S, 1) and (1, S) factors, no (S, S) ramp per patch). Both
fractions zero: the plain slice.

The margin is a parameter of the kernel, so this module offers the
kernel as an object: `configured(m)`, whose methods are bilinear's
module functions (`torch.bilinear`).

Shapes: windows (b, c, S, S, q) and patches or values (b, c, N, N, q) in
real pairs (q = 2 for complex values, 1 for real ones); fx, fy
(b, c, 1, 1, 1), the offsets' fractions (NaN in fy makes the patch NaN).
"""

import functools
import math

import torch

from ptycho_layers.torch.pairs import elements

__all__ = ["NAME", "configured"]

NAME = "fourier"


@functools.lru_cache(maxsize=None)
def configured(margin):
    """The kernel of margin `margin` (a positive int), one object per
    margin."""
    return FourierShift(margin)


def _as_pairs(values, q):
    """Complex `values` (...) as (..., q) pairs: both parts for q = 2 (a
    view), the real part for q = 1."""
    if q == 2:
        return torch.view_as_real(values)
    return values.real[..., None]


class FourierShift:
    """The Fourier-shift kernel of margin `margin`: bilinear's contract
    (`torch.bilinear`), as methods."""

    def __init__(self, margin):
        self.margin = margin
        self.NAME = f"{NAME}:{margin}"

    def __repr__(self):
        return f"<torch kernel {self.NAME}>"

    # Pieces of 16 `pieces.PIECE_BYTES` of windows (about 240 rows of four
    # 66 x 66 complex64 windows): each FFT call costs as much again as its
    # arithmetic on a few dozen windows, and the FFTs, not the memory
    # traffic, are the work.
    PIECE_SCALE = 16

    def window_size(self, patch_size):
        """S = N + 2m: the patch and its margin on every side."""
        return patch_size + 2 * self.margin

    def origin(self, offset, patch_size):
        """(start, fraction): the window's first index, (b, c) int64, and
        the offset's sub-pixel part, (b, c) in [0, 1), along one axis."""
        floor = torch.floor(offset)
        return floor.long() - patch_size // 2 - self.margin, offset - floor

    def zero_weights(self, fx, fy):
        """Whether some offset's fractions are both zero: its patch is the
        plain slice, not the round trip of two FFTs. Asked once per call."""
        return bool(torch.any((fx == 0) & (fy == 0)))

    def _ramps(self, fx, fy, size, sign):
        """The ramp's row and column factors, (b, c, S, 1) and (b, c, 1, S)
        complex: exp(sign 2 pi i u fy) and exp(sign 2 pi i v fx)."""
        frequencies = torch.fft.fftfreq(size, dtype=fx.dtype, device=fx.device)
        frequencies = frequencies * (sign * 2 * math.pi)
        rows = fy[..., 0] * frequencies[:, None]
        cols = fx[..., 0] * frequencies
        return (
            torch.polar(torch.ones_like(rows), rows),
            torch.polar(torch.ones_like(cols), cols),
        )

    def _whole(self, fx, fy):
        """(b, c, 1, 1, 1) bool: the offsets whose fractions are both zero."""
        return (fx == 0) & (fy == 0)

    def _central(self, values):
        """The central N x N of (b, c, S, S, ...) `values`."""
        m = self.margin
        n = values.shape[2] - 2 * m
        return values[:, :, m:m + n, m:m + n]

    def blend(self, window, fx, fy, fused):
        """Patches (b, c, N, N, q) from windows (b, c, S, S, q), the whole
        batch (one expression, `fused` or not)."""
        q = window.shape[-1]
        rows, cols = self._ramps(fx, fy, window.shape[2], 1)
        spectrum = torch.fft.fft2(elements(window)) * rows * cols
        patches = _as_pairs(self._central(torch.fft.ifft2(spectrum)), q)
        return torch.where(self._whole(fx, fy), self._central(window), patches)

    def piece_scratch(self, window):
        """None: the spectra are fresh per piece (an FFT written into `out=`
        computes into a buffer of its own and copies it there)."""
        return None

    def piece_views(self, window, scratch):
        """The windows (count, c, S, S, q) themselves."""
        return window

    def blend_piece(self, window, fx, fy, out, guard):
        """The blend of a piece's windows (count, c, S, S, q) into `out`
        (count, c, N, N, q); `guard`: `zero_weights` of the call's
        fractions."""
        rows, cols = self._ramps(fx, fy, window.shape[2], 1)
        spectrum = torch.fft.fft2(elements(window))
        spectrum.mul_(rows).mul_(cols)
        shifted = torch.fft.ifft2(spectrum)
        out.copy_(_as_pairs(self._central(shifted), out.shape[-1]))
        if guard:
            torch.where(self._whole(fx, fy), self._central(window), out, out=out)
        return out

    def spread(self, values, fx, fy, fused):
        """Windows (b, c, S, S, q) from values (b, c, N, N, q), the whole
        batch: each patch zero-padded by the margin and shifted back (the
        conjugate ramp)."""
        m = self.margin
        q = values.shape[-1]
        padded = torch.nn.functional.pad(values, (0, 0, m, m, m, m))
        rows, cols = self._ramps(fx, fy, padded.shape[2], -1)
        spectrum = torch.fft.fft2(elements(padded)) * rows * cols
        windows = _as_pairs(torch.fft.ifft2(spectrum), q)
        return torch.where(self._whole(fx, fy), padded, windows)

    def spread_buffers(self, values, count):
        """The buffers `spread_into` writes, for `count` rows of `values`
        (b, c, N, N, q): (staged, windows), the patches zero-padded by the
        margin, (count, c, S, S) complex, and the windows
        (count, c, S * S, q). The margins of `staged` are zeroed here,
        once: reused piece after piece, only its centre is written."""
        _, groups, n, _, q = values.shape
        size = n + 2 * self.margin
        dtype = torch.complex128 if values.dtype == torch.float64 else torch.complex64
        staged = values.new_zeros((count, groups, size, size), dtype=dtype)
        windows = values.new_empty((count, groups, size * size, q))
        return staged, windows

    def spread_into(self, values, fx, fy, staged, windows, guard):
        """The blend's adjoint (`spread`) of values (b, c, N, N, q) with
        fractions fx, fy (b, c, 1, 1, 1), into buffers from
        `spread_buffers`: returns the windows (b, c, S, S, q)."""
        b, c, _, _, q = values.shape
        size = staged.shape[-1]
        self._central(staged).copy_(elements(values))
        rows, cols = self._ramps(fx, fy, size, -1)
        spectrum = torch.fft.fft2(staged)
        spectrum.mul_(rows).mul_(cols)
        result = windows.view(b, c, size, size, q)
        result.copy_(_as_pairs(torch.fft.ifft2(spectrum), q))
        if guard:
            torch.where(self._whole(fx, fy), _as_pairs(staged, q), result, out=result)
        return result
