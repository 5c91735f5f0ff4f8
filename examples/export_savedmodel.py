"""Export a patch-extraction model as a TensorFlow SavedModel and serve it.

`model.export` writes a SavedModel with a `serve` endpoint; reloading it
needs TensorFlow alone (no Keras, no ptycho_layers), e.g. for TF Serving.
The example runs on the TensorFlow backend (`KERAS_BACKEND=tensorflow`,
the default).

    python examples/export_savedmodel.py [--small] [--out DIR]
"""

import os

import numpy as np

import synthetic  # first: it quiets TensorFlow's start-up logging

import keras
from ptycho_layers import PatchExtraction


def main(argv=None):
    args = synthetic.example_args(__doc__.splitlines()[0], argv)
    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            "this example exports a TensorFlow SavedModel: run it with "
            f"KERAS_BACKEND=tensorflow (now: {keras.backend.backend()})"
        )
    import tensorflow as tf

    size, patch_size, count = (64, 8, 32) if args.small else (256, 32, 256)
    obj = synthetic.make_object(size, size)  # (H, W) complex64
    positions = synthetic.fermat_spiral(
        count, (size / 2, size / 2), size / 2 - patch_size // 2 - 2
    )
    offsets = synthetic.group_neighbours(positions, 4)  # (B, 4, 2)

    model = keras.Sequential(
        [keras.Input(shape=(4, 2)), PatchExtraction(patch_size, image=obj)]
    )
    expected = model.predict(offsets, verbose=0)

    path = os.path.join(args.out, "patches_savedmodel")
    model.export(path, format="tf_saved_model", verbose=False)

    served = tf.saved_model.load(path)
    # Any batch size: the endpoint's batch dimension is None.
    patches = served.serve(tf.constant(offsets)).numpy()
    print(f"backend:  {keras.backend.backend()}")
    (spec,) = served.serve.input_signature
    print(
        f"exported: {path}/ (endpoint 'serve', input "
        f"{tuple(spec.shape)} {spec.dtype.name})"
    )
    print(f"served:   offsets {offsets.shape} -> patches {patches.shape} {patches.dtype}")
    difference = np.abs(patches - expected).max()
    print(f"max |served - model.predict|: {difference:.3g}")
    # `predict` may run XLA-compiled and the SavedModel as a plain graph,
    # which may round float32 differently: allow that, nothing more.
    if patches.shape != expected.shape or difference > 1e-6:
        raise SystemExit("the served model differs from the Keras model")


if __name__ == "__main__":
    main()
