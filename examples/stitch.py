"""Stitch extracted patches back into the object with `reassemble`.

Takes the quickstart's synthetic object and Fermat-spiral scan (grouped by
fours), extracts every patch with `extract_patches` and puts them back with
`reassemble`, which averages the patches where they overlap and also
returns the coverage, the total weight each object pixel received.

Two scans, two answers:

- Whole-pixel offsets: each patch is a plain slice of the object, and
  stitching gives the object back exactly (to float32 rounding) wherever a
  patch reaches.
- The spiral's fractional offsets: each patch entry is a bilinear sample
  between four pixels, and placement, the adjoint of that sampling, spreads
  it back over the same four. Extraction followed by placement is then a
  small blur of the object, not the object: the error is second order in
  pixel size inside the patches and first order on their one-pixel fringe.
  The script checks the bound that holds there: every stitched pixel is a
  weighted average of the object over its 3x3 neighbourhood.

Writes `stitch.png` (when matplotlib is installed): the object, the
coverage, and |stitched - object| for the spiral scan.

    python examples/stitch.py [--small] [--out DIR]
"""

import os

import numpy as np

import synthetic  # first: it quiets TensorFlow's start-up logging

import keras
from ptycho_layers import extract_patches, reassemble

GROUP_SIZE = 4  # c: patches per group, gridsize 2

# At whole-pixel offsets every patch entry is a copy of one object pixel,
# placed back on that same pixel with weight one; the stitched pixel is the
# sum of its k copies divided by k, so it differs from the object only by
# the float32 rounding of that sum and division, a few parts in 1e7 of
# max|object|. 1e-4 leaves a wide margin for that, yet sits a hundred times
# below what a patch put one pixel off would cost on this object (its
# neighbouring pixels differ by up to ~5% of max|object| at full size, ~20%
# at --small).
RELATIVE_TOLERANCE = 1e-4


def stitch(obj, offsets, patch_size):
    """Extract the patches of `obj` at `offsets` and reassemble them.

    Returns:
        (patches (B, N, N, c), stitched (H, W), coverage (H, W)), as numpy.
    """
    patches = extract_patches(obj[None], offsets, patch_size)
    # crop=None: the whole patch counts. (PtychoPINN keeps only the central
    # crop x crop of a network's predicted patches, whose borders are less
    # trustworthy; extracted patches are right up to their edges.)
    stitched, coverage = reassemble(
        patches, offsets, obj.shape, crop=None, return_coverage=True
    )
    to_numpy = keras.ops.convert_to_numpy
    return to_numpy(patches), to_numpy(stitched)[0], to_numpy(coverage)[0]


def neighbourhood_spread(obj):
    """(H, W): max |obj[q] - obj[p]| over the 3x3 neighbourhood q of p."""
    padded = np.pad(obj, 1, mode="edge")
    height, width = obj.shape
    spread = np.zeros(obj.shape, np.float32)
    for dy in range(3):
        for dx in range(3):
            shifted = padded[dy : dy + height, dx : dx + width]
            spread = np.maximum(spread, np.abs(shifted - obj))
    return spread


def main(argv=None):
    args = synthetic.example_args(__doc__.splitlines()[0], argv)
    size, patch_size, count = (96, 16, 48) if args.small else (392, 64, 400)

    obj = synthetic.make_object(size, size)  # (H, W) complex64
    peak = float(np.abs(obj).max())
    # As in the quickstart: every patch wholly inside the object.
    radius = size / 2 - patch_size // 2 - 2
    positions = synthetic.fermat_spiral(count, (size / 2, size / 2), radius)
    offsets = synthetic.group_neighbours(positions, GROUP_SIZE)  # (B, c, 2)

    patches, stitched, coverage = stitch(obj, offsets, patch_size)
    covered = coverage > 0
    error = np.abs(stitched - obj)

    print(f"backend:   {keras.backend.backend()}")
    print(f"object:    {obj.shape} {obj.dtype}, max|object| {peak:.3g}")
    print(
        f"scan:      {len(positions)} positions on a Fermat spiral -> "
        f"{offsets.shape[0]} groups of {GROUP_SIZE}, offsets {offsets.shape}"
    )
    print(f"patches:   {patches.shape} {patches.dtype} (extract_patches)")
    print(
        f"stitched:  {stitched.shape} {stitched.dtype} (reassemble, crop=None); "
        f"{covered.mean():.0%} of the pixels covered"
    )
    print(
        f"coverage:  {coverage[covered].min():.3g} .. {coverage.max():.3g} "
        "where covered (fractions on each patch's one-pixel fringe)"
    )
    print(
        f"spiral:    max |stitched - object| over covered pixels "
        f"{error[covered].max():.3g} ({error[covered].max() / peak:.1%} of "
        f"max|object|), median {np.median(error[covered]):.2g}, "
        f"max where coverage >= 1 {error[coverage >= 1].max():.3g}"
    )
    print(
        "           fractional offsets: a blur of the object, not the object "
        "(bilinear sampling, then its adjoint)"
    )

    # Each stitched pixel averages bilinear samples taken less than a pixel
    # away from it, each a convex combination of object pixels in its 3x3
    # neighbourhood; so it cannot stray from the object by more than that
    # neighbourhood does. Same float32 slack as below.
    excess = error - neighbourhood_spread(obj)
    within_bound = bool(np.all(excess[covered] <= RELATIVE_TOLERANCE * peak))
    zero_outside = bool(np.all(stitched[~covered] == 0))
    print(
        f"bound:     every covered pixel within its 3x3 neighbourhood's "
        f"spread of the object: {within_bound}; uncovered pixels 0: "
        f"{zero_outside}"
    )

    # The same scan rounded to whole pixels: stitching is exact there.
    whole = np.round(offsets)
    _, stitched_whole, coverage_whole = stitch(obj, whole, patch_size)
    covered_whole = coverage_whole > 0
    whole_error = float(np.abs(stitched_whole - obj)[covered_whole].max())
    exact = whole_error <= RELATIVE_TOLERANCE * peak
    print(
        f"integer:   same scan rounded to whole pixels: coverage "
        f"{coverage_whole[covered_whole].min():.0f} .. "
        f"{coverage_whole.max():.0f}, max |stitched - object| "
        f"{whole_error:.2g} ({whole_error / peak:.2g} of max|object|, "
        f"tolerance {RELATIVE_TOLERANCE:g}): {'exact' if exact else 'WRONG'}"
    )

    path = plot(obj, positions, coverage, error, whole_error, args.out)
    if path:
        print(f"wrote:     {path}")
    else:
        print("matplotlib is not installed: no plot (pip install -e '.[plot]')")

    if not exact:
        raise SystemExit(
            "stitching patches at whole-pixel offsets did not give the "
            "object back"
        )
    if not within_bound:
        raise SystemExit(
            "a stitched pixel strays further from the object than its "
            "3x3 neighbourhood allows"
        )
    if not zero_outside:
        raise SystemExit("a pixel no patch reaches is not 0")


def plot(obj, positions, coverage, error, whole_error, out):
    plt = synthetic.pyplot()
    if plt is None:
        return None
    from matplotlib.colors import LogNorm

    peak = np.abs(obj).max()
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.2), layout="constrained")

    shown = axes[0].imshow(np.abs(obj), cmap="gray")
    axes[0].plot(*positions.T, ".", color="gold", markersize=3)
    axes[0].set_title(f"object amplitude, {len(positions)} scan positions")
    figure.colorbar(shown, ax=axes[0], shrink=0.85)

    shown = axes[1].imshow(coverage, cmap="viridis")
    axes[1].set_title("coverage: patch weight per pixel")
    figure.colorbar(shown, ax=axes[1], shrink=0.85)

    # Log scale, from a millionth of max|object| (float32 rounding, and the
    # exact zeros, are drawn at the floor) up to max|object|; uncovered
    # pixels blank.
    floor = 1e-6 * peak
    relative = np.where(coverage > 0, np.maximum(error, floor), np.nan)
    shown = axes[2].imshow(
        relative, cmap="magma", norm=LogNorm(floor, peak)
    )
    axes[2].set_title("|stitched - object|, spiral scan (log scale)")
    figure.colorbar(shown, ax=axes[2], shrink=0.85)

    for axis in axes:
        axis.set_xlabel("x (column)")
        axis.set_ylabel("y (row)")
    figure.suptitle(
        "Patches extracted and stitched back with reassemble: fractional "
        "offsets blur the object (largest on each patch's fringe); "
        f"whole-pixel offsets give it back, max error {whole_error:.1g}"
    )
    path = os.path.join(out, "stitch.png")
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
