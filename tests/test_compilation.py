"""The persistent compilation cache (`ptycho_layers.compilation`): a
process-wide setting, so every run of it here is in a fresh process."""

import os
import time

import pytest

from _fresh_process import run_python
from conftest import BACKEND
from ptycho_layers import persistent_cache

# One placement and one extraction in a fresh process with the cache in
# CACHE; prints the largest error against the float64 oracle.
SNIPPET = """
import numpy as np
import ptycho_layers
from oracle import asymmetric_object, oracle_patches, oracle_place
from ptycho_layers.backends import batch_sizes
print("set", ptycho_layers.persistent_cache({cache!r}))
# These calls are small enough to run on the host at first (nothing
# compiled, nothing cached): compiled, as larger ones are.
batch_sizes.HOST_ELEMENTS = -1
rng = np.random.default_rng(0)
image = asymmetric_object(40, 44, "complex64")[None]
offsets = rng.uniform(4, 36, (6, 4, 2)).astype("float32")
patches = np.asarray(ptycho_layers.extract_patches(image, offsets, 8))
placed = np.asarray(ptycho_layers.place_patches(patches, offsets, (40, 44)))
error = max(
    np.abs(patches - oracle_patches(image, offsets, 8)).max(),
    np.abs(placed - oracle_place(patches, offsets, (40, 44))).max() / np.abs(placed).max(),
)
print("error", error)
"""


def _entries(directory, field="st_mtime_ns"):
    """{file name: modification (or access) time} of the cache's files."""
    return {
        name: getattr(os.stat(os.path.join(root, name)), field)
        for root, _, names in os.walk(directory) for name in names
    }


def _reads_are_seen(directory):
    """Whether reading a file moves its access time here (not on a
    filesystem mounted noatime)."""
    probe = os.path.join(directory, "probe")
    with open(probe, "w") as file:
        file.write("x")
    before = os.stat(probe).st_atime_ns
    time.sleep(0.05)
    with open(probe) as file:
        file.read()
    seen = os.stat(probe).st_atime_ns > before
    os.remove(probe)
    return seen


# Two fresh TensorFlow processes that compile: ~27 s on 2 cores, so -m slow
# there; the JAX run keeps it by default, and on TensorFlow the benchmark's
# cache test (test_first_call_probe_fills_the_compilation_cache) checks that
# the flag fills the directory.
@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch compiles nothing per shape")
@(pytest.mark.slow if BACKEND == "tensorflow" else lambda test: test)
def test_a_later_process_loads_what_an_earlier_one_compiled(tmp_path):
    """The first process writes the operators' programs into the cache
    directory it was given (nothing elsewhere in its working directory);
    the second, on the same shapes, loads them: the same numbers, every
    entry read (where the filesystem records reads) and none written
    again."""
    cache = tmp_path / "cache"
    work = tmp_path / "work"
    work.mkdir()
    first = run_python(SNIPPET.format(cache=str(cache)), work)
    assert "set True" in first
    assert float(first.split("error")[-1]) < 1e-5
    written = _entries(cache)
    assert written, "nothing was cached"
    assert sorted(os.listdir(work)) == ["_snippet.py"]
    read_before = _entries(cache, "st_atime_ns")
    time.sleep(0.05)
    second = run_python(SNIPPET.format(cache=str(cache)), work)
    assert float(second.split("error")[-1]) < 1e-5
    assert _entries(cache) == written
    if _reads_are_seen(tmp_path):
        read_after = _entries(cache, "st_atime_ns")
        unread = [name for name in written if read_after[name] <= read_before[name]]
        assert not unread, unread


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch backend")
def test_pytorch_changes_nothing(tmp_path):
    assert persistent_cache(tmp_path / "cache") is False
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("directory", [42, "", None, b"bytes"])
def test_bad_directory(directory):
    with pytest.raises(ValueError, match=rf"`directory` must be a path(.|\n)*Received: directory={directory!r}"):
        persistent_cache(directory)


def test_a_file_is_no_directory(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("")
    with pytest.raises(ValueError, match="it is a file"):
        persistent_cache(path)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's XLA flags")
def test_too_late_on_tensorflow_is_refused(tmp_path):
    """After TensorFlow's first operation its XLA flags are read: the
    setting would be ignored, so it is refused, with nothing written."""
    out = run_python(f"""
        import tensorflow as tf
        import ptycho_layers
        tf.constant(1.0) + 1.0
        try:
            ptycho_layers.persistent_cache({str(tmp_path / "cache")!r})
        except RuntimeError as error:
            print("refused:", error)
        """, tmp_path)
    assert "refused: persistent_cache() must be called before TensorFlow's first operation" in out
    assert not (tmp_path / "cache").exists()
