"""An independent float64 reference for patch extraction, in plain numpy.

It follows the convention literally: patch[i, j] is the bilinear sample of
the zero-extended object at row y - N//2 + i, column x - N//2 + j, with the
four neighbours read one by one. Nothing here is shared with the package.
"""

import numpy as np


def bilinear(image, rows, cols):
    """Sample a 2-D float64/complex128 image at float64 (rows, cols)."""
    height, width = image.shape
    r0 = np.floor(rows)
    c0 = np.floor(cols)
    tr = rows - r0
    tc = cols - c0
    r0 = r0.astype(np.int64)
    c0 = c0.astype(np.int64)

    def pixel(r, c):
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        value = image[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
        return np.where(inside, value, 0)

    def term(weight, r, c):
        # A neighbour of zero weight is not read at all: at a whole-pixel
        # position only the pixel itself counts, NaN beside it or not.
        return np.where(weight == 0, 0, weight * pixel(r, c))

    return (
        term((1 - tr) * (1 - tc), r0, c0)
        + term((1 - tr) * tc, r0, c0 + 1)
        + term(tr * (1 - tc), r0 + 1, c0)
        + term(tr * tc, r0 + 1, c0 + 1)
    )


def oracle_patches(images, offsets, patch_size):
    """(Bi, H, W) images, (B, c, 2) [x, y] offsets -> (B, N, N, c) complex128.

    Offsets are taken as given (as float64 values of whatever dtype they
    have), so a float32 offset is compared at its own exact value.
    """
    images = np.asarray(images).astype(np.complex128)
    offsets = np.asarray(offsets).astype(np.float64)
    batch, groups, _ = offsets.shape
    half = patch_size // 2
    steps = np.arange(patch_size, dtype=np.float64)
    out = np.zeros((batch, patch_size, patch_size, groups), np.complex128)
    for b in range(batch):
        image = images[b if images.shape[0] > 1 else 0]
        for k in range(groups):
            x, y = offsets[b, k]
            rows = (y - half + steps)[:, None] + 0 * steps[None, :]
            cols = (x - half + steps)[None, :] + 0 * steps[:, None]
            out[b, :, :, k] = bilinear(image, rows, cols)
    return out


def asymmetric_object(height, width, dtype="complex64", seed=0):
    """A random object whose rows and columns differ (no symmetry to hide
    a swapped [x, y]), with a phase ramp when complex."""
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.5, 1.5, (height, width))
    if np.dtype(dtype).kind == "c":
        ramp = np.linspace(0, 3, width)[None, :] + np.linspace(0, 1, height)[:, None]
        return (amplitude * np.exp(1j * (ramp + rng.uniform(-1, 1, (height, width))))).astype(dtype)
    return (amplitude + np.arange(width)[None, :] * 0.01).astype(dtype)


def oracle_place(patches, offsets, image_shape, per_row=False):
    """(B, N, N, c) patches, (B, c, 2) [x, y] offsets -> (Bi, H, W)
    complex128: every patch value added into the four pixels around its
    position with bilinear weights, one by one; points outside the object
    dropped. Bi is B with `per_row`, else 1."""
    patches = np.asarray(patches).astype(np.complex128)
    offsets = np.asarray(offsets).astype(np.float64)
    batch, patch_size, _, groups = patches.shape
    height, width = image_shape
    out = np.zeros((batch if per_row else 1, height, width), np.complex128)
    half = patch_size // 2
    for b, k, i, j in np.ndindex(batch, groups, patch_size, patch_size):
        x, y = offsets[b, k]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        row, col = y - half + i, x - half + j
        r0, c0 = int(np.floor(row)), int(np.floor(col))
        tr, tc = row - r0, col - c0
        for r, c, w in ((r0, c0, (1 - tr) * (1 - tc)), (r0, c0 + 1, (1 - tr) * tc),
                        (r0 + 1, c0, tr * (1 - tc)), (r0 + 1, c0 + 1, tr * tc)):
            if 0 <= r < height and 0 <= c < width:
                out[b if per_row else 0, r, c] += w * patches[b, i, j, k]
    return out


# ---------------------------------------------------------------------------
# The Fourier-shift and nearest-neighbour kernels, from their definitions
# (README, "Interpolation kernels"), one patch at a time: each window read
# pixel by pixel with zeros outside the object, the DFT an explicit matrix
# (no FFT), all in float64 / complex128.
#
# Real parts: the oracles below return complex128 by default. With
# `real=True` they return the real part (float64), which is what the
# package computes for a real object (extraction) or real patches
# (placement); without it the caller takes `.real` itself.


def dft_matrix(size):
    """F[k, n] = exp(-2 pi i k n / size); its inverse is conj(F) / size."""
    k = np.arange(size, dtype=np.float64)
    return np.exp(-2j * np.pi * np.outer(k, k) / size)


def dft_frequencies(size):
    """The frequency of each DFT bin in cycles per pixel: k / size for
    k <= (size - 1) // 2, (k - size) / size above (for an even size the
    Nyquist bin is -1/2), as `numpy.fft.fftfreq(size)`."""
    k = np.arange(size)
    return np.where(k <= (size - 1) // 2, k, k - size) / size


def fourier_ramp(size, y_fraction, x_fraction):
    """exp(2 pi i (u fy + v fx)) on the (size, size) grid of bins, u along
    rows and v along columns."""
    u = dft_frequencies(size)
    return np.exp(2j * np.pi * (u[:, None] * y_fraction + u[None, :] * x_fraction))


def read_window(image, top, left, size):
    """The (size, size) window of `image` (2-D) whose top-left pixel is
    (top, left), pixel by pixel, zero outside the image."""
    height, width = image.shape
    window = np.zeros((size, size), np.complex128)
    for i in range(size):
        for j in range(size):
            row, col = top + i, left + j
            if 0 <= row < height and 0 <= col < width:
                window[i, j] = image[row, col]
    return window


def add_window(image, window, top, left):
    """Add `window` into `image` (2-D, in place) with its top-left at
    (top, left), pixel by pixel; what falls outside the image is dropped."""
    height, width = image.shape
    size = window.shape[0]
    for i in range(size):
        for j in range(size):
            row, col = top + i, left + j
            if 0 <= row < height and 0 <= col < width:
                image[row, col] += window[i, j]


def _finite(x, y):
    return bool(np.isfinite(x) and np.isfinite(y))


def _result(values, real):
    return values.real.copy() if real else values


def oracle_fourier_patches(images, offsets, patch_size, margin, real=False):
    """(Bi, H, W) images (Bi 1: shared, or B: one per row), (B, c, 2) [x, y]
    offsets -> (B, N, N, c) complex128 (float64 real parts with `real`).

    Patch (b, k) at [x, y]: the window Wd of S = N + 2m pixels a side at
    (floor(y) - N//2 - m, floor(x) - N//2 - m), then the central N x N of
    IDFT(DFT(Wd) * exp(2 pi i (u fy + v fx))), fy = y - floor(y),
    fx = x - floor(x). A non-finite offset gives a NaN patch. Offsets are
    taken at their own exact values (float64 of whatever dtype they have).
    """
    images = np.asarray(images).astype(np.complex128)
    offsets = np.asarray(offsets).astype(np.float64)
    batch, groups, _ = offsets.shape
    n, m = patch_size, margin
    size = n + 2 * m
    forward = dft_matrix(size)
    inverse = np.conj(forward) / size
    out = np.zeros((batch, n, n, groups), np.complex128)
    for b in range(batch):
        image = images[b if images.shape[0] > 1 else 0]
        for k in range(groups):
            x, y = offsets[b, k]
            if not _finite(x, y):
                out[b, :, :, k] = np.nan
                continue
            x0, y0 = np.floor(x), np.floor(y)
            window = read_window(image, int(y0) - n // 2 - m, int(x0) - n // 2 - m, size)
            spectrum = forward @ window @ forward.T
            shifted = inverse @ (spectrum * fourier_ramp(size, y - y0, x - x0)) @ inverse.T
            out[b, :, :, k] = shifted[m:m + n, m:m + n]
    return _result(out, real)


def oracle_fourier_place(patches, offsets, image_shape, margin, per_row=False, real=False):
    """(B, N, N, c) patches, (B, c, 2) [x, y] offsets -> (Bi, H, W)
    complex128 (float64 real parts with `real`), Bi = B with `per_row`,
    else 1: the adjoint of `oracle_fourier_patches`. Each patch is
    zero-padded by m on every side, transformed, multiplied by the
    conjugate ramp, transformed back and added into its window (the part
    outside the object dropped); a patch at a non-finite offset adds
    nothing."""
    patches = np.asarray(patches).astype(np.complex128)
    offsets = np.asarray(offsets).astype(np.float64)
    batch, n, _, groups = patches.shape
    m = margin
    size = n + 2 * m
    forward = dft_matrix(size)
    inverse = np.conj(forward) / size
    height, width = image_shape
    out = np.zeros((batch if per_row else 1, height, width), np.complex128)
    for b in range(batch):
        for k in range(groups):
            x, y = offsets[b, k]
            if not _finite(x, y):
                continue
            x0, y0 = np.floor(x), np.floor(y)
            padded = np.zeros((size, size), np.complex128)
            padded[m:m + n, m:m + n] = patches[b, :, :, k]
            spectrum = forward @ padded @ forward.T
            back = inverse @ (spectrum * np.conj(fourier_ramp(size, y - y0, x - x0))) @ inverse.T
            add_window(out[b if per_row else 0], back, int(y0) - n // 2 - m, int(x0) - n // 2 - m)
    return _result(out, real)


def nearest_origin(x, y, patch_size):
    """The nearest kernel's window top-left (row, col) for offset [x, y]:
    (floor(y + 1/2) - N//2, floor(x + 1/2) - N//2), the position rounded
    half up. (For float32 offsets the float64 sum is exact.)"""
    half = patch_size // 2
    return int(np.floor(y + 0.5)) - half, int(np.floor(x + 0.5)) - half


def oracle_nearest_patches(images, offsets, patch_size, real=False):
    """(Bi, H, W) images, (B, c, 2) [x, y] offsets -> (B, N, N, c)
    complex128 (float64 real parts with `real`): each patch the N x N
    window at `nearest_origin`, read pixel by pixel (zero outside); NaN
    at a non-finite offset."""
    images = np.asarray(images).astype(np.complex128)
    offsets = np.asarray(offsets).astype(np.float64)
    batch, groups, _ = offsets.shape
    out = np.zeros((batch, patch_size, patch_size, groups), np.complex128)
    for b in range(batch):
        image = images[b if images.shape[0] > 1 else 0]
        for k in range(groups):
            x, y = offsets[b, k]
            if not _finite(x, y):
                out[b, :, :, k] = np.nan
                continue
            out[b, :, :, k] = read_window(image, *nearest_origin(x, y, patch_size), patch_size)
    return _result(out, real)


def oracle_nearest_place(patches, offsets, image_shape, per_row=False, real=False):
    """(B, N, N, c) patches, (B, c, 2) [x, y] offsets -> (Bi, H, W)
    complex128 (float64 real parts with `real`), Bi = B with `per_row`,
    else 1: each patch added into its `nearest_origin` window, pixel by
    pixel (outside dropped); a non-finite offset's patch adds nothing."""
    patches = np.asarray(patches).astype(np.complex128)
    offsets = np.asarray(offsets).astype(np.float64)
    batch, patch_size, _, groups = patches.shape
    height, width = image_shape
    out = np.zeros((batch if per_row else 1, height, width), np.complex128)
    for b in range(batch):
        for k in range(groups):
            x, y = offsets[b, k]
            if not _finite(x, y):
                continue
            add_window(out[b if per_row else 0], patches[b, :, :, k], *nearest_origin(x, y, patch_size))
    return _result(out, real)
