"""First calls on the host (`backends.on_host`, `backends.numpy`,
`backends.numpy_ops`, and `backends.batch_sizes`'s choice): an eager call
at shapes never met, if small, runs the XLA implementation's kernels op
by op in NumPy, compiles nothing, and gives what the float64 oracle gives,
in the dtype the compiled program gives; the program is compiled when
those shapes come again."""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from oracle import (
    asymmetric_object,
    oracle_fourier_patches,
    oracle_fourier_place,
    oracle_nearest_patches,
    oracle_nearest_place,
    oracle_patches,
    oracle_place,
)
from ptycho_layers import (
    backends,
    extract_patches,
    operators,
    place_patches,
    reassemble,
    reassemble_position,
)
from ptycho_layers.backends import batch_sizes, numpy_ops
from test_extraction import make_offsets
from test_placement import random_patches

pytestmark = [
    pytest.mark.skipif(
        BACKEND == "torch", reason="PyTorch compiles nothing: no first call to spare"
    ),
    # The bilinear oracle casts a non-finite offset's NaN corner to int
    # before it masks the patch.
    pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning"),
]

HEIGHT, WIDTH, SIZE, GROUPS, BATCH = 13, 17, 5, 4, 3
KERNELS = {
    "bilinear": ({}, oracle_patches, oracle_place),
    "nearest": (
        {"interpolation": "nearest"},
        lambda images, offsets, n: oracle_nearest_patches(images, offsets, n),
        lambda patches, offsets, shape, per_row: oracle_nearest_place(
            patches, offsets, shape, per_row
        ),
    ),
    "fourier": (
        {"interpolation": "fourier", "fourier_margin": 2},
        lambda images, offsets, n: oracle_fourier_patches(images, offsets, n, 2),
        lambda patches, offsets, shape, per_row: oracle_fourier_place(
            patches, offsets, shape, 2, per_row
        ),
    ),
}


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def offsets_with_a_nan(seed):
    offsets = make_offsets("edges", BATCH, GROUPS, HEIGHT, WIDTH, SIZE, seed=seed)
    offsets[0, 1] = make_offsets("fractional", 1, 1, HEIGHT, WIDTH, SIZE, seed=seed)[0, 0]
    offsets[1, 2] = np.nan
    return offsets


def tolerance(dtype):
    """Of max |expected|: float32's rounding over a few operations, and
    float64's."""
    return 1e-12 if dtype in ("float64", "complex128") else 1e-5


@pytest.mark.parametrize("dtype", ["complex64", "float32", "complex128", "float64"])
@pytest.mark.parametrize("per_row", [False, True], ids=["one object", "one per row"])
@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_first_calls_on_the_host_match_the_oracle(
    kernel, per_row, dtype, first_calls_on_host, compiled_programs
):
    """Both operators, at shapes never met: nothing compiled, the oracle's
    values (NaN for a non-finite offset, which places nothing), the
    compiled program's dtype."""
    operators.extraction.cache_clear()
    operators.placement.cache_clear()
    options, oracle_extract, oracle_add = KERNELS[kernel]
    offsets = offsets_with_a_nan(seed=1)
    count = BATCH if per_row else 1
    images = np.stack(
        [asymmetric_object(HEIGHT, WIDTH, dtype, seed=k) for k in range(count)]
    )
    patches = random_patches((BATCH, SIZE, SIZE, GROUPS), dtype, seed=2)
    spec = operators.kernel_spec(
        options.get("interpolation", "bilinear"), options.get("fourier_margin", 1)
    )
    backend = backends.current()
    pair = (operators.extraction(SIZE, spec, backend),
            operators.placement(HEIGHT, WIDTH, per_row, spec, backend))
    before = [compiled_programs(operator) for operator in pair]

    found = extract_patches(images, offsets, SIZE, **options)
    placed = place_patches(patches, offsets, (HEIGHT, WIDTH), per_row=per_row, **options)

    assert [compiled_programs(operator) for operator in pair] == before
    expected = oracle_extract(images, offsets, SIZE)
    if np.dtype(dtype).kind != "c":
        expected = expected.real
    assert keras.backend.standardize_dtype(found.dtype) == dtype
    np.testing.assert_allclose(
        numpy(found), expected, rtol=0, equal_nan=True,
        atol=tolerance(dtype) * np.nanmax(np.abs(expected)),
    )
    assert np.isnan(numpy(found)[1, :, :, 2]).all()
    expected = oracle_add(patches, offsets, (HEIGHT, WIDTH), per_row)
    if np.dtype(dtype).kind != "c":
        expected = expected.real
    assert keras.backend.standardize_dtype(placed.dtype) == dtype
    assert placed.shape == expected.shape
    np.testing.assert_allclose(
        numpy(placed), expected, rtol=0, atol=tolerance(dtype) * np.abs(expected).max()
    )


ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_first_calls_on_the_host(dtype, first_calls_on_host):
    """Computed in float32 and rounded once to the dtype, as compiled."""
    offsets = offsets_with_a_nan(seed=3)
    image = ops.cast(asymmetric_object(HEIGHT, WIDTH, "float32")[None], dtype)
    exact = numpy(ops.cast(image, "float32")).astype("float64")
    found = extract_patches(image, offsets, SIZE)
    assert keras.backend.standardize_dtype(found.dtype) == dtype
    expected = oracle_patches(exact, offsets, SIZE).real
    np.testing.assert_allclose(
        numpy(ops.cast(found, "float32")), expected, rtol=0, equal_nan=True,
        atol=2 * ROUNDOFF[dtype] * np.nanmax(np.abs(expected)),
    )


def test_the_second_call_compiles_and_agrees(first_calls_on_host, compiled_programs):
    """The shapes' program is compiled when they come again; both calls
    give the same patches to float32 rounding."""
    operators.extraction.cache_clear()
    operator = operators.extraction(SIZE, "bilinear", backends.current())
    image = asymmetric_object(HEIGHT, WIDTH)[None]
    offsets = offsets_with_a_nan(seed=4)
    before = compiled_programs(operator)
    on_host = numpy(extract_patches(image, offsets, SIZE))
    assert compiled_programs(operator) == before
    compiled = numpy(extract_patches(image, offsets, SIZE))
    assert compiled_programs(operator) == before + 1
    np.testing.assert_allclose(
        compiled, on_host, rtol=0, atol=1e-6 * np.nanmax(np.abs(on_host)), equal_nan=True
    )
    # A new batch size of the same shapes runs the compiled program padded.
    numpy(extract_patches(image, offsets[:2], SIZE))
    assert compiled_programs(operator) == before + 1


def test_large_first_calls_compile(monkeypatch, first_calls_on_host, compiled_programs):
    """Past `HOST_ELEMENTS` window elements the host would be slower than a
    compile: the first call compiles."""
    monkeypatch.setattr(batch_sizes, "HOST_ELEMENTS", BATCH * GROUPS * (SIZE + 1) ** 2 - 1)
    operators.extraction.cache_clear()
    operator = operators.extraction(SIZE, "bilinear", backends.current())
    before = compiled_programs(operator)
    extract_patches(asymmetric_object(HEIGHT, WIDTH)[None], offsets_with_a_nan(5), SIZE)
    assert compiled_programs(operator) == before + 1


def test_reassemble_first_call_on_the_host(first_calls_on_host, compiled_programs):
    """Both of `reassemble`'s placements (the patches', the masks') run on
    the host at a first call, and give the oracle's average."""
    operators.placement.cache_clear()
    patches = random_patches((BATCH, SIZE, SIZE, GROUPS), "complex64", seed=6)
    offsets = make_offsets("fractional", BATCH, GROUPS, HEIGHT, WIDTH, SIZE, seed=6)
    operator = operators.placement(HEIGHT, WIDTH, False, "bilinear", backends.current())
    before = compiled_programs(operator)
    image, coverage = reassemble(patches, offsets, (HEIGHT, WIDTH), return_coverage=True)
    assert compiled_programs(operator) == before
    ones = oracle_place(np.ones(patches.shape, "float32"), offsets, (HEIGHT, WIDTH)).real
    total = oracle_place(patches, offsets, (HEIGHT, WIDTH))
    expected = np.where(ones > 0, total / np.where(ones > 0, ones, 1), 0)
    np.testing.assert_allclose(numpy(coverage), ones, rtol=0, atol=1e-5 * ones.max())
    np.testing.assert_allclose(
        numpy(image), expected, rtol=0, atol=1e-5 * np.abs(expected).max()
    )


def test_reassemble_position_on_the_host_equals_the_compiled(first_calls_on_host):
    """PtychoPINN's one call per dataset: on the host, then compiled."""
    operators.placement.cache_clear()
    rng = np.random.default_rng(7)
    patches = random_patches((12, 16, 16, 1), "complex64", seed=7)
    positions = rng.uniform(-10, 10, (12, 1, 1, 2))
    first = numpy(reassemble_position(patches, positions, M=8))
    second = numpy(reassemble_position(patches, positions, M=8))
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-6 * np.abs(second).max())


# keras.ops's function, its arguments, and the dtype the host gives where
# it is not keras.ops's on every backend (None: keras.ops's): Python
# numbers alone give Keras's defaults, float32 and int32, which JAX's
# 64-bit mode makes 64-bit; argmax's indices are int32, which JAX's
# 64-bit mode makes int64. The kernels cast both where it matters.
OPS = [
    ("where", (np.array([True, False]), np.float32([1.5, 2.5]), 0.0), None),
    ("where", (np.array([True, False]), np.float64([1.5, 2.5]), np.float64(0)), None),
    ("where", (np.array([True, False]), 0.0, float("nan")), "float32"),
    ("where", (np.array([True, False]), np.int32([1, 2]), -1), None),
    ("minimum", (np.int32([3, 9]), 4), None),
    ("clip", (np.int32([-3, 9]), 0, 5), None),
    ("clip", (np.float64([-3.5, 9.5]), -1, np.float64(5.25)), None),
    ("arange", (4,), "int32"),
    ("convert_to_tensor", (1.5,), "float32"),
    ("convert_to_tensor", ([1, 2],), "int32"),
    ("argmax", (np.int32([[0, 1], [1, 0]]),), "int32"),
    ("sum", (np.float32([[1, 2], [3, 4]]),), None),
    ("floor", (np.float32([-1.5, 2.5]),), None),
    ("zeros", ((2, 3),), None),
]


@pytest.mark.parametrize("name, args, dtype", OPS, ids=[name for name, _, _ in OPS])
def test_host_ops_match_keras_ops(name, args, dtype):
    expected = getattr(ops, name)(*args)
    found = getattr(numpy_ops, name)(*args)
    assert isinstance(found, np.ndarray)
    dtype = dtype or keras.backend.standardize_dtype(expected.dtype)
    assert keras.backend.standardize_dtype(found.dtype) == dtype
    np.testing.assert_array_equal(found, numpy(expected))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="an eager gradient tape: TensorFlow's")
def test_a_first_call_under_a_gradient_tape_keeps_its_gradient(first_calls_on_host):
    """The forward pass on the host, the gradient the compiled placement:
    d sum(Re(conj(w) patches)) / d image is place(w)."""
    import tensorflow as tf

    operators.extraction.cache_clear()
    image = tf.Variable(asymmetric_object(HEIGHT, WIDTH, "float32")[None])
    offsets = make_offsets("fractional", BATCH, GROUPS, HEIGHT, WIDTH, SIZE, seed=8)
    weights = random_patches((BATCH, SIZE, SIZE, GROUPS), "float32", seed=8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(weights * extract_patches(image, offsets, SIZE))
    expected = oracle_place(weights, offsets, (HEIGHT, WIDTH)).real
    found = numpy(tape.gradient(loss, image))
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_new_batch_sizes_run_on_the_host_until_one_is_compiled(
    first_calls_on_host, compiled_programs
):
    """Each small first call at a new batch size runs on the host while no
    compiled program can run it padded (a service taking requests of any
    size); a compiled program, once there, runs the sizes it can."""
    operators.placement.cache_clear()
    operator = operators.placement(HEIGHT, WIDTH, False, "bilinear", backends.current())
    before = compiled_programs(operator)

    def call(batch):
        patches = random_patches((batch, SIZE, SIZE, GROUPS), "complex64", seed=batch)
        offsets = make_offsets("fractional", batch, GROUPS, HEIGHT, WIDTH, SIZE, seed=batch)
        placed = numpy(place_patches(patches, offsets, (HEIGHT, WIDTH)))
        expected = oracle_place(patches, offsets, (HEIGHT, WIDTH))
        np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5 * np.abs(expected).max())

    for batch in (4, 7, 2):
        call(batch)
    assert compiled_programs(operator) == before
    call(4)  # 4 again: its program
    assert compiled_programs(operator) == before + 1
    call(3)  # run by 4's program, padded
    call(9)  # none to pad onto: on the host
    assert compiled_programs(operator) == before + 1
