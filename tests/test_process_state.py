"""What the operators keep and share across a process: PyTorch's pool of
freed outputs (bfloat16 included) and `release_memory`, the bounded caches
of compiled operators, `torch.compile` tracing past the ONNX-export check,
and the ONNX-export state being per thread."""

import gc
import threading

import keras
import numpy as np
import pytest

from conftest import BACKEND
from oracle import asymmetric_object
import ptycho_layers
from ptycho_layers import (
    PatchExtraction,
    PatchPlacement,
    backends,
    onnx_export,
    operators,
    place_patches,
)

torch_only = pytest.mark.skipif(
    BACKEND != "torch", reason="PyTorch only: its pool, bfloat16 buffers and torch.compile"
)

# bfloat16 keeps 8 significant bits: rounding to nearest moves a value by
# at most 2**-8 of itself. The kernels interpolate bfloat16 in float32 and
# round once at the end, so a bfloat16 result is the float32 one rounded,
# and within that of it (plus a floor for values near zero, where float32
# sums of cancelling terms keep digits bfloat16 does not).
BFLOAT16 = dict(rtol=2.0**-8, atol=1e-6)


def _numpy(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


# ---------------------------------------------------------------------------
# A. bfloat16 on PyTorch.


@torch_only
def test_pool_serves_and_reuses_bfloat16_buffers():
    """NumPy has no bfloat16: the pool holds such an output's memory as
    NumPy's 2-byte integers, viewed as bfloat16, and reuses it alike."""
    import torch

    from ptycho_layers.torch import buffers as torch_buffers

    torch_buffers.clear()
    first = torch_buffers.new_output((4, 5, 2), torch.bfloat16)
    assert first.dtype == torch.bfloat16 and tuple(first.shape) == (4, 5, 2)
    first.fill_(1.5)
    assert first.sum().item() == 60.0
    address = first.data_ptr()
    del first
    gc.collect()
    assert torch_buffers.pooled_bytes() == 80
    again = torch_buffers.new_output((4, 5, 2), torch.bfloat16)
    assert again.data_ptr() == address and torch_buffers.pooled_bytes() == 0
    # A float16 buffer of the same shape and size is a different entry.
    del again
    gc.collect()
    assert torch_buffers.new_output((4, 5, 2), torch.float16).data_ptr() != address
    torch_buffers.clear()


def _bfloat16_and_float32_gradients(place, offsets, shape, seed):
    """{dtype: (d patches, d offsets)} of sum(place(patches, offsets)[0] *
    weights) for the same bfloat16-representable patches and weights, the
    patches bfloat16 or float32 (several per row: extraction's gradient
    comes out groups first, and is copied into a pooled buffer in the
    patches' layout)."""
    import torch

    rng = np.random.default_rng(seed)
    batch, groups = offsets.shape[:2]
    patches = torch.tensor(rng.normal(size=(batch, 8, 8, groups)), dtype=torch.bfloat16)
    weights = torch.tensor(rng.normal(size=shape), dtype=torch.bfloat16).float()
    gradients = {}
    for dtype in (torch.bfloat16, torch.float32):
        values = patches.to(dtype).detach().requires_grad_(True)
        where = torch.tensor(offsets, requires_grad=True)
        image = place(values, where, shape)
        assert image.dtype == dtype
        (image[0].float() * weights).sum().backward()
        assert values.grad.dtype == dtype and where.grad.dtype == torch.float32
        gradients[dtype] = (values.grad.float().numpy(), where.grad.numpy())
    return gradients[torch.bfloat16], gradients[torch.float32]


@torch_only
def test_bfloat16_patches_backward_pass_of_place_patches():
    """Placement's gradient with respect to bfloat16 patches (extraction
    of the upstream, here the weights, exact in bfloat16) is finite and is
    the float32 gradient within bfloat16's rounding; the offsets' gradient
    (float32 offsets, from the same values) likewise."""
    offsets = np.random.default_rng(3).uniform(2, 26, (16, 4, 2)).astype("float32")
    got, expected = _bfloat16_and_float32_gradients(
        ptycho_layers.place_patches, offsets, (30, 33), seed=3
    )
    for got_part, expected_part in zip(got, expected):
        assert np.isfinite(got_part).all()
        assert np.abs(expected_part).max() > 1  # not a zero gradient
        np.testing.assert_allclose(got_part, expected_part, **BFLOAT16)


@torch_only
def test_bfloat16_patches_backward_pass_of_reassemble():
    """Likewise through `reassemble`'s average. At whole-pixel offsets the
    coverage is a count (exact in bfloat16) and the patches' gradient is
    the upstream over it, divided in bfloat16 and copied: one rounding.
    (At fractional offsets the upstream is rounded before extraction sums
    it, which cancels digits bfloat16 does not keep.)"""
    offsets = np.random.default_rng(5).integers(2, 26, (16, 4, 2)).astype("float32")
    got, expected = _bfloat16_and_float32_gradients(
        ptycho_layers.reassemble, offsets, (30, 33), seed=5
    )
    assert np.isfinite(got[0]).all() and np.isfinite(got[1]).all()
    assert np.abs(expected[0]).max() > 0.1
    np.testing.assert_allclose(got[0], expected[0], **BFLOAT16)


def test_mixed_bfloat16_fit_dense_into_placement():
    """Dense -> PatchPlacement trains under mixed_bfloat16: the patches
    (and their gradient) are bfloat16, the image they make bfloat16, and
    the loss falls."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    height, width, n, groups, features, batch = 24, 24, 8, 2, 6, 32
    rng = np.random.default_rng(0)
    inputs = keras.Input((features,))
    offsets_in = keras.Input((groups, 2))
    patches = keras.layers.Reshape((n, n, groups))(keras.layers.Dense(n * n * groups)(inputs))
    layer = PatchPlacement((height, width))
    model = keras.Model([inputs, offsets_in], layer((patches, offsets_in)))
    assert layer.compute_dtype == "bfloat16"
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = rng.normal(size=(batch, features)).astype("float32")
    offsets = rng.uniform(4, 20, (batch, groups, 2)).astype("float32")
    target = _numpy(model([x, offsets])) + rng.normal(size=(batch, height, width)).astype("float32")
    image = model([x, offsets])
    assert keras.backend.standardize_dtype(image.dtype) == "bfloat16"
    history = model.fit([x, offsets], target, batch_size=16, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses


# ---------------------------------------------------------------------------
# B. torch.compile(fullgraph=True) past the ONNX check.


def _compiled_equals_eager(function, *inputs):
    import torch

    torch._dynamo.reset()
    eager = function(*inputs)
    compiled = torch.compile(function, fullgraph=True)(*inputs)
    assert compiled.dtype == eager.dtype
    np.testing.assert_array_equal(compiled.numpy(), eager.numpy())


@torch_only
@pytest.mark.parametrize("dtype", ["complex64", "float32"])
def test_torch_compile_fullgraph_held_object(dtype):
    """A complex held object is checked against ONNX export on every call;
    the check must not walk the stack (`sys._getframe`, which Dynamo
    cannot trace) in a compiled trace."""
    import torch

    layer = PatchExtraction(6, image=asymmetric_object(20, 22, dtype))
    offsets = torch.tensor(np.random.default_rng(1).uniform(0, 20, (3, 2, 2)).astype("float32"))
    _compiled_equals_eager(lambda o: layer(o), offsets)


# A list or a dict: a tuple of inputs stops Dynamo in Keras's own
# `tree.flatten` (torch's pytree compares the tuple by identity), before
# the layer runs.
@torch_only
@pytest.mark.parametrize("form", ["list", "dict"])
@pytest.mark.parametrize("dtype", ["complex64", "float32"])
def test_torch_compile_fullgraph_two_inputs(dtype, form):
    import torch

    layer = PatchExtraction(6)
    images = torch.tensor(
        np.stack([asymmetric_object(20, 22, dtype, seed=s) for s in range(3)])
    )
    offsets = torch.tensor(np.random.default_rng(2).uniform(0, 20, (3, 2, 2)).astype("float32"))
    if form == "list":
        function = lambda im, o: layer([im, o])  # noqa: E731
    else:
        function = lambda im, o: layer({"images": im, "offsets": o})  # noqa: E731
    _compiled_equals_eager(function, images, offsets)


@torch_only
def test_compiling_is_true_only_in_a_compiled_trace():
    """`compiling()` is what lets the ONNX check skip its stack walk: True
    while Dynamo traces for `torch.compile`, False eagerly."""
    import torch

    backend = backends.current()
    assert backend.compiling() is False
    seen = []

    def probe(x):
        seen.append(backend.compiling())
        return x + 1

    torch._dynamo.reset()
    torch.compile(probe, fullgraph=True)(torch.zeros(2))
    assert seen == [True]


@pytest.mark.skipif(BACKEND == "torch", reason="TensorFlow and JAX compilers see the stack")
def test_compiling_is_false_on_xla_backends():
    assert backends.current().compiling() is False


# ---------------------------------------------------------------------------
# C. What the process keeps, and what each thread sees.


@torch_only
def test_release_memory_empties_the_pool():
    import torch

    from ptycho_layers.torch import buffers as torch_buffers

    patches = torch.ones((8, 6, 6, 2))
    offsets = torch.tensor(np.random.default_rng(4).uniform(0, 20, (8, 2, 2)).astype("float32"))
    image = place_patches(patches, offsets, (24, 24), per_row=True)
    assert tuple(image.shape) == (8, 24, 24)
    del image
    gc.collect()
    before = torch_buffers.pooled_bytes()
    assert before > 0
    assert operators.placement.cache_info().currsize > 0
    assert ptycho_layers.release_memory() == before
    assert torch_buffers.pooled_bytes() == 0
    assert operators.placement.cache_info().currsize == 0
    assert operators.extraction.cache_info().currsize == 0
    assert ptycho_layers.release_memory() == 0


def test_release_memory_clears_the_operator_caches():
    operators.extraction(5, "bilinear", backends.current())
    operators.placement(7, 9, False, "bilinear", backends.current())
    freed = ptycho_layers.release_memory()
    assert isinstance(freed, int) and freed >= 0
    if BACKEND != "torch":
        assert freed == 0
    assert operators.extraction.cache_info().currsize == 0
    assert operators.placement.cache_info().currsize == 0


@pytest.mark.parametrize("cache", ["extraction", "placement"])
def test_operator_caches_are_bounded(cache):
    """One entry per scan shape (`reassemble_position` makes a placement
    per object shape): more shapes than the bound keep it at the bound.
    The factories only wrap the functions; nothing is compiled here."""
    factory = getattr(operators, cache)
    factory.cache_clear()
    maxsize = factory.cache_info().maxsize
    assert maxsize is not None and 0 < maxsize <= 256
    try:
        for size in range(1, maxsize + 10):
            if cache == "extraction":
                factory(size, "bilinear", backends.current())
            else:
                factory(size, size + 1, False, "bilinear", backends.current())
            assert factory.cache_info().currsize <= maxsize
        assert factory.cache_info().currsize == maxsize
    finally:
        factory.cache_clear()


def _while_inside(context, check):
    """Run `check()` in a second thread while this thread is inside
    `context`; return what it returned there."""
    inside, done = threading.Event(), threading.Event()
    result = {}

    def other():
        inside.wait(timeout=30)
        try:
            result["value"] = check()
        except BaseException as error:  # noqa: BLE001, re-raised below
            result["error"] = error
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with context:
        inside.set()
        assert done.wait(timeout=30)
        result["inside"] = True
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_for_onnx_is_per_thread():
    assert not onnx_export.exporting()
    seen = _while_inside(onnx_export.for_onnx(), onnx_export.exporting)
    assert seen is False
    with onnx_export.for_onnx():
        assert onnx_export.exporting()
        with onnx_export.for_onnx():
            assert onnx_export.exporting()
        assert onnx_export.exporting()
    assert not onnx_export.exporting()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the portable ONNX trace is TensorFlow's")
def test_portable_trace_is_per_thread():
    """While one thread traces the kernels for ONNX (run gather and
    scatter off, the batch in one piece, no fusion boundary), another
    computing at the same time keeps XLA's runs; and the first sees the
    portable primitives."""
    from ptycho_layers.backends import tensorflow as tensorflow_backend

    usual = backends.current()
    fast = (usual.take_runs, usual.add_runs, usual.SPLITS_BATCH)
    assert fast[0] is not None and fast[1] is not None and fast[2] is True

    def other():
        backend = backends.current()
        return backend.take_runs, backend.add_runs, backend.SPLITS_BATCH

    portable = tensorflow_backend._portable()
    assert _while_inside(portable, other) == fast
    with tensorflow_backend._portable():
        inside = backends.current()
        assert inside.take_runs is None and inside.add_runs is None
        assert inside.SPLITS_BATCH is False
        assert inside.fusion_boundary(lambda: "called", None) == "called"
        assert inside.IMPLEMENTATION == usual.IMPLEMENTATION
        assert inside.take is usual.take and inside.differentiable is usual.differentiable
    assert backends.current() is usual
    assert other() == fast
