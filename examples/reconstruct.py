"""Recover an object from its patches by gradient descent.

The complex object is the layer's trainable weight (`trainable_image=True`),
the model maps scan offsets to patches, and `model.fit` on (offsets,
measured patches) pulls the weight towards the object that produced them.
Pixels no patch covers get no gradient and stay at their starting value,
zero; the error is measured, and the result drawn, where the patches cover
the object.

The layer stores a trainable complex object as real and imaginary parts,
so Keras's optimizers update it correctly on every backend. Keras's losses,
though, cast `y_true` and `y_pred` to float32, which would drop the
imaginary part of complex patches: the model therefore ends in `as_real`,
which lays the real and imaginary parts of the patches side by side, and
is fitted to the measured patches laid out the same way.

    python examples/reconstruct.py [--small] [--out DIR]
"""

import os

import numpy as np

import synthetic  # first: it quiets TensorFlow's start-up logging

import keras
from keras import layers, ops
from ptycho_layers import PatchExtraction

GROUP_SIZE = 4


def as_real(patches):
    """(B, N, N, c) complex -> (B, N, N, 2c) real: real parts, then imaginary."""
    return ops.concatenate([ops.real(patches), ops.imag(patches)], axis=-1)


def build_model(image_shape, patch_size):
    """offsets (B, c, 2) -> patches of a trainable complex object, as
    (B, N, N, 2c) float32."""
    extract = PatchExtraction(
        patch_size,
        image_shape=image_shape,
        image_dtype="complex64",
        trainable_image=True,
        name="extract",
    )
    return keras.Sequential(
        [
            keras.Input(shape=(GROUP_SIZE, 2), name="offsets"),
            extract,
            layers.Lambda(as_real, name="as_real"),
        ]
    )


def main(argv=None):
    args = synthetic.example_args(__doc__.splitlines()[0], argv)
    if args.small:
        size, patch_size, count, epochs, batch_size = 40, 8, 64, 15, 2
    else:
        size, patch_size, count, epochs, batch_size = 128, 24, 320, 60, 8
    keras.utils.set_random_seed(0)

    truth = synthetic.make_object(size, size)  # (H, W) complex64
    positions = synthetic.fermat_spiral(
        count, (size / 2, size / 2), size / 2 - patch_size // 2
    )
    offsets = synthetic.group_neighbours(positions, GROUP_SIZE)  # (B, c, 2)
    # The "measurements": the true object's patches, as real numbers.
    measured = ops.convert_to_numpy(
        as_real(PatchExtraction(patch_size, image=truth)(offsets))
    )

    model = build_model(truth.shape, patch_size)
    steps = epochs * -(-len(offsets) // batch_size)
    # A large first step size that decays to zero: fast, and the fit
    # settles instead of rattling around the minimum.
    learning_rate = keras.optimizers.schedules.CosineDecay(0.05, steps)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    history = model.fit(
        offsets, measured, batch_size=batch_size, epochs=epochs, verbose=0
    )

    recovered = ops.convert_to_numpy(model.get_layer("extract").image)
    covered = coverage(truth.shape, offsets, patch_size)
    error = np.abs(recovered - truth)[covered]
    print(f"backend:    {keras.backend.backend()}")
    print(
        f"object:     {truth.shape} {truth.dtype}, "
        "recovered as the layer's trainable weight"
    )
    print(
        f"scan:       {offsets.shape[0]} groups of {GROUP_SIZE}, "
        f"patches {patch_size}x{patch_size}"
    )
    print(
        f"training:   {steps} Adam steps of {batch_size} groups, loss "
        f"{history.history['loss'][0]:.3g} -> {history.history['loss'][-1]:.3g}"
    )
    print(
        f"recovered:  |object - truth| over the {covered.mean():.0%} of pixels "
        f"the scan covers: median {np.median(error):.2g}, max {error.max():.2g} "
        f"(|truth| up to {np.abs(truth).max():.2f})"
    )
    # Even the short --small run brings the loss down a hundredfold.
    if not history.history["loss"][-1] < history.history["loss"][0] / 100:
        raise SystemExit("the fit did not converge")

    path = plot(truth, recovered, covered, positions, history, args.out)
    if path:
        print(f"wrote:      {path}")
    else:
        print("matplotlib is not installed: no plot (pip install -e '.[plot]')")


def coverage(shape, offsets, patch_size):
    """(H, W) bool: the pixels some patch samples with full weight.

    A patch at [x, y] samples rows y - N//2 + i, i = 0..N-1; the whole
    pixels between its first and last sample get a total weight of one from
    it, the two pixels just outside them only a fraction (and are left out
    here, as the fit barely constrains them).
    """
    covered = np.zeros(shape, bool)
    half = patch_size // 2
    for x, y in offsets.reshape(-1, 2):
        top, left = int(np.ceil(y)) - half, int(np.ceil(x)) - half
        bottom = int(np.floor(y)) - half + patch_size  # exclusive
        right = int(np.floor(x)) - half + patch_size
        covered[max(top, 0) : max(bottom, 0), max(left, 0) : max(right, 0)] = True
    return covered


def plot(truth, recovered, covered, positions, history, out):
    plt = synthetic.pyplot()
    if plt is None:
        return None
    shown = np.where(covered, recovered, np.nan)  # blank where unscanned
    figure, axes = plt.subplots(
        2, 3, figsize=(12, 7.5), layout="constrained"
    )
    views = [
        (np.abs, "gray", (np.abs(truth).min(), np.abs(truth).max()), "amplitude"),
        (np.angle, "twilight", (np.angle(truth).min(), np.angle(truth).max()), "phase"),
    ]
    for row, (part, cmap, clim, name) in enumerate(views):
        for column, (image, title) in enumerate(
            [(truth, "truth"), (shown, "recovered")]
        ):
            axis = axes[row, column]
            drawn = axis.imshow(part(image), cmap=cmap, clim=clim)
            axis.set_title(f"{title}: {name}")
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].plot(*positions.T, ".", color="gold", markersize=2)
        figure.colorbar(drawn, ax=axes[row, :2], shrink=0.85)

    from matplotlib.colors import LogNorm

    # Log scale: the error spans orders of magnitude (edges vs interior).
    error = np.where(covered, np.abs(recovered - truth), np.nan)
    drawn = axes[0, 2].imshow(
        np.maximum(error, 1e-8), cmap="magma", norm=LogNorm(1e-8, 1)
    )
    axes[0, 2].set_title("|recovered - truth| (log scale)")
    axes[0, 2].set_xticks([])
    axes[0, 2].set_yticks([])
    figure.colorbar(drawn, ax=axes[0, 2], shrink=0.85)

    axes[1, 2].semilogy(history.history["loss"])
    axes[1, 2].set_xlabel("epoch")
    axes[1, 2].set_ylabel("mean squared error of the patches")
    axes[1, 2].set_title("training loss")
    figure.suptitle(
        "Object recovered from its patches by model.fit "
        "(scan positions in gold; unscanned pixels left blank)"
    )
    path = os.path.join(out, "reconstruct.png")
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
