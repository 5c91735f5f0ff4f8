"""Deploying the layer: saving and loading, SavedModel export, XLA,
distribution, gradients, training the held object, mixed precision.

Anything that must not see the state of the test process (a saved model
loaded back, TensorFlow's logical devices) runs in a fresh interpreter.
"""

import json
import zipfile

import keras
import numpy as np
import pytest
from keras import ops

from _fresh_process import run_python
from conftest import BACKEND, tensorflow_only
from oracle import asymmetric_object, oracle_patches
from ptycho_layers import PatchExtraction, extract_patches

numpy = ops.convert_to_numpy


def fractional_offsets(batch, groups, height, width, seed=0):
    """[x, y] offsets inside the object, each a multiple of 1/64 with a
    fraction in [0.25, 0.75]: exact in float32, and at least 1/4 pixel from
    the integers where bilinear interpolation has a kink."""
    rng = np.random.default_rng(seed)
    whole = rng.integers(0, [width - 1, height - 1], (batch, groups, 2))
    fraction = rng.integers(16, 49, (batch, groups, 2)) / 64
    return (whole + fraction).astype("float32")


# ---------------------------------------------------------------------------
# 1. The .keras format, loaded in a fresh process.


def test_keras_file_round_trip_in_fresh_process(tmp_path):
    image = asymmetric_object(80, 90, "complex64")
    offsets = fractional_offsets(3, 2, 80, 90, seed=1)
    images = np.stack([asymmetric_object(80, 90, seed=s) for s in (2, 3, 4)])

    expected = {}
    for batched in (True, False):
        model = keras.Sequential()
        model.add(keras.Input((2, 2)))
        model.add(PatchExtraction(64, batched=batched, image=image))
        model.save(tmp_path / f"held_{batched}.keras")
        expected[f"held_{batched}"] = model.predict(offsets, verbose=0)

    images_in = keras.Input((80, 90), dtype="complex64", name="images")
    offsets_in = keras.Input((2, 2), name="offsets")
    patches = PatchExtraction(64, batched=False)((images_in, offsets_in))
    functional = keras.Model([images_in, offsets_in], patches)
    functional.save(tmp_path / "two_inputs.keras")
    expected["two_inputs"] = functional.predict([images, offsets], verbose=0)
    np.savez(tmp_path / "inputs.npz", offsets=offsets, images=images)

    run_python(
        """
        import json
        import keras
        import numpy as np

        # Keras finds registered classes only once their module is
        # imported; nothing else from the building process is here.
        import ptycho_layers  # noqa: F401

        inputs = np.load("inputs.npz")
        results, batched = {}, {}
        for name in ("held_True", "held_False"):
            model = keras.models.load_model(name + ".keras")
            layer = model.layers[-1]
            results[name] = model.predict(inputs["offsets"], verbose=0)
            results[name + "_image"] = keras.ops.convert_to_numpy(layer.image)
            batched[name] = layer.batched
        model = keras.models.load_model("two_inputs.keras")
        results["two_inputs"] = model.predict(
            [inputs["images"], inputs["offsets"]], verbose=0
        )
        batched["two_inputs"] = model.layers[-1].batched
        np.savez("loaded.npz", **results)
        with open("batched.json", "w") as f:
            json.dump(batched, f)
        """,
        tmp_path,
    )
    loaded = np.load(tmp_path / "loaded.npz")
    batched = json.loads((tmp_path / "batched.json").read_text())
    assert batched == {"held_True": True, "held_False": False, "two_inputs": False}
    for name, patches in expected.items():
        assert loaded[name].dtype == np.complex64
        np.testing.assert_array_equal(loaded[name], patches)
    for name in ("held_True", "held_False"):
        np.testing.assert_array_equal(loaded[name + "_image"], image)
    # And the patches are the right ones, not merely reproducible.
    np.testing.assert_allclose(
        expected["held_True"], oracle_patches(image[None], offsets, 64), atol=1e-5
    )


def _edited_keras_file(tmp_path, **changes):
    """Save a model holding the layer, then edit the layer's config inside
    the .keras zip (config.json)."""
    model = keras.Sequential(
        [keras.Input((1, 2)), PatchExtraction(4, image=np.ones((8, 8), "float32"))]
    )
    good = tmp_path / "good.keras"
    model.save(good)
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][-1]["config"].update(changes)
                data = json.dumps(config).encode()
            target.writestr(item, data)
    return bad


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"patch_size": -1}, r"`patch_size`.*Received: patch_size=-1"),
        ({"patch_size": "64"}, r"`patch_size`.*Received: patch_size='64'"),
        ({"batched": "false"}, r"`batched`.*Received: batched='false'"),
        ({"batched": 0}, r"`batched`.*Received: batched=0"),
    ],
)
def test_bad_config_raises_value_error(tmp_path, changes, message):
    config = PatchExtraction(4, batched=False).get_config()
    with pytest.raises(ValueError, match=message):
        PatchExtraction.from_config({**config, **changes})
    with pytest.raises(ValueError, match=message):
        keras.models.load_model(_edited_keras_file(tmp_path, **changes))


# ---------------------------------------------------------------------------
# 2. SavedModel export (TensorFlow).


@tensorflow_only
def test_saved_model_export_serves_any_batch(tmp_path):
    image = asymmetric_object(30, 33, "complex64")
    model = keras.Sequential([keras.Input((4, 2)), PatchExtraction(8, image=image)])
    model.predict(fractional_offsets(2, 4, 30, 33), verbose=0)  # built at B=2
    model.export(str(tmp_path / "exported"), verbose=False)
    offsets = fractional_offsets(5, 4, 30, 33, seed=7)
    np.save(tmp_path / "offsets.npy", offsets)

    run_python(
        """
        import json

        import keras
        import numpy as np
        import tensorflow as tf

        # No import of ptycho_layers: the SavedModel is self-contained.
        offsets = np.load("offsets.npy")
        # Keep the loaded object alive: it owns the variables `serve` reads.
        loaded = tf.saved_model.load("exported")
        served = loaded.serve(offsets).numpy()
        reloaded = keras.layers.TFSMLayer("exported", call_endpoint="serve")
        as_layer = keras.ops.convert_to_numpy(reloaded(offsets))
        np.savez("served.npz", served=served, as_layer=as_layer)

        # The op types of the stored graph(s), loops' bodies included.
        types = []
        for concrete in loaded.serve.concrete_functions:
            graph_def = concrete.graph.as_graph_def()
            types += [node.op for node in graph_def.node]
            for function in graph_def.library.function:
                types += [node.op for node in function.node_def]
        with open("op_types.json", "w") as f:
            json.dump(types, f)
        """,
        tmp_path,
    )
    served = np.load(tmp_path / "served.npz")
    expected = model.predict(offsets, verbose=0)
    assert served["served"].shape == (5, 8, 8, 4)
    np.testing.assert_array_equal(served["served"], expected)
    np.testing.assert_array_equal(served["as_layer"], expected)
    np.testing.assert_allclose(expected, oracle_patches(image[None], offsets, 8), atol=1e-5)
    # What was exported is the vectorized path: no loop, whatever the
    # batch. The forward pass's gathers (`forward_gathers`, batch unknown);
    # the (saved) offsets gradient's window gather in both branches of a
    # fusion-boundary conditional whose branches are the same function;
    # the (saved) object gradient gathers once, the rows it adds into the
    # object's first and last rows.
    types = json.loads((tmp_path / "op_types.json").read_text())
    forward = forward_gathers((1, 30, 33), None, 4, 8)
    expected = forward + 2 * GATHER_OPS + (1 if _xla_windows() else 0)
    assert sum(types.count(g) for g in GATHERS) == expected, sorted(set(types))
    assert not {"While", "StatelessWhile"} & set(types)


# The vectorized path's gathers: XLA's windowed gather where TensorFlow has
# it, else the element gather. XLA's window gather into a buffer is three
# of them (the object's rows; its first and last row; the rows of the
# windows that need those), the element gather one.
GATHERS = ("XlaGather", "GatherV2")


def _xla_windows():
    if BACKEND != "tensorflow":
        return False
    from ptycho_layers import backends

    return backends.current().take_runs is not None


GATHER_OPS = 3 if _xla_windows() else 1


def forward_gathers(image_shape, batch, groups, patch_size):
    """The forward pass's gathers in a graph, by how it reads its windows
    (`xla.windows.reader`): from the padded table, one run gather after the
    fusion boundary; from the object itself, fused, that and, in both
    branches of the boundary, the object's first and last rows and the
    moved rows' runs from them (five), all of it twice, in both branches
    of the boundary that hands the patches out; gathered, the window
    gather in both branches."""
    from ptycho_layers.xla import bilinear, windows

    how = windows.reader(
        np.zeros(image_shape, "complex64"), batch, groups, patch_size, bilinear
    )
    return {"padded": 1, "fused": 2 * 5, "gathered": 2 * GATHER_OPS}[how]


def _graph_op_types(concrete):
    """Op types of a concrete function's graph and of every function it
    calls (a while loop's body lives in the function library)."""
    graph_def = concrete.graph.as_graph_def()
    types = [node.op for node in graph_def.node]
    for function in graph_def.library.function:
        types += [node.op for node in function.node_def]
    return types


@tensorflow_only
@pytest.mark.parametrize("batched", [True, False])
def test_exported_graph_is_vectorized(batched):
    """The vectorized path is one gather whatever the number of patches;
    no loop is traced. The legacy path shows that a loop would be seen."""
    import tensorflow as tf

    image = asymmetric_object(30, 33, "complex64")
    model = keras.Sequential([keras.Input((None, 2)), PatchExtraction(8, image=image, batched=batched)])
    serve = tf.function(lambda offsets: model(offsets))
    specs = [(None, None, 2), (1, 1, 2), (16, 9, 2)]
    for shape in specs:
        types = _graph_op_types(serve.get_concrete_function(tf.TensorSpec(shape, tf.float32)))
        loops = [t for t in types if t in ("While", "StatelessWhile")]
        if batched:
            # The layer's kernel is traced to serve any batch (its shapes
            # unknown), whatever the spec.
            expected = forward_gathers((1, 30, 33), None, None, 8)
            assert sum(types.count(g) for g in GATHERS) == expected, (shape, types)
            assert loops == [], shape
        else:
            assert len(loops) == 1, shape


# ---------------------------------------------------------------------------
# 3. XLA.

@pytest.mark.skipif(BACKEND == "torch", reason="XLA: TensorFlow and JAX only")
@pytest.mark.parametrize("batched", [True, False])
def test_xla_compiled_equals_eager(batched):
    image = asymmetric_object(30, 33, "complex64")
    offsets = fractional_offsets(3, 4, 30, 33, seed=2)
    images = np.stack([asymmetric_object(30, 33, seed=s) for s in range(3)])
    held = PatchExtraction(8, batched=batched, image=image)
    two = PatchExtraction(8, batched=batched)
    eager_held = numpy(held(offsets))
    eager_two = numpy(two((images, offsets)))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        compiled_held = tf.function(held, jit_compile=True)(offsets)
        compiled_two = tf.function(lambda i, o: two((i, o)), jit_compile=True)(images, offsets)
    else:
        import jax

        compiled_held = jax.jit(held)(offsets)
        compiled_two = jax.jit(lambda i, o: two((i, o)))(images, offsets)
    np.testing.assert_array_equal(numpy(compiled_held), eager_held)
    np.testing.assert_array_equal(numpy(compiled_two), eager_two)

    model = keras.Sequential([keras.Input((4, 2)), PatchExtraction(8, batched=batched, image=image)])
    model.compile(jit_compile=True)
    assert model.jit_compile
    np.testing.assert_array_equal(model.predict(offsets, verbose=0, batch_size=2), eager_held)


# 4. tf.data: tests/test_layer_calls.py (every backend).


# ---------------------------------------------------------------------------
# 5. Distribution (TensorFlow; logical devices need a fresh process).


@pytest.mark.slow  # a fresh TensorFlow with two logical devices: ~16 s
@tensorflow_only
def test_mirrored_strategy_matches_one_device(tmp_path):
    run_python(
        """
        import tensorflow as tf

        # Must precede anything that initialises TensorFlow's devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        import keras
        import numpy as np
        from oracle import asymmetric_object, oracle_patches
        from ptycho_layers import PatchExtraction

        start = asymmetric_object(20, 22, "float32", seed=0)
        truth = asymmetric_object(20, 22, "float32", seed=1)
        rng = np.random.default_rng(0)
        offsets = rng.uniform(2, 18, (8, 3, 2)).astype("float32")
        target = oracle_patches(truth[None], offsets, 6).real.astype("float32")

        def build():
            model = keras.Sequential([
                keras.Input((3, 2)),
                PatchExtraction(6, image=start, trainable_image=True),
                # A trainable layer after the patches, mixing the group.
                keras.layers.Dense(
                    3, kernel_initializer=keras.initializers.Constant(
                        np.eye(3) + 0.1)),
            ])
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
            return model

        def run(model):
            before = model.predict(offsets, batch_size=8, verbose=0)
            model.fit(offsets, target, batch_size=8, epochs=1, shuffle=False,
                      verbose=0)
            weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
            return before, weights

        one = run(build())
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            mirrored_model = build()
        assert isinstance(mirrored_model.layers[0].image.value,
                          tf.distribute.DistributedValues)
        two = run(mirrored_model)
        np.savez("results.npz", pred_one=one[0], pred_two=two[0],
                 start=start, **{f"one_{i}": w for i, w in enumerate(one[1])},
                 **{f"two_{i}": w for i, w in enumerate(two[1])})
        """,
        tmp_path,
    )
    results = np.load(tmp_path / "results.npz")
    np.testing.assert_array_equal(results["pred_two"], results["pred_one"])
    for i in range(3):  # image, Dense kernel, Dense bias
        one, two = results[f"one_{i}"], results[f"two_{i}"]
        # Two replicas sum their halves of the gradient: float32 rounding.
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    # The step moved the object, so the comparison above means something.
    assert np.abs(results["one_0"] - results["start"]).max() > 1e-3


# ---------------------------------------------------------------------------
# 6. Gradients against central finite differences, in float64.


def value_and_grad(fn, *args):
    """Value of a scalar `fn(*args)` and its gradient w.r.t. every argument.

    Args:
        fn: function of backend tensors returning a scalar.
        *args: float64 numpy arrays.

    Returns:
        (value, grads): a float and a list of numpy arrays (None where the
        backend found no gradient).
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        args = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        grads = tape.gradient(value, args)
        return float(value), [None if g is None else np.asarray(g) for g in grads]
    if BACKEND == "jax":
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
        return float(value), [np.asarray(g) for g in grads]
    import torch

    args = [torch.tensor(a, requires_grad=True) for a in args]
    value = fn(*args)
    value.backward()
    return float(value.detach()), [
        None if a.grad is None else a.grad.numpy() for a in args
    ]


def _compiled(fn):
    """`fn` traced once for the many evaluations of finite differences (the
    legacy loop run eagerly is slow on JAX)."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def central_differences(fn, args, index, step):
    """Central differences of scalar `fn` w.r.t. every entry of args[index].

    The losses used here are quadratic in each entry (within one bilinear
    cell for offsets), so central differences are exact up to rounding.
    """
    grad = np.zeros_like(args[index])
    for position in np.ndindex(grad.shape):
        values = []
        for sign in (1, -1):
            moved = [a.copy() for a in args]
            moved[index][position] += sign * step
            values.append(float(numpy(fn(*moved))))
        grad[position] = (values[0] - values[1]) / (2 * step)
    return grad


@pytest.mark.parametrize("form", ["two_inputs", "held_image"])
@pytest.mark.parametrize("batched", [True, False])
def test_gradients_match_finite_differences(form, batched):
    height, width, n = 7, 8, 4
    image = asymmetric_object(height, width, "complex128")
    offsets = fractional_offsets(2, 3, height, width, seed=5).astype("float64")
    weights = np.random.default_rng(6).uniform(0.5, 1.5, (2, n, n, 3))
    layer = PatchExtraction(n, batched=batched, image=image if form == "held_image" else None,
                            trainable_image=form == "held_image")
    if form == "held_image":
        layer.build((None, 3, 2))  # stateless_call needs a built layer

    def loss(real, imag, offsets):
        obj = ops.cast(real, "complex128") + ops.cast(imag, "complex128") * 1j
        if form == "held_image":
            # The held image is the layer's weight, stored as (H, W, 2) real
            # and imaginary parts because it is trainable: pass it in
            # statelessly.
            pairs = ops.stack([real, imag], axis=-1)
            patches, _ = layer.stateless_call([pairs], [], offsets)
        else:
            patches = layer((obj[None], offsets))
        energy = ops.real(patches) ** 2 + ops.imag(patches) ** 2
        return ops.sum(ops.convert_to_tensor(weights) * energy)

    args = [image.real.copy(), image.imag.copy(), offsets]
    value, grads = value_and_grad(loss, *args)
    compiled_loss = _compiled(loss)
    expected_value = np.sum(weights * np.abs(oracle_patches(image[None], offsets, n)) ** 2)
    # The legacy path computes its coordinates in float32, as PtychoPINN's
    # transform did; the vectorized one keeps float64 for float64 objects.
    value_tol = 1e-10 if batched else 1e-4
    np.testing.assert_allclose(value, expected_value, rtol=value_tol)
    for index, name in enumerate(["real", "imag"]):
        assert grads[index] is not None, name
        fd = central_differences(compiled_loss, args, index, step=0.5)
        assert np.abs(fd).max() > 1e-2  # the gradient is not trivially 0
        np.testing.assert_allclose(grads[index], fd, rtol=value_tol, atol=value_tol, err_msg=name)
    assert grads[2] is not None, "no gradient w.r.t. the offsets"
    # 1/8 pixel keeps every offset inside its bilinear cell (fractions are
    # in [1/4, 3/4]); offsets and step are exact in float32.
    fd = central_differences(compiled_loss, args, 2, step=0.125)
    offset_tol = 1e-9 if batched else 1e-3  # float32 legacy path
    np.testing.assert_allclose(grads[2], fd, rtol=offset_tol, atol=offset_tol)


@tensorflow_only
def test_backward_graph_has_no_per_patch_object():
    """The gradient w.r.t. the object never builds a tensor the size of the
    object per patch: every tensor in the backward graph is O(K*N^2 + H*W).
    """
    import tensorflow as tf

    height = width = 64
    batch, groups, n = 4, 5, 8
    count = batch * groups

    @tf.function
    def object_gradient(image, offsets):
        with tf.GradientTape() as tape:
            tape.watch(image)
            patches = extract_patches(image[None], offsets, n)
            loss = tf.reduce_sum(tf.abs(patches) ** 2)
        return tape.gradient(loss, image)

    concrete = object_gradient.get_concrete_function(
        tf.TensorSpec((height, width), tf.complex64),
        tf.TensorSpec((batch, groups, 2), tf.float32),
    )
    bound = 4 * count * (n + 1) ** 2 + 2 * height * width
    assert count * height * width > 4 * bound  # the check can tell
    sizes = {}
    for op in concrete.graph.get_operations():
        for output in op.outputs:
            assert output.shape.is_fully_defined(), (op.type, op.name, output.shape)
            sizes[op.name] = output.shape.num_elements()
    largest = max(sizes, key=sizes.get)
    assert sizes[largest] <= bound, (largest, sizes[largest], bound)
    # (Its values are checked against finite differences above.)


# ---------------------------------------------------------------------------
# 7. Reconstructing a held object by gradient descent.


def _scan(size, step=2.0):
    """A dense raster of (K, 1, 2) offsets with a 1/4 pixel fraction, so
    every pixel of a size x size object is covered by many patches."""
    grid = np.arange(0, size + 1, step) + 0.25
    xx, yy = np.meshgrid(grid, grid)
    return np.stack([xx.ravel(), yy.ravel()], -1)[:, None, :].astype("float32")


class _ComplexSquaredError(keras.losses.Loss):
    """mean(|y_true - y_pred|^2) for complex patches.

    Keras converts a loss's inputs to the loss's dtype (float32 unless told
    otherwise), which silently drops the imaginary part: this loss declares
    itself complex64.
    """

    def __init__(self):
        super().__init__(name="complex_squared_error", dtype="complex64")

    def call(self, y_true, y_pred):
        diff = y_true - y_pred
        return ops.mean(ops.real(diff) ** 2 + ops.imag(diff) ** 2, axis=(1, 2, 3))




@pytest.mark.parametrize("dtype", ["float32", "complex64"])
def test_trainable_image_reconstructs_object(dtype):
    size, n, epochs = 24, 8, 60
    truth = asymmetric_object(size, size, dtype)
    offsets = _scan(size)
    target = oracle_patches(truth[None], offsets, n)
    target = target.astype(dtype) if dtype == "complex64" else target.real.astype(dtype)
    layer = PatchExtraction(n, image=np.zeros((size, size), dtype), trainable_image=True)
    model = keras.Sequential([keras.Input((1, 2)), layer])
    loss = _ComplexSquaredError() if dtype == "complex64" else "mse"
    # mse averages over K*N^2 values while each pixel sits in ~16 patches:
    # the step must be large (about 1 / the Hessian's largest eigenvalue).
    model.compile(optimizer=keras.optimizers.SGD(300.0), loss=loss)
    error_before = np.abs(numpy(layer.image) - truth).max()
    # One epoch over the scan repeated: the same full-batch steps as many
    # epochs, without the per-epoch overhead.
    model.fit(np.tile(offsets, (epochs, 1, 1)), np.tile(target, (epochs, 1, 1, 1)),
              batch_size=len(offsets), shuffle=False, epochs=1, verbose=0)
    error_after = np.abs(numpy(layer.image) - truth).max()
    assert error_after * 100 <= error_before, (error_before, error_after)


# ---------------------------------------------------------------------------
# 8. Mixed precision.


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("form", ["two_inputs", "held_image"])
def test_mixed_precision_output_dtypes(batched, form):
    keras.mixed_precision.set_global_policy("mixed_float16")
    offsets = fractional_offsets(2, 3, 16, 18, seed=9)
    for dtype, expected_dtype, atol in [
        ("float32", "float16", 2e-3),  # float16 output: ~1e-3 relative
        ("complex64", "complex64", 1e-5),
    ]:
        image = asymmetric_object(16, 18, dtype)
        if form == "held_image":
            layer = PatchExtraction(5, batched=batched, image=image)
            patches = layer(offsets)
        else:
            layer = PatchExtraction(5, batched=batched)
            patches = layer((image[None], offsets))
        assert layer.compute_dtype == "float16"
        assert keras.backend.standardize_dtype(patches.dtype) == expected_dtype
        np.testing.assert_allclose(
            numpy(patches).astype(np.complex128),
            oracle_patches(image[None], offsets, 5),
            atol=atol,
            rtol=atol,
        )
