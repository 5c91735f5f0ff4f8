"""Bilinear against Fourier-shift stitching of the same scan.

Takes an object with detail up to nearly the sampling limit (the
quickstart's object plus a band-limited texture reaching 0.45 cycles per
pixel), a Fermat-spiral scan at fractional offsets, and for each kernel
extracts every patch (`extract_patches(..., interpolation=...)`) and puts
them back (`reassemble`, the same kernel's adjoint, averaged where they
overlap).

Bilinear sampling, then its adjoint, is a low-pass filter: in the well
covered centre of the scan the stitched object keeps about a third of the
object's amplitude near the Nyquist frequency. The Fourier kernel shifts
each patch's window by the offset's fraction exactly (for band-limited
content): the stitched spectrum matches the object's in every band, and
what error is left comes from each window's edges (an FFT takes the window
as periodic), not from a blur.

The script prints, per kernel, how much of the object's spectrum comes
through in four bands of spatial frequency (1.0 = nothing lost), over the
scan's well covered centre, and the median error there; it exits
non-zero unless Fourier keeps every band within 5% while bilinear loses
more than 20% of the highest one.

Writes `fourier_stitch.png` (when matplotlib is installed): a detail of
the object and both stitched objects, and the bands' amplitude ratios.

    python examples/fourier_stitch.py [--small] [--out DIR]
"""

import os

import numpy as np

import synthetic  # first: it quiets TensorFlow's start-up logging

import keras
from ptycho_layers import extract_patches, reassemble

GROUP_SIZE = 4  # c: patches per group, gridsize 2
KERNELS = {"bilinear": {}, "fourier": {"fourier_margin": 2}}
# Bands of spatial frequency, cycles per pixel (0.5 is Nyquist).
BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.4), (0.4, 0.5))
# Fourier: each band kept to within this. What the window edges add is
# mostly uncorrelated with the object; its correlated part, a few parts in
# a thousand at full size, a little more at --small (16-pixel patches).
FOURIER_TOLERANCE = 0.05
# Bilinear: the highest band keeps less than this (about 0.35 here).
BILINEAR_BLUR = 0.8


def detailed_object(size, seed=0):
    """(size, size) complex64: the quickstart's object plus a random
    texture band-limited to 0.45 cycles per pixel, a third as strong."""
    obj = synthetic.make_object(size, size)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))
    frequencies = np.fft.fftfreq(size)
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    texture = np.fft.ifft2(np.fft.fft2(noise) * (radius < 0.45))
    texture *= np.abs(obj).max() / (3 * np.abs(texture).max())
    return (obj + texture).astype("complex64")


def band_amplitudes(stitched, obj, region):
    """Per band of `BANDS`, how much of the object's spectrum comes through
    stitching: Re<S, O> / <O, O> over the band, S and O the spectra of the
    stitched object and the object under a Hann window over the square
    `region` (rows and columns `region[0]:region[1]`). 1 is nothing lost;
    an error uncorrelated with the object does not count."""
    start, stop = region
    side = stop - start
    hann = np.hanning(side)[:, None] * np.hanning(side)[None, :]
    spectra = [
        np.fft.fft2(values[start:stop, start:stop] * hann) for values in (stitched, obj)
    ]
    frequencies = np.fft.fftfreq(side)
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    ratios = []
    for low, high in BANDS:
        band = (radius >= low) & (radius < high)
        kept = np.sum(spectra[0][band] * np.conj(spectra[1][band])).real
        ratios.append(float(kept / np.sum(np.abs(spectra[1][band]) ** 2)))
    return ratios


def stitched_by(kernel, obj, offsets, patch_size):
    """`obj` (H, W) extracted at `offsets` and reassembled by `kernel`
    (a key of `KERNELS`): (H, W) numpy."""
    options = dict(interpolation=kernel, **KERNELS[kernel])
    patches = extract_patches(obj[None], offsets, patch_size, **options)
    stitched = reassemble(patches, offsets, obj.shape, **options)
    return keras.ops.convert_to_numpy(stitched)[0]


def main(argv=None):
    args = synthetic.example_args(__doc__.splitlines()[0], argv)
    size, patch_size, count = (128, 16, 160) if args.small else (392, 64, 400)

    obj = detailed_object(size)
    peak = float(np.abs(obj).max())
    radius = size / 2 - patch_size // 2 - 2
    positions = synthetic.fermat_spiral(count, (size / 2, size / 2), radius)
    offsets = synthetic.group_neighbours(positions, GROUP_SIZE)  # (B, c, 2)
    # The scan's centre, well covered by overlapping patches.
    region = (size // 4, size - size // 4)

    print(f"backend:   {keras.backend.backend()}")
    print(
        f"object:    {obj.shape} {obj.dtype}, detail up to 0.45 cycles/pixel; "
        f"{len(positions)} spiral positions, patches of {patch_size}"
    )
    print(
        "bands:     " + "  ".join(f"{low:.2f}-{high:.2f}" for low, high in BANDS)
        + "  cycles/pixel: share of the object's spectrum kept"
    )
    stitched, amplitudes = {}, {}
    for kernel in KERNELS:
        stitched[kernel] = stitched_by(kernel, obj, offsets, patch_size)
        amplitudes[kernel] = band_amplitudes(stitched[kernel], obj, region)
        start, stop = region
        error = np.abs(stitched[kernel] - obj)[start:stop, start:stop]
        print(
            f"{kernel + ':':<10} "
            + "  ".join(f"{ratio:9.3f}" for ratio in amplitudes[kernel])
            + f"   median |stitched - object| {np.median(error) / peak:.2g} of max|object|"
        )

    fourier_kept = all(abs(ratio - 1) <= FOURIER_TOLERANCE for ratio in amplitudes["fourier"])
    bilinear_blurs = amplitudes["bilinear"][-1] < BILINEAR_BLUR
    print(
        f"result:    Fourier keeps every band within {FOURIER_TOLERANCE:.0%}: "
        f"{fourier_kept}; bilinear keeps under {BILINEAR_BLUR:g} of the "
        f"highest band (the blur): {bilinear_blurs}"
    )

    path = plot(obj, stitched, amplitudes, region, args.out)
    if path:
        print(f"wrote:     {path}")
    else:
        print("matplotlib is not installed: no plot (pip install -e '.[plot]')")

    if not fourier_kept:
        raise SystemExit("Fourier stitching lost or gained a band of frequencies")
    if not bilinear_blurs:
        raise SystemExit("bilinear stitching did not blur the finest detail")


def plot(obj, stitched, amplitudes, region, out):
    plt = synthetic.pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(1, 4, figsize=(19, 5), layout="constrained")
    start = (region[0] + region[1]) // 2 - 24
    detail = (slice(start, start + 48), slice(start, start + 48))
    shown = [("object", obj)] + [(f"stitched, {k}", v) for k, v in stitched.items()]
    low, high = np.percentile(np.abs(obj[detail]), (1, 99))
    for axis, (title, values) in zip(axes, shown):
        axis.imshow(np.abs(values[detail]), cmap="gray", vmin=low, vmax=high)
        axis.set_title(f"{title} (amplitude, 48 x 48 detail)")
        axis.set_xticks([])
        axis.set_yticks([])
    centres = [(low + high) / 2 for low, high in BANDS]
    for kernel, ratios in amplitudes.items():
        axes[3].plot(centres, ratios, "o-", label=kernel)
    axes[3].axhline(1.0, color="gray", linewidth=0.8)
    axes[3].set_ylim(0, 1.2)
    axes[3].set_xlabel("spatial frequency (cycles per pixel)")
    axes[3].set_ylabel("share of the object's spectrum kept")
    axes[3].set_title("what stitching keeps, by band")
    axes[3].legend()
    figure.suptitle(
        "Extract then reassemble at fractional offsets: bilinear blurs the "
        "finest detail, the Fourier shift keeps it"
    )
    path = os.path.join(out, "fourier_stitch.png")
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
