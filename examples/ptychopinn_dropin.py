"""Replace PtychoPINN's `get_image_patches` and compare before and after.

PtychoPINN extracts the training patches of a simulated object with
`get_image_patches(gt_image, global_offsets, local_offsets, N, gridsize)`,
offsets in its (B, 1, 2, c) layout ([x, y] on axis 2, the c = gridsize**2
scan positions of a group on axis 3). `ptycho_layers.get_image_patches`
takes the same arrays and returns the same (B, N, N, c) complex64 patches:

- `batched=False` runs PtychoPINN's own algorithm, one patch at a time
  (pad the object, translate the whole of it, keep the top-left NxN): the
  "before";
- `batched=True` (the default) gathers every patch's neighbourhood at once:
  the "after".

    python examples/ptychopinn_dropin.py [--small] [--out DIR]
"""

import numpy as np

import synthetic  # first: it quiets TensorFlow's start-up logging

import keras
from ptycho_layers import get_image_patches

GRIDSIZE = 2


def ptychopinn_offsets(offsets):
    """(B, c, 2) scan positions -> PtychoPINN's (global, local) offsets.

    global: (B, 1, 2, 1), each group's centre; local: (B, 1, 2, c), each
    position relative to it, so global + local is the position itself.
    """
    channels = np.transpose(offsets, (0, 2, 1))[:, None]  # (B, 1, 2, c)
    global_offsets = channels.mean(axis=3, keepdims=True)
    return global_offsets, channels - global_offsets


def main(argv=None):
    args = synthetic.example_args(__doc__.splitlines()[0], argv)
    size, patch_size, count = (96, 16, 48) if args.small else (392, 64, 400)

    gt_image = synthetic.make_object(size, size)  # (H, W) complex64
    positions = synthetic.fermat_spiral(
        count, (size / 2, size / 2), size / 2 - patch_size // 2 - 2
    )
    offsets = synthetic.group_neighbours(positions, GRIDSIZE**2)
    global_offsets, local_offsets = ptychopinn_offsets(offsets)

    def extract(batched):
        patches = get_image_patches(
            gt_image, global_offsets, local_offsets, patch_size, GRIDSIZE,
            batched=batched,
        )
        return keras.ops.convert_to_numpy(patches)

    # Each path is timed after a first, untimed call (both are traced on
    # first use); the slow loop once, the batched path best of 3.
    before, seconds_before = synthetic.best_time(
        lambda: extract(batched=False), repeats=1
    )
    after, seconds_after = synthetic.best_time(lambda: extract(batched=True))

    num_patches = offsets.shape[0] * offsets.shape[1]
    print(f"backend:        {keras.backend.backend()}")
    print(f"gt_image:       {gt_image.shape} {gt_image.dtype}")
    print(
        f"global_offsets: {global_offsets.shape}, local_offsets: "
        f"{local_offsets.shape} (B, 1, 2, c), gridsize={GRIDSIZE}, "
        f"N={patch_size}"
    )
    print(f"patches:        {after.shape} {after.dtype} ({num_patches} patches)")
    difference = np.abs(after - before).max()
    print(
        f"max |batched - per-patch loop|: {difference:.2e} "
        f"(object amplitude up to {np.abs(gt_image).max():.2f})"
    )
    print(
        f"before, batched=False: {seconds_before * 1e3:9.1f} ms "
        f"({num_patches / seconds_before:,.0f} patches/s)"
    )
    print(
        f"after,  batched=True:  {seconds_after * 1e3:9.1f} ms "
        f"({num_patches / seconds_after:,.0f} patches/s), "
        f"{seconds_before / seconds_after:.0f}x faster"
    )
    # Both are float32 bilinear interpolation of the same samples, summed in
    # a different order: they agree to float32 rounding of values below 1.
    if after.shape != before.shape or not difference < 1e-5:
        raise SystemExit("the batched and per-patch results differ")


if __name__ == "__main__":
    main()
