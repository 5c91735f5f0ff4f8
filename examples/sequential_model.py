"""The layer in a `keras.Sequential` model: build, save, load, predict.

A `PatchExtraction` layer that holds its object takes offsets as its only
input, so it goes into a Sequential model with `model.add`. The object is
saved with the model (as the layer's "image" weight) and comes back with it.

    python examples/sequential_model.py [--small] [--out DIR]
"""

import os

import numpy as np

import synthetic  # first: it quiets TensorFlow's start-up logging

import keras
from ptycho_layers import PatchExtraction


def main(argv=None):
    args = synthetic.example_args(__doc__.splitlines()[0], argv)
    size, patch_size, count = (64, 8, 32) if args.small else (256, 32, 256)

    obj = synthetic.make_object(size, size)  # (H, W) complex64
    positions = synthetic.fermat_spiral(
        count, (size / 2, size / 2), size / 2 - patch_size // 2 - 2
    )
    offsets = synthetic.group_neighbours(positions, 4)  # (B, 4, 2)

    model = keras.Sequential(name="patches")
    model.add(keras.Input(shape=(4, 2), name="offsets"))  # (c, 2) per row
    model.add(PatchExtraction(patch_size, image=obj, name="extract"))
    # (model.summary() cannot be used here: Keras's parameter count does not
    # know complex dtypes and raises "Invalid dtype: complex64".)
    before = model.predict(offsets, verbose=0)

    path = os.path.join(args.out, "sequential_model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded.predict(offsets, verbose=0)

    held = keras.ops.convert_to_numpy(loaded.get_layer("extract").image)
    print(f"backend:        {keras.backend.backend()}")
    print(f"model:          {[layer.name for layer in model.layers]}, "
          f"output shape {model.output_shape}")
    print(f"offsets:        {offsets.shape} {offsets.dtype}")
    print(f"predictions:    {before.shape} {before.dtype}")
    print(f"saved:          {path} ({os.path.getsize(path):,} bytes)")
    print(f"object restored exactly:      {np.array_equal(held, obj)}")
    print(f"predictions equal after load: {np.array_equal(before, after)}")
    if not (np.array_equal(held, obj) and np.array_equal(before, after)):
        raise SystemExit("the loaded model differs from the saved one")


if __name__ == "__main__":
    main()
