"""What must hold on every Keras backend: compiled equals eager, and a
`.keras` file saved under one backend loads under the others."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import requires
from oracle import asymmetric_object, oracle_patches
from ptycho_layers import PatchExtraction

BACKEND = keras.backend.backend()
OTHERS = [b for b in ("tensorflow", "jax", "torch") if b != BACKEND]


def _offsets(batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-3, 30, (batch, 4, 2)).astype("float32")


@pytest.mark.parametrize(
    "batched",
    [
        True,
        pytest.param(
            False,
            marks=pytest.mark.skipif(
                BACKEND == "torch",
                reason="torch.compile unrolls the legacy per-patch loop "
                "(minutes); only the vectorized path is meant to compile there",
            ),
        ),
    ],
)
def test_compiled_predict_equals_eager(batched):
    """`jit_compile=True` means XLA on TensorFlow, `jax.jit` on JAX and
    `torch.compile` on PyTorch."""
    image = asymmetric_object(28, 31, "complex64")
    model = keras.Sequential([keras.Input((4, 2)), PatchExtraction(8, batched=batched, image=image)])
    offsets = _offsets(6)
    eager = keras.ops.convert_to_numpy(model(offsets))
    model.compile(jit_compile=True)
    compiled = model.predict(offsets, batch_size=3, verbose=0)
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-6)
    np.testing.assert_allclose(eager, oracle_patches(image[None], offsets, 8), atol=1e-4)


LOAD_AND_PREDICT = """
import json, sys
import numpy as np, keras
import ptycho_layers  # registers the layer
model = keras.models.load_model(sys.argv[1])
offsets = np.load(sys.argv[2])
out = keras.ops.convert_to_numpy(model(offsets))
np.save(sys.argv[3], out)
print(json.dumps({"backend": keras.backend.backend(),
                  "batched": model.layers[-1].batched}))
"""


@pytest.mark.parametrize("other", [pytest.param(b, marks=requires(b)) for b in OTHERS])
def test_keras_file_loads_under_other_backends(tmp_path, other):
    image = asymmetric_object(30, 26, "complex64")
    model = keras.Sequential([keras.Input((4, 2)), PatchExtraction(6, batched=False, image=image)])
    path = str(tmp_path / "model.keras")
    model.save(path)
    offsets = _offsets(3, seed=1)
    np.save(tmp_path / "offsets.npy", offsets)
    expected = keras.ops.convert_to_numpy(model(offsets))

    env = {**os.environ, "KERAS_BACKEND": other}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, path, str(tmp_path / "offsets.npy"), str(tmp_path / "out.npy")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info == {"backend": other, "batched": False}
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile: PyTorch backend")
def test_torch_compile_fullgraph_equals_eager():
    """No data-dependent branch, no import, no per-call Keras operation in
    the vectorized kernels: both operators capture as one graph."""
    import torch

    from ptycho_layers import extract_patches, place_patches

    image = torch.tensor(asymmetric_object(30, 33, "complex64")[None])
    offsets = torch.tensor(_offsets(3))
    patches = extract_patches(image, offsets, 8)
    compiled_extract = torch.compile(lambda im, off: extract_patches(im, off, 8), fullgraph=True)
    compiled_place = torch.compile(lambda p, off: place_patches(p, off, (30, 33)), fullgraph=True)
    np.testing.assert_allclose(
        compiled_extract(image, offsets).numpy(), patches.numpy(), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        compiled_place(patches, offsets).numpy(),
        place_patches(patches, offsets, (30, 33)).numpy(), rtol=0, atol=1e-5,
    )
