"""The Fourier-shift kernel of the XLA implementation, in every direction.

With margin m, a patch of size N at offset [x, y] reads the (N+2m) x (N+2m)
window whose top-left is (floor(y) - N//2 - m, floor(x) - N//2 - m) and is

    crop_m(IDFT(DFT(window) * exp(2 pi i (u fy + v fx))))

fy, fx the offset's fractions, u, v the DFT frequencies of the window's
rows and columns (`numpy.fft.fftfreq(N + 2m)`, the Nyquist bin at -1/2),
crop_m the central N x N: a band-limited shift, with no blur. For real
values the patch is the real part. An offset whose fractions are both
zero gives the window's central N x N itself (the plain slice, as every
kernel gives), not the round trip of two FFTs.

The margin is a parameter of the kernel, so this module offers the
kernel as an object: `configured(m)`, whose methods are bilinear's
module functions (docs/architecture.md, "How to add a kernel") but the
moved rows' share: windows are read whole (`FUSED_READS`).

Shapes: windows (b, S, S, c), S = N + 2m, or, for the spread,
(b, c, S, S, q) (groups first, q = 2 for the real and imaginary parts,
1 for real values); weights (`weights`) the ramp's factors, groups
first; patches (b, N, N, c).
"""

import functools
import math

import numpy as np

from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops
from ptycho_layers.operators import COMPLEX
from ptycho_layers.xla.geometry import padded_along
from ptycho_layers.xla.geometry import real_parts

__all__ = ["NAME", "configured"]

NAME = "fourier"


@functools.lru_cache(maxsize=None)
def configured(margin):
    """The kernel of margin `margin` (a positive int), one object per
    margin."""
    return FourierShift(margin)


def _times(re, im, c, s):
    """(re + i im) * (c + i s), as real parts."""
    return re * c - im * s, re * s + im * c


class FourierShift:
    """The Fourier-shift kernel of margin `margin`: bilinear's contract
    (`xla.bilinear`), as methods."""

    # No moved rows' share (`windows.reader`): every window is read whole,
    # from the padded table or gathered; the FFTs materialise it anyway.
    FUSED_READS = False
    # Placement spreads each patch by the conjugate ramp.
    ADDS_PATCHES = False
    # ... reading the patches' values themselves (`spread_values`), complex
    # where they are: the FFTs take complex values, and the real parts side
    # by side were two more passes over each piece (stacked, then joined
    # back into complex values after the padding).
    SPREADS_VALUES = True
    # Extraction in a loop of pieces whose windows take a tenth of the
    # output (`extraction._extract_in_loop`): the FFTs of a piece's windows
    # run in cache. Larger or smaller pieces ran slower (a fifth: 1.14x,
    # a twentieth: 1.05x, default case, JAX).
    PIECE_SHARE = 0.1

    def __init__(self, margin):
        self.margin = margin
        self.NAME = f"{NAME}:{margin}"

    def __repr__(self):
        return f"<xla kernel {self.NAME}>"

    def window_size(self, patch_size):
        """S = N + 2m: the patch and its margin on every side."""
        return patch_size + 2 * self.margin

    def origin(self, offset, patch_size):
        """(start, fraction): the window's first index (b, c) int32 and the
        offset's sub-pixel part (b, c) in [0, 1), along one axis."""
        floor = ops.floor(offset)
        start = ops.cast(floor, "int32") - patch_size // 2 - self.margin
        return start, offset - floor

    def weights(self, y_fraction, x_fraction, row_inside, col_inside, keep=None):
        """(row_cos, row_sin, col_cos, col_sin, whole): the ramp's row and
        column factors exp(2 pi i u fy), exp(2 pi i v fx) as cosines and
        sines, (b, c, S, 1) and (b, c, 1, S), 4S per patch (computed behind
        the fusion boundary: fused into the product with the spectrum, XLA
        would compute them for each of its S^2 entries); and whole,
        (b, c, 1, 1) bool, where both fractions are zero (the plain
        slice). The windows hold zeros outside the object, and a
        non-finite offset's patch is made NaN (extraction) or zeroed
        (placement) apart, so neither `inside` nor `keep` is needed."""
        size = ops.shape(row_inside)[1]
        frequencies = ops.convert_to_tensor(
            np.fft.fftfreq(size) * (2 * math.pi), dtype=y_fraction.dtype
        )
        rows = y_fraction[:, :, None, None] * frequencies[:, None]
        cols = x_fraction[:, :, None, None] * frequencies
        whole = ops.logical_and(y_fraction == 0, x_fraction == 0)[:, :, None, None]
        cosine = backends.current().cos_sin
        return (*cosine(rows), *cosine(cols), whole)

    def _spectrum(self, parts, weights, sign):
        """DFT(parts) * ramp (sign 1) or * its conjugate (sign -1), as real
        parts, from `parts` (b, c, S, S), one (real values) or two (real
        and imaginary parts)."""
        row_cos, row_sin, col_cos, col_sin, _ = weights
        re = parts[0]
        im = parts[1] if len(parts) > 1 else ops.zeros_like(re)
        re, im = ops.fft2((re, im))
        re, im = _times(re, im, row_cos, sign * row_sin)
        return _times(re, im, col_cos, sign * col_sin)

    def blend(self, parts, weights, guarded=True):
        """`parts`, a list of (b, S, S, c) real windows (the real and
        imaginary parts, or the real values), shifted by the weights'
        fractions into a list of (b, N, N, c): both parts for complex
        values, the real part for real ones."""
        m = self.margin
        windows = [ops.transpose(part, (0, 3, 1, 2)) for part in parts]
        size = ops.shape(windows[0])[-1]
        n = size - 2 * m
        shifted = ops.ifft2(self._spectrum(windows, weights, 1))
        whole = weights[-1]
        patches = []
        for window, part in zip(windows, shifted):
            plain = window[:, :, m:m + n, m:m + n]
            patch = ops.where(whole, plain, part[:, :, m:m + n, m:m + n])
            patches.append(ops.transpose(patch, (0, 2, 3, 1)))
        return patches

    def spread_operands(self, weights, pairs):
        """(weights, pairs): what `spread` reads, from the weights and
        `pairs` (b, c, N, N, q), the patches' real parts side by side."""
        return (weights, pairs)

    def spread(self, weights, pairs):
        """The adjoint of the blend: (b, c, S, S, q), each patch zero-padded
        by the margin, shifted back (the conjugate ramp), the real part
        for real values."""
        m = self.margin
        q = ops.shape(pairs)[-1]
        padded = padded_along(padded_along(pairs, -3, m, m), -2, m, m)
        parts = [padded[..., k] for k in range(q)]
        shifted = ops.ifft2(self._spectrum(parts, weights, -1))
        whole = weights[-1]
        return ops.stack(
            [ops.where(whole, part, back) for part, back in zip(parts, shifted)],
            axis=-1,
        )

    def spread_values(self, weights, values, coord):
        """The adjoint of the blend on `values` (b, c, N, N), the patches
        groups first (zero where nothing is added), computed in `coord`'s
        precision: (b, c, S, S) in `values`' dtype, each patch zero-padded
        by the margin and shifted back (the conjugate ramp), the real part
        for real values."""
        m = self.margin
        dtype = standardize_dtype(values.dtype)
        if dtype not in COMPLEX:
            values = ops.cast(values, coord)
        # Padded as they are, once: the FFT's input, and what an integer
        # offset adds (padding the real parts apart made XLA keep both
        # padded parts and join them again for the FFT).
        padded = padded_along(padded_along(values, -2, m, m), -1, m, m)
        shifted = ops.ifft2(self._spectrum(real_parts(padded, dtype, coord), weights, -1))
        whole = weights[-1]
        backend = backends.current()
        if dtype in COMPLEX:
            return backend.where(whole, padded, backend.complex(*shifted))
        return ops.cast(backend.where(whole, padded, shifted[0]), dtype)

    def derivative(self, window_parts, upstream_parts, geometry):
        """(d_x, d_y), (b, c) each: per patch, the sum of the upstream
        values times the shifted patch's derivative with respect to x and
        y (the spectrum times 2 pi i v, or 2 pi i u), from lists of real
        parts `window_parts` (b, S, S, c) and `upstream_parts`
        (b, N, N, c), and `geometry.window_geometry`'s dict."""
        m = self.margin
        windows = [ops.transpose(part, (0, 3, 1, 2)) for part in window_parts]
        upstream = [ops.transpose(part, (0, 3, 1, 2)) for part in upstream_parts]
        size = ops.shape(windows[0])[-1]
        n = size - 2 * m
        re, im = self._spectrum(windows, geometry["weights"], 1)
        frequencies = ops.convert_to_tensor(
            np.fft.fftfreq(size) * (2 * math.pi), dtype=re.dtype
        )
        derivatives = []
        for scale in (frequencies, frequencies[:, None]):  # d/dx, d/dy
            # (re + i im) * i w = -im w + i re w.
            d_parts = ops.ifft2((-im * scale, re * scale))
            d_parts = [part[:, :, m:m + n, m:m + n] for part in d_parts]
            derivatives.append(
                sum(ops.sum(u * d, axis=(2, 3)) for u, d in zip(upstream, d_parts))
            )
        return tuple(derivatives)
