"""The three ways extraction reads its windows, each forced in turn,
against the float64 oracle: the padded table, the object's own runs fused
into the blend (the moved rows added apart) and windows gathered into a
buffer; and, in XLA's optimized program, what the caller's next operation
may fuse with."""

import re

import numpy as np
import pytest
from keras import ops

from oracle import asymmetric_object, oracle_patches
from ptycho_layers import backends
from ptycho_layers.operators import extract_patches_batched
from ptycho_layers.xla import windows
from test_extraction import KINDS, make_offsets

pytestmark = pytest.mark.skipif(
    backends.current().take_runs is None,
    reason="the XLA backends' readers: TensorFlow and JAX",
)

READERS = ["padded", "fused", "gathered"]


def extract_with(monkeypatch, how, images, offsets, patch_size):
    """Extraction with its reader forced to `how`."""
    if how == "fused" and images.shape[2] < patch_size + 1:
        pytest.skip("runs of the object itself need it at least a window wide")
    monkeypatch.setattr(windows, "reader", lambda *args: how)
    return ops.convert_to_numpy(extract_patches_batched(images, offsets, patch_size))


@pytest.mark.parametrize("how", READERS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("obj", [(37, 53), (9, 5)])
def test_every_reader_matches_the_oracle(monkeypatch, how, kind, obj):
    """One object per row, offsets of every kind; a 9x5 object is narrower
    than the windows (no fused runs there)."""
    height, width = obj
    images = np.stack([asymmetric_object(height, width, "complex64", seed=s) for s in range(2)])
    offsets = make_offsets(kind, 2, 4, height, width, 7, seed=3)
    patches = extract_with(monkeypatch, how, images, offsets, 7)
    expected = oracle_patches(images, offsets, 7)
    np.testing.assert_allclose(patches, expected, rtol=0, atol=1e-6 * np.abs(images).max())


@pytest.mark.parametrize("how", READERS)
def test_nan_reaches_only_the_patches_that_read_it(monkeypatch, how):
    """NaN in the object's first and last columns, rows 0 and H-1 among
    them: a run that sticks out of the object reads them in the rows
    beside (and XLA moves the runs of rows 0 and H-1), and none of that
    may show; the patches whose 2x2 neighbourhoods hold a NaN are NaN, as
    in the oracle, and no others."""
    height, width, n = 12, 15, 6
    images = asymmetric_object(height, width, "complex64")[None]
    images[0, [0, 5, height - 1], width - 1] = np.nan
    images[0, [0, 6, height - 1], 0] = np.nan
    edges = make_offsets("edges", 6, 4, height, width, n, seed=8)
    inside = make_offsets("fractional", 6, 4, height, width, n, seed=9)
    offsets = np.concatenate([edges, inside])
    patches = extract_with(monkeypatch, how, images, offsets, n)
    expected = oracle_patches(images, offsets, n)
    # The test has teeth: some patches read a NaN, most do not.
    assert np.isnan(expected).any() and np.isfinite(expected).mean() > 0.5
    np.testing.assert_allclose(patches, expected, rtol=0, atol=1e-5, equal_nan=True)


def _optimized_hlo(fn, *args):
    """XLA's optimized HLO text of `fn(*args)` compiled whole, as a caller
    compiles a model around the layer."""
    if backends.current().NAME == "jax":
        import jax

        return jax.jit(fn).lower(*args).compile().as_text()
    import tensorflow as tf

    compiled = tf.function(fn, jit_compile=True)
    return compiled.experimental_get_compiler_ir(*args)(stage="optimized_hlo")


@pytest.mark.parametrize("how", ["padded", "fused"])
def test_what_follows_fused_runs_is_kept_out_of_their_loop(monkeypatch, how):
    """Compiled with a product after it, extraction from the object's own
    runs hands its patches out of a conditional, so XLA cannot fuse the
    caller's work into the masked loop (which then runs unvectorized:
    object 2048, 18-29 ms against 3.4); from the padded table it leaves
    them free to fuse."""
    monkeypatch.setattr(windows, "reader", lambda *args: how)
    images = ops.convert_to_tensor(asymmetric_object(20, 24, "complex64")[None])
    offsets = ops.convert_to_tensor(make_offsets("fractional", 2, 4, 20, 24, 7, seed=1))
    probe = ops.convert_to_tensor(asymmetric_object(7, 7, "complex64")[None, :, :, None])
    text = _optimized_hlo(lambda x, o: probe * extract_patches_batched(x, o, 7), images, offsets)
    handed_out = re.search(r"= \(c64\[2,7,7,4\][^)]*\) conditional\(", text)
    assert bool(handed_out) == (how == "fused")
