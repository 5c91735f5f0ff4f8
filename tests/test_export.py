"""Exporting models that hold the layers: ONNX, run by ONNX Runtime and
compared with the model and the float64 oracle; TensorFlow SavedModels,
reloaded.

ONNX export is Keras's `model.export(path, format="onnx")`: tf2onnx on
TensorFlow, `torch.onnx` on PyTorch. Keras's JAX route (jax2onnx) cannot
trace the layers (see the README), so the ONNX tests skip there.
"""

import functools
import importlib.util

import keras
import numpy as np
import pytest

from conftest import BACKEND
from oracle import (
    asymmetric_object,
    oracle_nearest_patches,
    oracle_nearest_place,
    oracle_patches,
    oracle_place,
)
from ptycho_layers import PatchExtraction, PatchPlacement, backends, onnx_export

HEIGHT, WIDTH, N, GROUPS = 30, 33, 8, 4

# What ONNX export needs on this backend, installed by the `onnx` extra.
_CONVERTER = {"tensorflow": ["tf2onnx"], "torch": [], "jax": []}[BACKEND]
_MISSING = [
    m for m in ["onnx", "onnxruntime", *_CONVERTER]
    if importlib.util.find_spec(m) is None
]
needs_onnx = pytest.mark.skipif(
    BACKEND == "jax" or bool(_MISSING),
    reason=(
        "ONNX export of the layers: TensorFlow and PyTorch backends"
        if BACKEND == "jax"
        else f"needs {', '.join(_MISSING)} (pip install -e \".[onnx]\")"
    ),
)


def exercising_offsets(batch, seed=0, finite=False):
    """(batch, GROUPS, 2) float32 [x, y], batch >= 3: in the first three
    rows integer offsets, windows sticking out of each edge and corner, a
    patch wholly outside, one far outside and (unless `finite`) a
    non-finite offset; in the others, fractional offsets inside the
    object."""
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(0, [WIDTH - 1, HEIGHT - 1], (batch, GROUPS, 2))
    special = [
        [5, 7], [WIDTH - 1, HEIGHT - 1], [0, 0], [17, 3],  # integers
        [-2.25, 11.5], [WIDTH + 1.75, 4.5], [9.5, -3.25], [20.5, HEIGHT + 2.5],
        [-4.5, -4.5], [WIDTH + N + 0.5, 10.25], [-1e9, 3.5], [np.nan, 6.0],
    ]
    flat = offsets.reshape(-1, 2)
    flat[:len(special)] = special
    if finite:
        flat[len(special) - 1] = [12.75, 13.25]
    return offsets.astype("float32")


def onnx_run(path, *inputs):
    """Run the ONNX model at `path` on `inputs` (in its inputs' order) with
    ONNX Runtime's CPU provider; return its first output."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    names = [spec.name for spec in session.get_inputs()]
    assert len(names) == len(inputs)
    return session.run(None, dict(zip(names, inputs)))[0]


def predict(model, inputs):
    """The model's own output, called directly (Keras's export wants a
    model that has been called; `predict` alone does not count on JAX, and
    refuses an images batch of 1 beside more rows of offsets)."""
    return keras.ops.convert_to_numpy(model(inputs))


# The exported graph blends in a different order of operations than the
# model's XLA-compiled kernel (which may fuse multiply-adds): the same
# values to float32 rounding of patch values about 1.5, not bit for bit.
SAME = dict(rtol=0, atol=1e-6)
# Against the float64 oracle: float32 rounding of coordinates and weights,
# as everywhere in the suite.
ORACLE = dict(rtol=0, atol=1e-5)


def assert_patches(got, expected, oracle):
    """Equal NaN patches (non-finite offsets), close values elsewhere."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, **SAME, equal_nan=True)
    np.testing.assert_allclose(got, oracle, **ORACLE, equal_nan=True)


# ---------------------------------------------------------------------------
# 1. ONNX, real objects.


@needs_onnx
def test_held_object_onnx_equals_model_at_any_batch(tmp_path):
    image = asymmetric_object(HEIGHT, WIDTH, "float32")
    model = keras.Sequential(
        [keras.Input((GROUPS, 2)), PatchExtraction(N, image=image)]
    )
    offsets = exercising_offsets(6)
    expected = predict(model, offsets)
    fast_path = backends.current().take_runs
    model.export(str(tmp_path / "held.onnx"), format="onnx", verbose=False)
    # The export left the backend as it was: the model still runs its
    # usual kernel (XLA's run gather on TensorFlow), to the same numbers.
    assert backends.current().take_runs is fast_path
    np.testing.assert_array_equal(predict(model, offsets), expected)

    got = onnx_run(tmp_path / "held.onnx", offsets)
    assert_patches(got, expected, oracle_patches(image[None], offsets, N).real)
    # The batch stays free: another batch size runs through the same file
    # (against the oracle alone: the model would compile for a new shape).
    more = exercising_offsets(9, seed=1)
    got = onnx_run(tmp_path / "held.onnx", more)
    expected = oracle_patches(image[None], more, N).real
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, **ORACLE, equal_nan=True)


@pytest.mark.slow
@needs_onnx
@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="the legacy loop exports from TensorFlow only (torch.onnx has no aten::ravel)",
)
def test_legacy_loop_onnx_equals_model(tmp_path):
    """batched=False, PtychoPINN's per-patch loop, exports as an ONNX loop."""
    image = asymmetric_object(HEIGHT, WIDTH, "float32")
    model = keras.Sequential(
        [keras.Input((GROUPS, 2)), PatchExtraction(N, image=image, batched=False)]
    )
    offsets = exercising_offsets(6, seed=6)
    expected = predict(model, offsets)
    model.export(str(tmp_path / "loop.onnx"), format="onnx", verbose=False)
    got = onnx_run(tmp_path / "loop.onnx", offsets)
    assert_patches(got, expected, oracle_patches(image[None], offsets, N).real)


@pytest.mark.slow
@needs_onnx
@pytest.mark.parametrize("shared", [False, True], ids=["per_row", "shared"])
def test_two_input_onnx_equals_model(tmp_path, shared):
    images_in = keras.Input((HEIGHT, WIDTH), name="images")
    offsets_in = keras.Input((GROUPS, 2), name="offsets")
    model = keras.Model(
        [images_in, offsets_in], PatchExtraction(N)((images_in, offsets_in))
    )
    offsets = exercising_offsets(6, seed=2)
    count = 1 if shared else 6
    images = np.stack(
        [asymmetric_object(HEIGHT, WIDTH, "float32", seed=s) for s in range(count)]
    )
    expected = predict(model, [images, offsets])
    model.export(str(tmp_path / "two.onnx"), format="onnx", verbose=False)
    got = onnx_run(tmp_path / "two.onnx", images, offsets)
    assert_patches(got, expected, oracle_patches(images, offsets, N).real)


@pytest.mark.slow
@needs_onnx
@pytest.mark.parametrize(
    "options", [{}, {"normalize": True, "crop": 6}], ids=["sum", "average"]
)
def test_placement_onnx_equals_model(tmp_path, options):
    patches_in = keras.Input((N, N, GROUPS), name="patches")
    offsets_in = keras.Input((GROUPS, 2), name="offsets")
    layer = PatchPlacement((HEIGHT, WIDTH), **options)
    model = keras.Model([patches_in, offsets_in], layer((patches_in, offsets_in)))
    rng = np.random.default_rng(3)
    patches = rng.normal(size=(6, N, N, GROUPS)).astype("float32")
    # Finite on TensorFlow: tf2onnx writes a select as multiply-adds, so a
    # non-finite offset's 0 * NaN spreads NaN into the object (README).
    offsets = exercising_offsets(6, seed=3, finite=BACKEND == "tensorflow")
    expected = predict(model, [patches, offsets])
    signature = None
    if BACKEND == "torch" and options:
        # With an unknown batch Keras exports by torch.onnx's TorchScript
        # tracer, which fixes the averaging's batch at the traced one's
        # (README); a fixed batch goes through torch.onnx's dynamo exporter.
        signature = [[
            keras.InputSpec(shape=(6, N, N, GROUPS), dtype="float32", name="patches"),
            keras.InputSpec(shape=(6, GROUPS, 2), dtype="float32", name="offsets"),
        ]]
    model.export(
        str(tmp_path / "place.onnx"), format="onnx", verbose=False,
        input_signature=signature,
    )
    got = onnx_run(tmp_path / "place.onnx", patches, offsets)
    assert got.shape == (6, HEIGHT, WIDTH) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, **SAME)
    if not options:
        # Sums of overlapping float32 values about 1 (a scatter that kept
        # one of the values added at a pixel would be off by about 1).
        oracle = oracle_place(patches, offsets, (HEIGHT, WIDTH), per_row=True)
        np.testing.assert_allclose(got, oracle.real, rtol=0, atol=1e-5)
    if signature is None:
        # Another batch size through the same file.
        another = onnx_run(tmp_path / "place.onnx", patches[3:], offsets[3:])
        np.testing.assert_allclose(another, expected[3:], **SAME)


# ---------------------------------------------------------------------------
# 2. ONNX, complex objects: refused, and the real-parts workaround.


def _complex_model(argument):
    """A model whose `argument` is complex64, and its input signature (so
    that it can be exported without being called first)."""
    offsets_in = keras.Input((GROUPS, 2), name="offsets")
    if argument == "image":
        image = asymmetric_object(HEIGHT, WIDTH, "complex64")
        model = keras.Sequential([offsets_in, PatchExtraction(N, image=image)])
        return model, [keras.InputSpec(shape=(None, GROUPS, 2), dtype="float32")]
    shape = (HEIGHT, WIDTH) if argument == "images" else (N, N, GROUPS)
    first = keras.Input(shape, dtype="complex64", name=argument)
    if argument == "images":
        layer = PatchExtraction(N)
    else:
        layer = PatchPlacement((HEIGHT, WIDTH))
    model = keras.Model([first, offsets_in], layer((first, offsets_in)))
    specs = [
        keras.InputSpec(shape=(None, *shape), dtype="complex64", name=argument),
        keras.InputSpec(shape=(None, GROUPS, 2), dtype="float32", name="offsets"),
    ]
    return model, [specs]


@needs_onnx
@pytest.mark.parametrize("argument", ["image", "images", "patches"])
def test_complex_onnx_export_raises_value_error(tmp_path, argument):
    model, signature = _complex_model(argument)
    with pytest.raises(ValueError, match=(
        rf"Cannot export {argument} of dtype complex64 to ONNX: ONNX Runtime "
        r"has no complex arithmetic(.|\n)*real part(.|\n)*"
        rf"Received: {argument} of dtype complex64"
    )):
        model.export(
            str(tmp_path / "complex.onnx"), format="onnx", verbose=False,
            input_signature=signature,
        )
    assert not (tmp_path / "complex.onnx").exists()


@needs_onnx
def test_nearest_onnx_equals_the_oracle(tmp_path):
    """The nearest kernel exports: extraction from a held object and
    placement of its patches, run by ONNX Runtime, give the oracle's
    numbers, edges and non-finite offsets included."""
    image = asymmetric_object(HEIGHT, WIDTH, "float32")
    offsets = exercising_offsets(4)
    extraction = keras.Sequential(
        [keras.Input((GROUPS, 2)), PatchExtraction(N, image=image, interpolation="nearest")]
    )
    expected = predict(extraction, offsets)
    extraction.export(str(tmp_path / "extract.onnx"), format="onnx", verbose=False)
    got = onnx_run(tmp_path / "extract.onnx", offsets)
    assert_patches(got, expected, oracle_nearest_patches(image[None], offsets, N, real=True))

    patches_in, offsets_in = keras.Input((N, N, GROUPS)), keras.Input((GROUPS, 2))
    placed = PatchPlacement((HEIGHT, WIDTH), interpolation="nearest")((patches_in, offsets_in))
    placement = keras.Model([patches_in, offsets_in], placed)
    patches = np.nan_to_num(got)  # the non-finite offsets' NaN patches add nothing anyway
    expected = predict(placement, [patches, offsets])
    placement.export(str(tmp_path / "place.onnx"), format="onnx", verbose=False)
    got = onnx_run(tmp_path / "place.onnx", patches, offsets)
    oracle = oracle_nearest_place(patches, offsets, (HEIGHT, WIDTH), per_row=True, real=True)
    np.testing.assert_allclose(got, expected, **SAME)
    np.testing.assert_allclose(got, oracle, **ORACLE)


@needs_onnx
@pytest.mark.parametrize("layer", ["extraction", "placement"])
def test_fourier_onnx_export_raises_value_error(tmp_path, layer):
    """The Fourier kernel's FFTs are of complex values: refused when the
    export traces the layer (tf2onnx wrote a model ONNX Runtime would not
    load; torch.onnx failed on fftfreq), with no file written. The other
    kernels export (the nearest test above, bilinear throughout)."""
    image = asymmetric_object(HEIGHT, WIDTH, "float32")
    if layer == "extraction":
        model = keras.Sequential(
            [keras.Input((GROUPS, 2)), PatchExtraction(N, image=image, interpolation="fourier")]
        )
    else:
        patches_in = keras.Input((N, N, GROUPS))
        offsets_in = keras.Input((GROUPS, 2))
        placed = PatchPlacement((HEIGHT, WIDTH), interpolation="fourier")((patches_in, offsets_in))
        model = keras.Model([patches_in, offsets_in], placed)
    offsets = exercising_offsets(3)
    inputs = offsets if layer == "extraction" else [np.ones((3, N, N, GROUPS), "float32"), offsets]
    predict(model, inputs)  # Keras exports only a model that has been called
    with pytest.raises(ValueError, match=(
        r"Cannot export interpolation='fourier' to ONNX(.|\n)*"
        r"Received: interpolation='fourier'"
    )):
        model.export(str(tmp_path / "fourier.onnx"), format="onnx", verbose=False)
    assert not (tmp_path / "fourier.onnx").exists()


def test_complex_check_only_while_exporting():
    """Outside an export the same check passes complex values through."""
    onnx_export.check_real("complex64", "image")
    onnx_export.check_real("float32", "image")
    with onnx_export.for_onnx():
        assert onnx_export.exporting()
        onnx_export.check_real("float32", "image")
        with pytest.raises(ValueError, match="Received: image of dtype complex128"):
            onnx_export.check_real("complex128", "image")
        onnx_export.check_kernel("nearest")
        with pytest.raises(ValueError, match="Received: interpolation='fourier'"):
            onnx_export.check_kernel("fourier")
    onnx_export.check_kernel("fourier")
    assert not onnx_export.exporting()


@pytest.mark.slow
@needs_onnx
def test_complex_object_as_two_real_onnx_models(tmp_path):
    """What the error advises: extraction is linear in the object, so the
    real and imaginary parts' models give the complex patches."""
    image = asymmetric_object(HEIGHT, WIDTH, "complex64")
    offsets = exercising_offsets(6, seed=4)
    complex_model = keras.Sequential(
        [keras.Input((GROUPS, 2)), PatchExtraction(N, image=image)]
    )
    expected = predict(complex_model, offsets)
    parts = []
    for name, part in (("real", image.real), ("imag", image.imag)):
        model = keras.Sequential(
            [keras.Input((GROUPS, 2)), PatchExtraction(N, image=part)]
        )
        predict(model, offsets)
        model.export(str(tmp_path / f"{name}.onnx"), format="onnx", verbose=False)
        parts.append(onnx_run(tmp_path / f"{name}.onnx", offsets))
    got = (parts[0] + 1j * parts[1]).astype("complex64")
    assert_patches(got, expected, oracle_patches(image[None], offsets, N))


@pytest.mark.slow
@needs_onnx
@pytest.mark.parametrize("argument", ["images", "patches"])
def test_complex_inputs_as_real_parts_through_one_onnx_model(tmp_path, argument):
    """Likewise for complex inputs: one real model, run on the real and the
    imaginary parts, gives the complex model's output."""
    rng = np.random.default_rng(5)
    offsets = exercising_offsets(6, seed=5, finite=True)
    if argument == "images":
        values = np.stack(
            [asymmetric_object(HEIGHT, WIDTH, "complex64", seed=s) for s in range(6)]
        )
        make_layer = functools.partial(PatchExtraction, N)
        oracle = oracle_patches(values, offsets, N)
    else:
        shape = (6, N, N, GROUPS)
        values = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype("complex64")
        make_layer = functools.partial(PatchPlacement, (HEIGHT, WIDTH))
        oracle = oracle_place(values, offsets, (HEIGHT, WIDTH), per_row=True)
    outputs = {}
    for dtype in ("complex64", "float32"):
        first = keras.Input(values.shape[1:], dtype=dtype, name=argument)
        offsets_in = keras.Input((GROUPS, 2), name="offsets")
        model = keras.Model([first, offsets_in], make_layer()((first, offsets_in)))
        if dtype == "complex64":
            outputs[dtype] = predict(model, [values, offsets])
            continue
        predict(model, [values.real, offsets])
        model.export(str(tmp_path / "real.onnx"), format="onnx", verbose=False)
        parts = [
            onnx_run(tmp_path / "real.onnx", part.astype("float32"), offsets)
            for part in (values.real, values.imag)
        ]
        outputs[dtype] = (parts[0] + 1j * parts[1]).astype("complex64")
    np.testing.assert_allclose(outputs["float32"], outputs["complex64"], **SAME)
    np.testing.assert_allclose(outputs["float32"], oracle, **ORACLE)


# ---------------------------------------------------------------------------
# 3. What the ONNX trace holds (TensorFlow).


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow graphs")
def test_onnx_trace_holds_no_xla_ops():
    """Traced for ONNX, the kernel is plain TensorFlow operations: no
    XLA-compiled call, no XLA gather, no conditional, no loop; outside,
    the XLA kernel."""
    import tensorflow as tf

    image = asymmetric_object(HEIGHT, WIDTH, "float32")
    layer = PatchExtraction(N, image=image)
    spec = tf.TensorSpec((None, GROUPS, 2), tf.float32)

    def op_types():
        graph = tf.function(layer).get_concrete_function(spec).graph
        return {node.op for node in graph.as_graph_def().node}

    with onnx_export.for_onnx():
        portable = op_types()
    usual = op_types()
    xla = {"PartitionedCall", "StatefulPartitionedCall", "XlaGather", "If",
           "StatelessIf", "While", "StatelessWhile"}
    assert not portable & xla, sorted(portable)
    assert "GatherV2" in portable
    assert usual & xla, sorted(usual)


# ---------------------------------------------------------------------------
# 4. TensorFlow SavedModel (TensorFlow, and JAX through jax2tf).


# On TensorFlow, tests/test_deployment.py serves a SavedModel in the default
# run; this one is JAX's, and TensorFlow's twin for `pytest -m slow`.
@(pytest.mark.slow if BACKEND == "tensorflow" else lambda test: test)
@pytest.mark.skipif(
    BACKEND == "torch", reason="tf_saved_model export: TensorFlow and JAX backends"
)
@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_tf_saved_model_export_reloads_with_equal_output(tmp_path, dtype):
    import tensorflow as tf

    image = asymmetric_object(HEIGHT, WIDTH, dtype)
    model = keras.Sequential(
        [keras.Input((GROUPS, 2)), PatchExtraction(N, image=image)]
    )
    predict(model, exercising_offsets(3))
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    # Keep the loaded object alive: it owns the variables `serve` reads.
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    offsets = exercising_offsets(7, seed=5)
    served = loaded.serve(tf.constant(offsets)).numpy()
    expected = predict(model, offsets)
    assert served.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(served, expected)
    np.testing.assert_allclose(
        served, oracle_patches(image[None], offsets, N), **ORACLE, equal_nan=True
    )
