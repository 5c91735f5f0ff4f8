"""Quickstart: extract the patches of a ptychography scan from an object.

Builds a synthetic complex object, scans it along a Fermat spiral, groups
the scan positions by fours (gridsize 2) with their nearest neighbours and
extracts every patch with a `PatchExtraction` layer that holds the object.
Writes `quickstart.png` (when matplotlib is installed): the object's
amplitude and phase with the scan drawn on them, and the patches of two
marked groups, so you can see each patch came from where its dot says.

    python examples/quickstart.py            # 392x392 object, 64x64 patches
    python examples/quickstart.py --small    # a few seconds
"""

import os

import numpy as np

import synthetic  # first: it quiets TensorFlow's start-up logging

import keras
from ptycho_layers import PatchExtraction

GRIDSIZE = 2
GROUP_SIZE = GRIDSIZE**2  # c: patches per group, on the output's last axis


def main(argv=None):
    args = synthetic.example_args(__doc__.splitlines()[0], argv)
    size, patch_size, count = (96, 16, 48) if args.small else (392, 64, 400)

    obj = synthetic.make_object(size, size)  # (H, W) complex64
    # Keep every patch wholly inside the object: centres at least N//2 + 2
    # pixels from its edges.
    radius = size / 2 - patch_size // 2 - 2
    positions = synthetic.fermat_spiral(count, (size / 2, size / 2), radius)
    offsets = synthetic.group_neighbours(positions, GROUP_SIZE)  # (B, c, 2)

    # The held-image form: the object is a weight of the layer, and the
    # layer takes offsets alone.
    layer = PatchExtraction(patch_size, image=obj)
    patches, seconds = synthetic.best_time(
        lambda: keras.ops.convert_to_numpy(layer(offsets))
    )  # patches: (B, N, N, c) complex64
    num_patches = offsets.shape[0] * offsets.shape[1]
    print(f"backend:  {keras.backend.backend()}")
    print(f"object:   {obj.shape} {obj.dtype}")
    print(
        f"scan:     {len(positions)} positions on a Fermat spiral -> "
        f"{offsets.shape[0]} groups of {GROUP_SIZE}, offsets {offsets.shape}"
    )
    print(f"patches:  {num_patches} of {patch_size}x{patch_size}")
    print(f"output:   {patches.shape} {patches.dtype}")
    print(
        f"speed:    {num_patches / seconds:,.0f} patches/s "
        f"({seconds * 1e3:.2f} ms for all of them, best of 3)"
    )

    # The patch of an integer offset is a plain slice of the object; check
    # it on one made-up offset, so the convention is visible here too.
    half = patch_size // 2
    x, y = size // 4, size // 3
    one = keras.ops.convert_to_numpy(
        layer(np.array([[[x, y]]], "float32"))
    )[0, :, :, 0]
    expected = obj[y - half : y - half + patch_size, x - half : x - half + patch_size]
    print(
        f"check:    offset [x={x}, y={y}] is the slice obj[{y - half}:"
        f"{y - half + patch_size}, {x - half}:{x - half + patch_size}] "
        f"(rows, columns): {np.array_equal(one, expected)}"
    )

    if not np.array_equal(one, expected):
        raise SystemExit("the patch is not the slice the convention says")

    path = plot(obj, positions, offsets, patches, patch_size, args.out)
    if path:
        print(f"wrote:    {path}")
    else:
        print("matplotlib is not installed: no plot (pip install -e '.[plot]')")


def plot(obj, positions, offsets, patches, patch_size, out):
    plt = synthetic.pyplot()
    if plt is None:
        return None
    from matplotlib.patches import Rectangle

    centre = offsets.mean(axis=1)
    # Two groups to mark, each on an edge so their patches differ: the
    # bright disc's lower right and the dark ellipse's top.
    marked = [
        int(np.argmin(np.hypot(*(centre - target).T)))
        for target in (
            np.array([0.41, 0.4]) * obj.shape[::-1],
            np.array([0.7, 0.6]) * obj.shape[::-1],
        )
    ]
    colours = ["tab:red", "tab:cyan"]
    half = patch_size // 2

    figure = plt.figure(figsize=(12, 9.6), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.55, 1])
    images = top.subplots(1, 2)
    views = [
        (np.abs(obj), "gray", "amplitude"),
        (np.angle(obj), "twilight", "phase (rad)"),
    ]
    for axis, (view, cmap, title) in zip(images, views):
        shown = axis.imshow(view, cmap=cmap)
        top.colorbar(shown, ax=axis, shrink=0.8)
        axis.plot(*positions.T, ".", color="gold", markersize=3)
        for group, colour in zip(marked, colours):
            for x, y in offsets[group]:
                # Pixel centres sit on integers, so the patch's N pixels
                # span [x - N//2 - 0.5, x - N//2 + N - 0.5).
                axis.add_patch(
                    Rectangle(
                        (x - half - 0.5, y - half - 0.5),
                        patch_size,
                        patch_size,
                        fill=False,
                        edgecolor=colour,
                        linewidth=1.2,
                    )
                )
            axis.plot(*offsets[group].T, "o", color=colour, markersize=4)
        axis.set_title(
            f"object {title}: {len(positions)} scan positions, "
            "two groups marked"
        )
        axis.set_xlabel("x (column)")
        axis.set_ylabel("y (row)")

    strip = bottom.subplots(2, 2 * GROUP_SIZE)
    # The object's own colour ranges, so patch and object colours match.
    amplitude_range = (np.abs(obj).min(), np.abs(obj).max())
    phase_range = (np.angle(obj).min(), np.angle(obj).max())
    for row, view in enumerate(["amplitude", "phase"]):
        for slot in range(2 * GROUP_SIZE):
            group = marked[slot // GROUP_SIZE]
            k = slot % GROUP_SIZE
            patch = patches[group, :, :, k]
            axis = strip[row, slot]
            if view == "amplitude":
                axis.imshow(np.abs(patch), cmap="gray", clim=amplitude_range)
            else:
                axis.imshow(np.angle(patch), cmap="twilight", clim=phase_range)
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_edgecolor(colours[slot // GROUP_SIZE])
                spine.set_linewidth(2.5)
            if row == 0:
                x, y = offsets[group, k]
                axis.set_title(
                    f"[{group}, :, :, {k}]\nx={x:.1f} y={y:.1f}", fontsize=8
                )
        strip[row, 0].set_ylabel(view)
    bottom.suptitle(
        "patches[b, :, :, k] of the two marked groups (frame colour = group)"
    )

    path = os.path.join(out, "quickstart.png")
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
