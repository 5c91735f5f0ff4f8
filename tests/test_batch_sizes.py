"""`backends.batch_sizes`: an eager call at a batch size met for the first
time runs a larger batch's compiled program, padded, and gives what the
float64 oracle gives; the size's own program is compiled when it comes
again."""

import numpy as np
import pytest
from keras import ops

from conftest import BACKEND
from oracle import asymmetric_object, oracle_patches, oracle_place
from ptycho_layers import backends, extract_patches, operators, place_patches
from ptycho_layers.backends import batch_sizes
from test_extraction import make_offsets
from test_placement import random_patches

xla_only = pytest.mark.skipif(BACKEND == "torch", reason="PyTorch compiles nothing per shape")

HEIGHT, WIDTH, SIZE, GROUPS = 17, 19, 5, 4


@pytest.mark.parametrize(
    "batch, compiled, expected",
    [
        (5, {8}, 8),  # a compiled larger batch, at most twice as large
        (5, {6, 8, 10}, 6),  # the smallest of them
        (3, {8}, 4),  # 8 is over twice 3: the next power of two
        (9, set(), 16),
        (8, set(), 8),  # a power of two is its own size
        (1, {2}, 2),
        (1, set(), 1),
    ],
)
def test_padded_size(batch, compiled, expected):
    assert batch_sizes.padded_size(batch, compiled) == expected


def _offsets(batch, seed):
    offsets = make_offsets("fractional", batch, GROUPS, HEIGHT, WIDTH, SIZE, seed=seed)
    offsets[1, 2] = np.nan  # a non-finite offset among the real rows
    return offsets


def _check_calls(call, operator, expected, programs_of):
    """call(batch) at 8 (compiled), at 5 (run by 8's program, nothing
    compiled), at 5 again (its own program compiled): each equal to
    `expected(batch)`, the oracle's."""
    first = np.asarray(ops.convert_to_numpy(call(8)))
    np.testing.assert_allclose(first, expected(8), rtol=0, atol=1e-5)
    programs = programs_of(operator)
    for again, compiles in ((False, 0), (True, 1)):
        result = np.asarray(ops.convert_to_numpy(call(5)))
        assert result.shape == expected(5).shape, again
        np.testing.assert_allclose(result, expected(5), rtol=0, atol=1e-5, equal_nan=True)
        assert programs_of(operator) == programs + compiles, again


@xla_only
@pytest.mark.parametrize("per_row", [False, True], ids=["one object", "one per row"])
def test_extraction_at_a_new_batch_size(per_row, compiled_programs):
    operators.extraction.cache_clear()
    count = 8 if per_row else 1
    images = np.stack([asymmetric_object(HEIGHT, WIDTH, seed=k) for k in range(count)])

    def inputs(batch):
        return (images[:batch] if per_row else images), _offsets(batch, seed=batch)

    def call(batch):
        return extract_patches(*inputs(batch), SIZE)

    def expected(batch):
        return oracle_patches(*inputs(batch), SIZE)

    _check_calls(call, operators.extraction(SIZE, "bilinear", backends.current()), expected,
                 compiled_programs)


@xla_only
@pytest.mark.parametrize(
    "per_row, direct",
    [(False, False), (True, False), (False, True)],
    ids=["one object", "one per row", "NumPy into the operator"],
)
def test_placement_at_a_new_batch_size(per_row, direct, compiled_programs):
    """`direct`: NumPy arrays straight into the operator, as
    `reassemble_position` gives it its offsets."""
    operators.placement.cache_clear()
    operator = operators.placement(HEIGHT, WIDTH, per_row, "bilinear", backends.current())

    def inputs(batch):
        patches = random_patches((batch, SIZE, SIZE, GROUPS), "complex64", seed=batch)
        return patches, _offsets(batch, seed=batch)

    def call(batch):
        if direct:
            return operator(*inputs(batch))
        return place_patches(*inputs(batch), (HEIGHT, WIDTH), per_row=per_row)

    def expected(batch):
        return oracle_place(*inputs(batch), (HEIGHT, WIDTH), per_row)

    _check_calls(call, operator, expected, compiled_programs)


@xla_only
def test_reassemble_at_a_new_batch_size_compiles_nothing(compiled_programs):
    """`reassemble` places its masks with the patches' program at a new
    shape (`batch_sizes.repeated`): the second placement is not the batch
    size coming again, so at a new batch size nothing is compiled."""
    from ptycho_layers import reassemble

    operators.placement.cache_clear()
    operator = operators.placement(HEIGHT, WIDTH, False, "bilinear", backends.current())

    def inputs(batch):
        patches = random_patches((batch, SIZE, SIZE, GROUPS), "complex64", seed=batch)
        return patches, _offsets(batch, seed=batch)

    for _ in range(2):  # the patches' program, then the masks' own
        reassemble(*inputs(8), (HEIGHT, WIDTH))
    programs = compiled_programs(operator)
    patches, offsets = inputs(5)
    image, coverage = reassemble(patches, offsets, (HEIGHT, WIDTH), return_coverage=True)
    assert compiled_programs(operator) == programs
    ones = oracle_place(np.ones(patches.shape, "float32"), offsets, (HEIGHT, WIDTH), False)
    total = oracle_place(patches, offsets, (HEIGHT, WIDTH), False)
    expected = np.where(ones > 0, total / np.where(ones > 0, ones, 1), 0)
    np.testing.assert_allclose(ops.convert_to_numpy(coverage), ones, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(image), expected, rtol=0,
                               atol=1e-5 * np.abs(expected).max())


@xla_only
def test_reassemble_places_masks_in_the_patches_dtype_at_the_first_call_only():
    """Complex masks (the patches' program) at a shape's first eager call,
    real ones at every later call: not every other call."""
    from ptycho_layers import placement

    patches = ops.convert_to_tensor(random_patches((3, SIZE, SIZE, GROUPS), "complex64", seed=1))
    dtypes = [
        placement._mask_dtype(patches, (1, HEIGHT, WIDTH), False, "bilinear:test", "float32")
        for _ in range(4)
    ]
    assert dtypes == ["complex64", "float32", "float32", "float32"]
