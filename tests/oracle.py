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
