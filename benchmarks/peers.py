"""The algorithms this layer is measured against, and float64 references.

Extraction peers take `images` (1, H, W) and `offsets` (B, c, 2) [x, y]
and return (B, N, N, c), the project's convention: patch[i, j] samples the
zero-extended object bilinearly at row y - N//2 + i, column x - N//2 + j.
Placement peers take (B, N, N, c) patches, the offsets and (H, W), and add
patch[i, j] into the object at that same point, spread over its four
pixels with the same weights; what falls outside is dropped.

The float64 references (`reference_patches`, `reference_placement`) also
follow the other two kernels, written from their definitions, apart from
the package's code:

- Fourier, margin m: the patch is the central N x N of
  IDFT(DFT(w) * exp(2 pi i (u fy + v fx))), w the zero-extended object's
  integer window of (N+2m)^2 pixels at top-left (floor(y) - N//2 - m,
  floor(x) - N//2 - m), u, v = numpy.fft.fftfreq(N+2m), fy, fx the
  offset's fractions; the real part for real objects. Placement is its
  adjoint: the patch padded by m, DFT, the conjugate ramp, IDFT, added
  into the same window.
- Nearest: the N x N window at (floor(y + 0.5) - N//2, floor(x + 0.5) -
  N//2), no blend; placement adds the patch into it.

`ptychi_*` load and call pty-chi (a peer on the PyTorch backend, timed,
never copied): `load_ptychi`, `ptychi_positions`.
"""

import numpy as np
from keras import ops
from keras.backend import standardize_dtype

__all__ = ["KERNELS", "split_channels", "merge_channels", "tiled_batch", "tiled_chunk",
           "crop_and_resize", "reference_patches", "scatter_nd_placement",
           "reference_placement", "fourier_windows", "padded_patches", "fft_round_trip",
           "load_ptychi", "ptychi_positions", "ptychi_extraction", "ptychi_placement"]

# The interpolation kernels the references follow (`--interpolation`).
KERNELS = ("bilinear", "fourier", "nearest")

_COMPLEX = ("complex64", "complex128")


def split_channels(images):
    """(1, H, W) real or complex -> (1, H, W, C): C = 2 (real, imaginary)
    for complex images, 1 for real ones."""
    if standardize_dtype(images.dtype) in _COMPLEX:
        return ops.stack([ops.real(images), ops.imag(images)], axis=-1)
    return images[..., None]


def merge_channels(channels, dtype):
    """(..., C) from `split_channels` -> (...) in `dtype`."""
    if dtype in _COMPLEX:
        real = ops.cast(channels[..., 0], dtype)
        imag = ops.cast(channels[..., 1], dtype)
        return real + imag * ops.cast(1j, dtype)
    return ops.cast(channels[..., 0], dtype)


def _to_groups(patches, offsets_shape, dtype):
    """(K, N, N, C) patches in b-major, c-minor order -> (B, N, N, c)."""
    batch, groups = offsets_shape[0], offsets_shape[1]
    size = patches.shape[1]
    patches = merge_channels(patches, dtype)
    patches = ops.reshape(patches, (batch, groups, size, size))
    return ops.transpose(patches, (0, 2, 3, 1))


def tiled_chunk(padded_bytes, budget_bytes):
    """Patches per chunk of `tiled_batch` so that a chunk's working set,
    about 3 padded objects per patch (the tile, the translated tile and the
    transform's temporaries), stays within `budget_bytes`."""
    return max(1, int(budget_bytes // (3 * padded_bytes)))


def tiled_batch(images, offsets, patch_size, chunk):
    """The first batched design: translate K copies of the object at once.

    The object is zero-padded by N//2 and split into channels; for each
    chunk of patches it is tiled `chunk` times and every tile is translated
    by its own -offset in one `keras.ops.image.affine_transform` call (a
    (chunk, 8) batch of transforms), then cropped to the top-left NxN.
    Work and memory are O(K*H*W), as for the legacy loop, but in few calls.
    `chunk`: patches translated per call (see `tiled_chunk`).
    """
    dtype = standardize_dtype(images.dtype)
    half = patch_size // 2
    padded = ops.pad(
        split_channels(images), [[0, 0], [half, half], [half, half], [0, 0]]
    )
    # affine_transform takes float32 transforms on every backend.
    flat = ops.reshape(ops.cast(offsets, "float32"), (-1, 2))
    count = flat.shape[0]
    pieces = []
    for start in range(0, count, chunk):
        xy = flat[start : start + chunk]
        n = xy.shape[0]
        one = ops.ones((n, 1), "float32")
        zero = ops.zeros((n, 1), "float32")
        # Output (i, j) reads input (i + y, j + x): translate by -offset.
        transforms = ops.concatenate(
            [one, zero, xy[:, :1], zero, one, xy[:, 1:], zero, zero], axis=1
        )
        moved = ops.image.affine_transform(
            ops.tile(padded, (n, 1, 1, 1)),
            transforms,
            interpolation="bilinear",
            fill_mode="constant",
            fill_value=0,
            data_format="channels_last",
        )
        pieces.append(moved[:, :patch_size, :patch_size, :])
    return _to_groups(ops.concatenate(pieces, axis=0), offsets.shape, dtype)


def crop_and_resize(images, offsets, patch_size):
    """TensorFlow's C++ bilinear crop kernel, one box per patch.

    Each box spans rows y - N//2 .. y - N//2 + N - 1 and the same columns
    in x, so the N samples along each side are one pixel apart. The object
    first gets a one-pixel ring of zeros: `crop_and_resize` gives the
    extrapolation value (0) for any sample beyond the outer pixel centres,
    where zero extension still blends the edge pixel with a zero; with the
    ring, both agree everywhere. Box corners are normalised by the padded
    (H+1, W+1). The kernel computes in float32 whatever the input dtype.
    """
    import tensorflow as tf

    dtype = standardize_dtype(images.dtype)
    channels = tf.cast(split_channels(images), tf.float32)
    padded = tf.pad(channels, [[0, 0], [1, 1], [1, 1], [0, 0]])
    height = tf.cast(tf.shape(padded)[1] - 1, tf.float32)
    width = tf.cast(tf.shape(padded)[2] - 1, tf.float32)
    flat = tf.reshape(tf.cast(offsets, tf.float32), (-1, 2))
    # +1: the ring shifts object pixel (r, c) to padded pixel (r+1, c+1).
    top = flat[:, 1] - (patch_size // 2) + 1
    left = flat[:, 0] - (patch_size // 2) + 1
    span = float(patch_size - 1)
    boxes = tf.stack(
        [top / height, left / width, (top + span) / height, (left + span) / width],
        axis=1,
    )
    crops = tf.image.crop_and_resize(
        padded,
        boxes,
        tf.zeros(tf.shape(flat)[:1], tf.int32),
        (patch_size, patch_size),
        method="bilinear",
        extrapolation_value=0.0,
    )
    return _to_groups(crops, offsets.shape, dtype)


def reference_patches(images, offsets, patch_size, groups_per_step=64,
                      interpolation="bilinear", fourier_margin=1):
    """Float64 numpy patches, by the convention's formula, vectorized.

    Used to check the vectorized kernel itself, so that the benchmark's
    check of every row against that kernel rests on something independent.
    Takes numpy arrays; `groups_per_step` rows of offsets at a time (bounds
    memory); `interpolation` and `fourier_margin` the kernel (the module's
    docstring has the definitions). Returns complex128 for complex images,
    else float64.
    """
    if interpolation == "fourier":
        return _fourier_patches(images, offsets, patch_size, fourier_margin, groups_per_step)
    if interpolation == "nearest":
        return _nearest_patches(images, offsets, patch_size, groups_per_step)
    _check_kernel(interpolation)
    image = np.asarray(images)[0]
    kind = np.complex128 if np.iscomplexobj(image) else np.float64
    image = image.astype(kind)
    height, width = image.shape
    steps = np.arange(patch_size) - patch_size // 2
    pieces = []
    offsets = np.asarray(offsets, np.float64)
    for start in range(0, offsets.shape[0], groups_per_step):
        part = offsets[start : start + groups_per_step]
        rows = part[..., 1, None] + steps  # (b, c, N)
        cols = part[..., 0, None] + steps
        r0, c0 = np.floor(rows), np.floor(cols)
        fr = (rows - r0)[..., :, None]
        fc = (cols - c0)[..., None, :]
        r0 = r0.astype(np.int64)[..., :, None]
        c0 = c0.astype(np.int64)[..., None, :]

        def pixel(r, c):
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            value = image[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
            return np.where(inside, value, 0)

        patch = (1 - fr) * ((1 - fc) * pixel(r0, c0) + fc * pixel(r0, c0 + 1))
        patch += fr * ((1 - fc) * pixel(r0 + 1, c0) + fc * pixel(r0 + 1, c0 + 1))
        pieces.append(np.transpose(patch, (0, 2, 3, 1)))
    if not pieces:
        return np.zeros((0, patch_size, patch_size, offsets.shape[1]), kind)
    return np.concatenate(pieces, axis=0)


def _bilinear_corners(rows, cols, floor):
    """The four pixels each patch entry is spread over, and their weights.

    rows, cols: (b, c, N) float positions of the patches' rows and columns;
    `floor` the array library's floor. Yields (row, col, weight) for each
    neighbour: its pixel row (b, c, N, 1) and column (b, c, 1, N), still
    floats, and its weight (b, c, N, N) for entry (i, j)."""
    r0, c0 = floor(rows), floor(cols)
    fr, fc = rows - r0, cols - c0
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            weight = wr[..., :, None] * wc[..., None, :]
            yield (r0 + dr)[..., :, None], (c0 + dc)[..., None, :], weight


def scatter_nd_placement(patches, offsets, image_shape):
    """Placement by TensorFlow's `tensor_scatter_nd_add`, the direct way.

    Every patch value becomes four updates of the flattened object, one per
    bilinear neighbour, with their flat indices: 4 K N^2 (index, value)
    pairs, scattered in one call. A neighbour outside the object gets
    weight 0 at a clamped index (out-of-range indices are an error on CPU).
    Weights are computed in the offsets' precision.
    """
    import tensorflow as tf

    height, width = image_shape
    offsets = tf.convert_to_tensor(offsets)
    size = patches.shape[1]
    steps = tf.range(size, dtype=offsets.dtype) - size // 2
    rows = offsets[..., 1, None] + steps  # (B, c, N)
    cols = offsets[..., 0, None] + steps
    values = tf.transpose(patches, (0, 3, 1, 2))  # (B, c, N, N)
    indices, updates = [], []
    for row, col, weight in _bilinear_corners(rows, cols, tf.floor):
        row, col = tf.cast(row, tf.int32), tf.cast(col, tf.int32)
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        weight = tf.where(inside, weight, tf.zeros_like(weight))
        flat = (tf.clip_by_value(row, 0, height - 1) * width
                + tf.clip_by_value(col, 0, width - 1))
        indices.append(flat)
        updates.append(values * tf.cast(weight, patches.dtype))
    total = tf.tensor_scatter_nd_add(
        tf.zeros((height * width,), patches.dtype),
        tf.reshape(tf.stack(indices), (-1, 1)),
        tf.reshape(tf.stack(updates), (-1,)),
    )
    return tf.reshape(total, (1, height, width))


def reference_placement(patches, offsets, image_shape, groups_per_step=64,
                        interpolation="bilinear", fourier_margin=1):
    """Float64 numpy placement, by the convention's formula: every patch
    value added into its four pixels with bilinear weights (`np.add.at`)
    of a zero-extended object; what falls outside is dropped, and so is a
    patch whose offset is not finite. Takes numpy arrays, `groups_per_step`
    rows of offsets at a time; returns complex128 for complex patches, else
    float64. `interpolation` and `fourier_margin`: the kernel, whose
    adjoint this is (Fourier: each patch padded by m, shifted back in
    Fourier space and added into its window; nearest: added into its
    window).
    """
    if interpolation in ("fourier", "nearest"):
        return _window_placement(patches, offsets, image_shape, interpolation,
                                 fourier_margin, groups_per_step)
    _check_kernel(interpolation)
    patches = np.asarray(patches)
    kind = np.complex128 if np.iscomplexobj(patches) else np.float64
    height, width = image_shape
    size = patches.shape[1]
    steps = np.arange(size) - size // 2
    total = np.zeros(height * width, kind)
    offsets = np.asarray(offsets, np.float64)
    for start in range(0, offsets.shape[0], groups_per_step):
        part = offsets[start : start + groups_per_step]
        finite = np.all(np.isfinite(part), axis=-1)  # (b, c)
        part = np.where(finite[..., None], part, 0.0)
        chunk = patches[start : start + groups_per_step].astype(kind)
        values = np.transpose(chunk, (0, 3, 1, 2))  # (b, c, N, N)
        rows = part[..., 1, None] + steps
        cols = part[..., 0, None] + steps
        for row, col, weight in _bilinear_corners(rows, cols, np.floor):
            row, col = row.astype(np.int64), col.astype(np.int64)
            keep = (finite[..., None, None] & (row >= 0) & (row < height)
                    & (col >= 0) & (col < width))
            np.add.at(total, (row * width + col)[keep], (weight * values)[keep])
    return total.reshape(1, height, width)


def _check_kernel(interpolation):
    if interpolation not in KERNELS:
        raise ValueError(f"interpolation must be one of {KERNELS}, got {interpolation!r}")


def _window_origin(offsets, patch_size, interpolation, margin):
    """(top, left, fy, fx, finite) for offsets (k, 2) [x, y] float64: each
    window's top-left pixel (k,) int64, the Fourier kernel's fractions
    (k,) (zero for nearest) and which offsets are finite (k,) bool (a
    non-finite offset reads, and is placed at, 0)."""
    finite = np.all(np.isfinite(offsets), axis=-1)
    offsets = np.where(finite[:, None], offsets, 0.0)
    x, y = offsets[:, 0], offsets[:, 1]
    half = patch_size // 2
    if interpolation == "nearest":
        top, left = np.floor(y + 0.5) - half, np.floor(x + 0.5) - half
        fy = fx = np.zeros_like(x)
    else:
        top, left = np.floor(y) - half - margin, np.floor(x) - half - margin
        fy, fx = y - np.floor(y), x - np.floor(x)
    return top.astype(np.int64), left.astype(np.int64), fy, fx, finite


def _window_indices(top, left, size, height, width):
    """(flat, inside): the flat object index (k, S, S) of every window
    pixel (clamped where outside) and whether it is inside the object."""
    steps = np.arange(size)
    rows = top[:, None, None] + steps[None, :, None]
    cols = left[:, None, None] + steps[None, None, :]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = np.clip(rows, 0, height - 1) * width + np.clip(cols, 0, width - 1)
    return flat, inside


def _ramp(fy, fx, size, sign=1):
    """exp(sign 2 pi i (u fy + v fx)) (k, S, S), u, v = fftfreq(S)."""
    u = np.fft.fftfreq(size)
    phase = u[None, :, None] * fy[:, None, None] + u[None, None, :] * fx[:, None, None]
    return np.exp(sign * 2j * np.pi * phase)


def _flat_offsets(offsets):
    offsets = np.asarray(offsets, np.float64)
    return offsets.reshape(-1, 2), offsets.shape[:2]


def _to_groups_numpy(values, batch_groups):
    """(k, N, N) in b-major, c-minor order -> (B, N, N, c)."""
    batch, groups = batch_groups
    size = values.shape[-1]
    return np.transpose(values.reshape(batch, groups, size, size), (0, 2, 3, 1))


def fourier_windows(images, offsets, patch_size, margin, interpolation="fourier"):
    """The K windows (K, S, S) the Fourier kernel reads (S = N + 2m),
    complex128, of the zero-extended object (1, H, W), in b-major order;
    with `interpolation="nearest"` the N x N windows nearest reads."""
    image = np.asarray(images)[0]
    height, width = image.shape
    flat_offsets, _ = _flat_offsets(offsets)
    top, left, _, _, _ = _window_origin(flat_offsets, patch_size, interpolation, margin)
    size = patch_size + 2 * margin if interpolation == "fourier" else patch_size
    flat, inside = _window_indices(top, left, size, height, width)
    return np.where(inside, image.reshape(-1)[flat], 0).astype(np.complex128)


def _fourier_patches(images, offsets, patch_size, margin, groups_per_step):
    image = np.asarray(images)
    real = not np.iscomplexobj(image)
    flat_offsets, batch_groups = _flat_offsets(offsets)
    step = max(1, groups_per_step * batch_groups[1])
    pieces = []
    for start in range(0, flat_offsets.shape[0], step):
        part = flat_offsets[start : start + step]
        windows = fourier_windows(image, part[None], patch_size, margin)
        _, _, fy, fx, finite = _window_origin(part, patch_size, "fourier", margin)
        shifted = np.fft.ifft2(np.fft.fft2(windows) * _ramp(fy, fx, windows.shape[-1]))
        patch = shifted[:, margin : margin + patch_size, margin : margin + patch_size]
        patch = np.where(finite[:, None, None], patch, np.nan * (1 + 1j))
        pieces.append(patch.real if real else patch)
    kind = np.float64 if real else np.complex128
    values = np.concatenate(pieces) if pieces else np.zeros((0, patch_size, patch_size), kind)
    return _to_groups_numpy(values.astype(kind), batch_groups)


def _nearest_patches(images, offsets, patch_size, groups_per_step):
    image = np.asarray(images)
    kind = np.complex128 if np.iscomplexobj(image) else np.float64
    flat_offsets, batch_groups = _flat_offsets(offsets)
    windows = fourier_windows(image, flat_offsets[None], patch_size, 0, "nearest")
    finite = np.all(np.isfinite(flat_offsets), axis=-1)
    windows = np.where(finite[:, None, None], windows, np.nan * (1 + 1j))
    values = windows if kind is np.complex128 else windows.real
    return _to_groups_numpy(values.astype(kind), batch_groups)


def padded_patches(patches, margin):
    """(B, N, N, c) patches -> (K, N+2m, N+2m) complex128, each padded by
    `margin` zeros on every side, b-major: what the Fourier placement
    transforms."""
    patches = np.asarray(patches)
    batch, size, _, groups = patches.shape
    flat = np.transpose(patches, (0, 3, 1, 2)).reshape(batch * groups, size, size)
    pad = [(0, 0), (margin, margin), (margin, margin)]
    return np.pad(flat.astype(np.complex128), pad)


def _window_placement(patches, offsets, image_shape, interpolation, margin, groups_per_step):
    patches = np.asarray(patches)
    kind = np.complex128 if np.iscomplexobj(patches) else np.float64
    height, width = image_shape
    size = patches.shape[1]
    flat_offsets, _ = _flat_offsets(offsets)
    margin = margin if interpolation == "fourier" else 0
    windows = padded_patches(patches, margin)
    total = np.zeros(height * width, kind)
    step = max(1, groups_per_step * patches.shape[3])
    for start in range(0, flat_offsets.shape[0], step):
        part = flat_offsets[start : start + step]
        values = windows[start : start + step]
        top, left, fy, fx, finite = _window_origin(part, size, interpolation, margin)
        if interpolation == "fourier":
            values = np.fft.ifft2(np.fft.fft2(values) * _ramp(fy, fx, values.shape[-1], -1))
        if kind is np.float64:
            values = values.real
        flat, inside = _window_indices(top, left, values.shape[-1], height, width)
        keep = inside & finite[:, None, None]
        np.add.at(total, flat[keep], values[keep])
    return total.reshape(1, height, width)


def fft_round_trip(windows):
    """One batched forward and inverse 2-D FFT of `windows` (K, S, S),
    complex, by the backend's own FFT (`tf.signal.fft2d`/`ifft2d`,
    `jnp.fft`, `torch.fft`): the floor under the Fourier kernel, which
    transforms the same K windows both ways (plus its ramp, the gather of
    the windows and the crop)."""
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.signal.ifft2d(tf.signal.fft2d(windows))
    if name == "jax":
        import jax.numpy as jnp

        return jnp.fft.ifft2(jnp.fft.fft2(windows))
    import torch

    return torch.fft.ifft2(torch.fft.fft2(windows))


# pty-chi's patch functions, once loaded: (module, None) or (None, reason).
_PTYCHI = []
PTYCHI_INSTALL = "pip install --no-deps 'ptychi==2.2.*'"


def load_ptychi():
    """(pty-chi's `ptychi.image_proc`, None), or (None, why it cannot be
    loaded). A peer only: this benchmark times it, the package never
    imports it.

    `ptychi.image_proc` needs torch, numpy and matplotlib, but imports
    `ptychi.api.types` (two type aliases), and `ptychi/api/__init__.py`
    pulls in pydantic and, through `ptychi.utils`, torchvision, whose PyPI
    wheel does not load beside a CPU build of torch. Where the plain
    import fails, `ptychi.api` is stood in for by a bare package over the
    same folder (its `__init__` not run), so that `ptychi.api.types`, and
    nothing else of it, loads from pty-chi's own files.
    """
    if _PTYCHI:
        return _PTYCHI[0]
    _PTYCHI.append(_load_ptychi())
    return _PTYCHI[0]


def _load_ptychi():
    import importlib
    import importlib.util
    import os
    import sys
    import types

    try:
        spec = importlib.util.find_spec("ptychi")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return None, f"skipped: pty-chi is not installed ({PTYCHI_INSTALL})"
    try:
        return importlib.import_module("ptychi.image_proc"), None
    except Exception as error:  # pydantic or torchvision missing or broken
        plain = error
    for name in [n for n in sys.modules if n == "ptychi.api" or n.startswith("ptychi.api.")]:
        del sys.modules[name]
    stub = types.ModuleType("ptychi.api")
    stub.__path__ = [os.path.join(os.path.dirname(spec.origin), "api")]
    stub.__package__ = "ptychi.api"
    sys.modules["ptychi.api"] = stub
    try:
        return importlib.import_module("ptychi.image_proc"), None
    except Exception as error:
        del sys.modules["ptychi.api"]
        return None, (f"skipped: pty-chi does not import ({type(plain).__name__}: "
                      f"{str(plain)[:60]}; without ptychi.api's __init__: "
                      f"{type(error).__name__}: {str(error)[:60]})")


def ptychi_version():
    import importlib.metadata

    try:
        return importlib.metadata.version("ptychi")
    except importlib.metadata.PackageNotFoundError:
        return None


def ptychi_positions(offsets, patch_size):
    """This package's offsets (B, c, 2) [x, y] as pty-chi's positions
    (K, 2) [y, x], b-major, float64 numpy.

    pty-chi's patch of shape N starts at floor(p - (N-1)/2) - pad and is
    shifted by the fraction of p - (N-1)/2; this package's starts at
    floor(y) - N//2 - m with y's fraction. So p = y + (N-1)/2 - N//2: y
    for odd N, y - 1/2 for even N (and likewise in x), pad = m."""
    flat = np.asarray(offsets, np.float64).reshape(-1, 2)
    return flat[:, ::-1] + ((patch_size - 1) / 2 - patch_size // 2)


def ptychi_extraction(image_proc, image, positions, patch_size, margin, batch_groups):
    """pty-chi's `extract_patches_fourier_shift` of `image` (H, W) at
    `positions` (K, 2) [y, x] (torch tensors), pad = `margin`, viewed as
    (B, N, N, c) (a view, no copy)."""
    patches = image_proc.extract_patches_fourier_shift(
        image, positions, (patch_size, patch_size), pad=margin
    )
    batch, groups = batch_groups
    return patches.reshape(batch, groups, patch_size, patch_size).permute(0, 2, 3, 1)


def ptychi_placement(image_proc, patches, positions, image_shape, margin):
    """pty-chi's `place_patches_fourier_shift` (add, adjoint_mode=True,
    pad = `margin`) of `patches` (K, N, N) at `positions` (K, 2) [y, x]
    into a fresh zero (H, W) object (it adds in place), as (1, H, W)."""
    import torch

    image = torch.zeros(tuple(image_shape), dtype=patches.dtype, device=patches.device)
    placed = image_proc.place_patches_fourier_shift(
        image, positions, patches, op="add", adjoint_mode=True, pad=margin
    )
    return placed[None]
