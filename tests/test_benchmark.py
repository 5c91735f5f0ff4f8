"""The benchmark: its peers are honest, its table and JSON are complete.

No timing is asserted: only that every row ran (or says why not), with
positive, finite times and outputs that match the oracle.
"""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from keras import ops

from conftest import BACKEND, requires, tensorflow_only
from oracle import asymmetric_object, oracle_patches
from oracle import oracle_place
from ptycho_layers import memory
from benchmarks import case as case_lib
from benchmarks import cli
from benchmarks import measure
from benchmarks import peers
from benchmarks import report as report_lib
from benchmarks import rows as rows_lib
from benchmarks import scaling
from benchmarks import timing
from benchmarks.__main__ import requested_backend
from benchmarks.extract import EXTRACT
from benchmarks.place import PLACE

# Labels every table starts its rows with, whatever the backend.
ROW_NAMES = [
    "legacy (batched=False",
    "tiled batch",
    "tf.image.crop_and_resize",
    "this layer, eager",
    "this layer, ",
    "output copy, np.copyto",
    "output copy, ",
]
TF_ONLY = {"crop_and_resize", "layer_xla"}
PLACE_ROW_NAMES = [
    "legacy shift-and-sum (batched=False",
    "tf.tensor_scatter_nd_add",
    "place_patches, eager",
    "place_patches, ",
    "reassemble(crop=None), ",
    "patches copy, np.copyto",
    "patches copy, ",
    "object zeroing, keras.ops.zeros",
]
PLACE_TF_ONLY = {"scatter_nd", "place_xla"}
# Rows of the Fourier kernel only: n/a in a bilinear table.
FOURIER_ONLY = {"fft_floor", "ptychi_fourier"}
# `python -m benchmarks` runs from the repository root.
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_warm_up_call(monkeypatch):
    """These tests check what the rows return, not their times: one
    warm-up call per row, not half a second of them."""
    monkeypatch.setattr(timing, "WARMUP_SECONDS", 0.0)


def test_warm_up_lasts_its_time(monkeypatch):
    """Warm-up calls go on for `WARMUP_SECONDS` (at least one, at most
    `WARMUP_CALLS`), then `repeats` calls are timed."""
    calls = []
    monkeypatch.setattr(timing, "WARMUP_SECONDS", 0.05)
    timing.time_calls(lambda: calls.append(time.sleep(0.005)), repeats=2)
    assert 2 + 2 <= len(calls) <= 2 + 10  # 5 ms calls for 50 ms
    calls.clear()
    monkeypatch.setattr(timing, "WARMUP_SECONDS", 60.0)
    timing.time_calls(lambda: calls.append(None), repeats=2)
    assert len(calls) == timing.WARMUP_CALLS + 2
    calls.clear()
    monkeypatch.setattr(timing, "WARMUP_SECONDS", 0.0)
    timing.time_calls(lambda: calls.append(None), repeats=3)
    assert len(calls) == 1 + 3


def offsets_over(height, width, patch_size, groups=2, channels=4, seed=0):
    """Fractional offsets inside the object, plus patches over every edge."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, width, (groups, channels))
    y = rng.uniform(0, height, (groups, channels))
    half = patch_size // 2
    x[0, :4] = [-half - 0.5, -0.25, width - 0.5, width + half - 0.25]
    y[0, :4] = [height - 0.25, -half - 0.75, height + half - 0.5, 0.0]
    return np.stack([x, y], axis=-1).astype("float32")


@pytest.mark.parametrize("dtype", ["complex64", "float32"])
def test_tiled_batch_matches_oracle(dtype):
    image = asymmetric_object(21, 27, dtype)[None]
    offsets = offsets_over(21, 27, 6)
    # A chunk that does not divide K, so the last chunk is a short one.
    patches = peers.tiled_batch(ops.convert_to_tensor(image), ops.convert_to_tensor(offsets), 6, chunk=3)
    patches = ops.convert_to_numpy(patches)
    assert patches.shape == (2, 6, 6, 4)
    assert patches.dtype == np.dtype(dtype)
    # Float32 transforms, as in the legacy path: its documented 1e-4 bar.
    scale = np.abs(image).max()
    np.testing.assert_allclose(patches, oracle_patches(image, offsets, 6), rtol=0, atol=1e-4 * scale)


@tensorflow_only
@pytest.mark.parametrize("dtype,patch_size", [("complex64", 7), ("float64", 6), ("complex64", 1)])
def test_crop_and_resize_matches_oracle(dtype, patch_size):
    image = asymmetric_object(19, 24, dtype)[None]
    offsets = offsets_over(19, 24, patch_size)
    patches = peers.crop_and_resize(ops.convert_to_tensor(image), ops.convert_to_tensor(offsets), patch_size)
    patches = ops.convert_to_numpy(patches)
    assert patches.shape == (2, patch_size, patch_size, 4)
    assert patches.dtype == np.dtype(dtype)
    # Boxes are normalised float32 corners, re-scaled inside the kernel:
    # ~1e-6 px of position error here, far below this 1e-4 bar. The edge
    # offsets check the zero ring that makes it match zero extension.
    scale = np.abs(image).max()
    np.testing.assert_allclose(patches, oracle_patches(image, offsets, patch_size), rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("dtype", ["complex128", "float64"])
def test_float64_reference_matches_oracle(dtype):
    image = asymmetric_object(17, 23, dtype)[None]
    offsets = offsets_over(17, 23, 5, groups=3).astype("float64")
    ours = peers.reference_patches(image, offsets, 5, groups_per_step=2)
    np.testing.assert_allclose(ours, oracle_patches(image, offsets, 5), rtol=0, atol=1e-12)


def random_patches(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        values = values + 1j * rng.standard_normal(shape)
    return values.astype(dtype)


def placement_offsets(height, width, patch_size):
    """Offsets over every edge, and one not finite (its patch is dropped)."""
    offsets = offsets_over(height, width, patch_size, groups=3).astype("float64")
    offsets[2, 1] = [np.nan, 3.0]
    return offsets


@pytest.mark.parametrize("dtype", ["complex128", "float64"])
def test_float64_reference_placement_matches_oracle(dtype):
    offsets = placement_offsets(17, 23, 5)
    patches = random_patches((3, 5, 5, 4), dtype)
    patches[2, :, :, 1] = np.nan  # at the non-finite offset: dropped too
    ours = peers.reference_placement(patches, offsets, (17, 23), groups_per_step=2)
    assert ours.shape == (1, 17, 23) and ours.dtype == np.dtype(dtype)
    np.testing.assert_allclose(ours, oracle_place(patches, offsets, (17, 23)), rtol=0, atol=1e-12)


def test_float64_placement_is_the_adjoint_of_extraction():
    """Re<extract(x), p> = Re<x, place(p)>: the two float64 references,
    written independently, are each other's adjoint."""
    offsets = offsets_over(17, 23, 6, groups=3).astype("float64")
    image = random_patches((1, 17, 23), "complex128", seed=2)
    patches = random_patches((3, 6, 6, 4), "complex128", seed=3)
    extracted = peers.reference_patches(image, offsets, 6, groups_per_step=2)
    placed = peers.reference_placement(patches, offsets, (17, 23), groups_per_step=2)
    left = np.vdot(extracted, patches).real
    right = np.vdot(image, placed).real
    assert abs(left) > 1  # not trivially zero
    assert abs(left - right) <= 1e-10


@pytest.mark.parametrize("interpolation, margin", [("fourier", 1), ("fourier", 3),
                                                   ("nearest", 1)])
def test_float64_kernel_references_are_adjoint(interpolation, margin):
    """The Fourier and nearest references, extraction and placement, are
    each other's adjoint, and a patch at a non-finite offset is NaN and
    placed nowhere."""
    offsets = placement_offsets(17, 23, 6)
    image = random_patches((1, 17, 23), "complex128", seed=2)
    patches = random_patches((3, 6, 6, 4), "complex128", seed=3)
    kernel = {"interpolation": interpolation, "fourier_margin": margin}
    extracted = peers.reference_patches(image, offsets, 6, groups_per_step=2, **kernel)
    assert np.all(np.isnan(extracted[2, :, :, 1]))
    extracted[2, :, :, 1] = 0
    placed = peers.reference_placement(patches, offsets, (17, 23), groups_per_step=2, **kernel)
    left = np.vdot(extracted, patches).real
    right = np.vdot(image, placed).real
    assert abs(left) > 1
    assert abs(left - right) <= 1e-10


@pytest.mark.parametrize("interpolation", ["fourier", "nearest"])
def test_float64_kernel_references_at_whole_pixels_are_the_slice(interpolation):
    """At whole-pixel offsets every kernel reads the plain slice, which the
    bilinear oracle gives: the Fourier ramp is 1, nearest rounds to
    itself."""
    image = asymmetric_object(17, 23, "complex128")[None]
    offsets = np.round(offsets_over(17, 23, 5, groups=3)).astype("float64")
    ours = peers.reference_patches(image, offsets, 5, interpolation=interpolation,
                                   fourier_margin=2)
    np.testing.assert_allclose(ours, oracle_patches(image, offsets, 5), rtol=0, atol=1e-12)


def test_nearest_reference_rounds_half_up():
    """Nearest reads the window at floor(x + 0.5): 2.5 reads from 3, 2.49
    from 2."""
    image = asymmetric_object(11, 13, "float64")[None]
    got = peers.reference_patches(image, np.array([[[2.5, 3.49]]]), 3, interpolation="nearest")
    want = oracle_patches(image, np.array([[[3.0, 3.0]]]), 3).real
    np.testing.assert_array_equal(got, want)


def test_fourier_reference_is_a_band_limited_shift():
    """A whole-window periodic signal, shifted by the Fourier reference,
    is the same signal sampled at the shifted points (a bilinear blend
    would damp it): cos(2 pi k col / S) of the window's own period."""
    size, margin, frequency = 8, 1, 2
    period = size + 2 * margin
    cols = np.arange(40)
    image = np.tile(np.cos(2 * np.pi * frequency * cols / period), (40, 1))[None]
    x, y = 20.3, 20.0
    patch = peers.reference_patches(image, np.array([[[x, y]]]), size,
                                    interpolation="fourier", fourier_margin=margin)
    sample = x - size // 2 + np.arange(size)
    want = np.cos(2 * np.pi * frequency * sample / period)
    np.testing.assert_allclose(patch[0, :, :, 0], np.tile(want, (size, 1)), atol=1e-12)


def test_ptychi_positions_follow_its_convention():
    """pty-chi's position p of a patch of N starts its window at
    floor(p - (N-1)/2) with that fraction: this package's [x, y] maps to
    [y, x] + (N-1)/2 - N//2 (0 for odd N, -1/2 for even)."""
    offsets = np.array([[[3.25, 7.5]]])
    np.testing.assert_array_equal(peers.ptychi_positions(offsets, 5), [[7.5, 3.25]])
    np.testing.assert_array_equal(peers.ptychi_positions(offsets, 6), [[7.0, 2.75]])


@requires("torch")
@pytest.mark.skipif(BACKEND != "torch", reason="pty-chi is a PyTorch peer")
@pytest.mark.skipif(importlib.util.find_spec("ptychi") is None,
                    reason=f"needs pty-chi ({peers.PTYCHI_INSTALL})")
@pytest.mark.parametrize("patch_size", [6, 7])
def test_ptychi_matches_the_fourier_reference(patch_size):
    """pty-chi's Fourier shift, given the mapped positions, computes the
    Fourier reference (the benchmark checks its rows against that)."""
    import torch

    module, reason = peers.load_ptychi()
    assert module is not None, reason
    image = asymmetric_object(29, 31, "complex128")[None]
    rng = np.random.default_rng(4)
    offsets = rng.uniform(patch_size, 29 - patch_size, (3, 4, 2))
    positions = torch.as_tensor(peers.ptychi_positions(offsets, patch_size))
    ours = peers.reference_patches(image, offsets, patch_size, interpolation="fourier",
                                   fourier_margin=2)
    theirs = peers.ptychi_extraction(module, torch.as_tensor(image[0]), positions,
                                     patch_size, 2, (3, 4)).numpy()
    # pty-chi is ~7e-8 off a float64 evaluation even on complex128 inputs
    # (part of its shift is computed in float32); a wrong mapping of its
    # positions is off by O(1).
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6)
    flat = np.transpose(ours, (0, 3, 1, 2)).reshape(-1, patch_size, patch_size)
    placed = peers.ptychi_placement(module, torch.as_tensor(flat), positions, (29, 31), 2)
    want = peers.reference_placement(ours, offsets, (29, 31), interpolation="fourier",
                                     fourier_margin=2)
    np.testing.assert_allclose(placed.numpy(), want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("operator", ["extract", "place"])
@pytest.mark.parametrize("interpolation", ["fourier", "nearest"])
def test_kernel_tables(operator, interpolation, capsys):
    """With --interpolation, the layer rows run that kernel and match its
    float64 reference; bilinear-only peers say n/a; the FFT floor runs for
    Fourier."""
    op = cli.OPERATORS[operator]
    layer_id = list(op.layer_modes)[0]
    ids = ["copy_numpy", "fft_floor", "ptychi_fourier", op.legacy_id, layer_id]
    args = cli.parse_args(["--quick", "--operator", operator, "--interpolation", interpolation,
                           "--fourier-margin", "2", "--repeats", "1", "--no-progress",
                           "--rows", ",".join(ids)])
    config = cli._config(args)
    case = case_lib.from_config(config)
    assert case.window_size == (16 + 4 if interpolation == "fourier" else 16)
    report = measure.run_table(op, args, case, cli._settings(args))
    rows = {row["id"]: row for row in report["rows"]}
    layer = rows[layer_id]
    assert layer["status"] == "ok", layer
    # The tolerance is 1e-3 of the values' scale: the layer is within 1e-5
    # of it of the kernel's float64 reference.
    assert layer["max_error_f64"] <= 1e-2 * report["tolerance"]
    assert rows[op.legacy_id]["reason"].startswith("n/a: bilinear only")
    floor = rows["fft_floor"]
    if interpolation == "fourier":
        assert floor["status"] == "ok", floor
        assert floor["label"].startswith("FFT floor: fft2 + ifft2 of K 20x20")
    else:
        assert floor["reason"].startswith("n/a")
    assert rows["ptychi_fourier"]["status"] in ("ok", "skipped")
    if rows["ptychi_fourier"]["status"] == "ok":
        assert rows["ptychi_fourier"]["max_error"] <= report["tolerance"]
    notes = report_lib.notes(op, dict(report, config=config, machine=timing.machine_info()))
    kernel = "Fourier kernel, margin 2" if interpolation == "fourier" else "nearest kernel"
    assert kernel in notes[0]


@tensorflow_only
@pytest.mark.parametrize("dtype", ["complex64", "float64"])
def test_scatter_nd_placement_matches_oracle(dtype):
    offsets = offsets_over(19, 24, 7, groups=3)
    patches = random_patches((3, 7, 7, 4), dtype)
    placed = peers.scatter_nd_placement(
        ops.convert_to_tensor(patches), ops.convert_to_tensor(offsets), (19, 24)
    )
    placed = ops.convert_to_numpy(placed)
    assert placed.shape == (1, 19, 24) and placed.dtype == np.dtype(dtype)
    np.testing.assert_allclose(placed, oracle_place(patches, offsets, (19, 24)), rtol=0, atol=1e-5)


def test_placement_rows_are_checked_against_what_they_return():
    case = case_lib.make_case(6, 2, 4, 16, 16, "complex64")
    settings = rows_lib.RowSettings(legacy_patches=8)
    ids = ["place_legacy", "reassemble", "copy_numpy", "zero_object"]
    legacy, average, copy, zeros = PLACE.build_rows(case, ids, settings)
    assert legacy.patches == 8 and legacy.scale == 3.0
    assert "8 of 24 patches" in legacy.label
    # The subset's placement, not the whole case's.
    reference, float64 = legacy.expected()
    rows = legacy.patches // case.offsets.shape[1]
    subset = case.patches[:rows]
    np.testing.assert_allclose(float64, oracle_place(subset, case.offsets[:rows], (16, 16)), atol=1e-12)
    np.testing.assert_allclose(ops.convert_to_numpy(legacy.fn()), reference, atol=1e-5)
    reference, float64 = average.expected()
    np.testing.assert_allclose(ops.convert_to_numpy(average.fn()), reference, atol=1e-5)
    np.testing.assert_allclose(reference, float64, atol=1e-5)
    np.testing.assert_array_equal(copy.fn(), copy.expected()[0])
    assert copy.expected()[1] is None
    assert ops.convert_to_numpy(zeros.fn()).shape == (1, 16, 16)


def test_a_wrong_row_is_flagged_and_not_timed():
    case = case_lib.make_case(2, 2, 4, 12, 12, "complex64")
    reference = oracle_patches(case.images, case.offsets, 4).astype("complex64")
    calls = []

    def swapped():
        calls.append("wrong")
        return reference.transpose(0, 2, 1, 3).copy()

    wrong = rows_lib.Row("tiled", "a peer that swaps x and y", swapped, patches=case.count)
    right = rows_lib.Row("legacy", "a peer that copies", lambda: reference.copy(), patches=case.count)
    bad = measure.run_row(wrong, reference, reference, 1e-3)
    good = measure.run_row(right, reference, reference, 1e-3)
    measure.time_rows([wrong, right], [bad, good], 2, _silent())
    assert calls == ["wrong"]  # checked once, never timed
    assert bad["status"] == "wrong" and bad["times_s"] == []
    assert "WRONG" in bad["reason"] and bad["max_error"] > 1e-3
    assert good["status"] == "ok" and len(good["times_s"]) == 2
    assert good["max_error"] == 0


def test_rows_are_timed_in_turns():
    """`time_rows` takes the rows' calls in turns after their warm-ups, so
    a drift of the machine's speed falls on every row alike."""
    calls = []
    rows = [
        rows_lib.Row(name, name, lambda name=name: calls.append(name), patches=1)
        for name in ("legacy", "tiled")
    ]
    results = [{"status": "ok"}, {"status": "ok"}]
    measure.time_rows(rows, results, 3, _silent())
    timed = calls[-6:]
    assert timed == ["legacy", "tiled"] * 3
    assert all(len(result["times_s"]) == 3 for result in results)


def test_subset_rows_scale_to_all_patches():
    case = case_lib.make_case(6, 2, 4, 16, 16, "complex64")
    settings = rows_lib.RowSettings(legacy_patches=8, tiled_full_bytes=0)
    legacy, tiled = EXTRACT.build_rows(case, ["legacy", "tiled"], settings)
    for row in (legacy, tiled):
        assert row.patches == 8 and row.scale == 3.0
        assert "8 of 24 patches" in row.label
        assert ops.convert_to_numpy(row.fn()).shape == (2, 4, 4, 4)


def test_object_size_parsing_and_row_selection():
    args = cli.parse_args(["--object-size", "300x500", "--rows", "layer_eager,copy_numpy"])
    assert args.object_shape == (300, 500)
    assert args.rows == ["layer_eager", "copy_numpy"]
    assert cli.parse_args(["--object-size", "392"]).object_shape == (392, 392)
    quick = cli.parse_args(["--quick", "--groups", "3"])
    assert quick.groups == 3 and quick.repeats == 2 and quick.memory == "analytic"
    with pytest.raises(SystemExit):
        cli.parse_args(["--rows", "legacy,nonsense"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--object-size", "3x4x5"])
    assert cli.parse_args([]).rows == list(EXTRACT.row_ids)
    place = cli.parse_args(["--operator", "place"])
    assert place.rows == list(PLACE.row_ids)
    place = cli.parse_args(["--operator", "place", "--rows", "zero_object,place_xla"])
    assert place.rows == ["zero_object", "place_xla"]
    with pytest.raises(SystemExit):
        cli.parse_args(["--operator", "place", "--rows", "layer_eager"])


def test_backend_flag():
    assert requested_backend(["--quick", "--backend", "jax"]) == "jax"
    assert requested_backend(["--backend=torch"]) == "torch"
    assert requested_backend(["--quick"]) is None
    other = "jax" if BACKEND != "jax" else "torch"
    # In-process, an already-imported Keras cannot switch backends.
    with pytest.raises(RuntimeError, match="already imported with backend"):
        cli.main(["--quick", "--backend", other])


@pytest.mark.parametrize("op", [EXTRACT, PLACE], ids=lambda op: op.name)
def test_scaling_and_gradient_report(op):
    config = {"groups": 2, "gridsize": 1, "patch_size": 4, "dtype": "complex64", "seed": 0}
    sizes = (12, 24)
    forward, zeroing = scaling.object_size_scaling(op, config, sizes, repeats=1, modes=["eager"])
    (entry,) = forward.values()
    assert len(entry["seconds"]) == 2
    assert all(s > 0 and math.isfinite(s) for s in entry["seconds"])
    assert entry["ratio"] == entry["seconds"][1] / entry["seconds"][0]
    if op is PLACE:
        # Placement fills a fresh object: its zeroing is timed alongside.
        assert all(s > 0 for s in zeroing["seconds"])
        net = [s - z for s, z in zip(entry["seconds"], zeroing["seconds"])]
        assert entry["net_seconds"] == net
    else:
        assert zeroing is None and "net_seconds" not in entry
    gradient = scaling.gradient_cost(op, config, sizes, repeats=1)
    assert [p["object"] for p in gradient["points"]] == list(sizes)
    for point in gradient["points"]:
        assert point["forward_s"] > 0 and point["forward_backward_s"] > 0
        assert math.isfinite(point["ratio"])
    report = {"operator": op.name, "sizes": list(sizes), "object_sizes": forward,
              "gradient": gradient}
    if zeroing is not None:
        report["zeroing"] = zeroing
    table = report_lib.scaling_table(op, report)
    if op is PLACE:
        assert "place_patches - zeroing s, eager" in table
        assert "object zeroing s" in table and "(d/d patches)" in table
    else:
        assert "this layer forward s, eager" in table and "(d/d object)" in table
        assert "zeroing" not in table


def test_placement_sweep():
    config = {"groups": 2, "gridsize": 1, "patch_size": 4, "dtype": "complex64",
              "seed": 0, "height": 12, "width": 12}
    result = scaling.sweep(PLACE, config, [1, 2], [10], 1, rows_lib.RowSettings(),
                           ids=("place_eager",))
    assert [k for k, _ in result["k"]["place_eager"]] == [1, 2]
    assert [e for e, _ in result["object"]["place_eager"]] == [10]
    assert result["labels"]["place_eager"] == "place_patches, eager"


@requires("matplotlib")
def test_sweep_and_plot(tmp_path):
    config = {"groups": 2, "gridsize": 1, "patch_size": 4, "dtype": "complex64",
              "seed": 0, "height": 12, "width": 12}
    settings = rows_lib.RowSettings(legacy_patches=1, tiled_full_bytes=0)
    result = scaling.sweep(EXTRACT, config, [1, 2], [10, 14], 1, settings,
                           ids=("layer_eager", "legacy"))
    assert [k for k, _ in result["k"]["legacy"]] == [1, 2]
    assert [e for e, _ in result["object"]["layer_eager"]] == [10, 14]
    assert all(s > 0 for series in result["k"].values() for _, s in series)
    path = tmp_path / "sweep.png"
    scaling.plot(result, str(path), "test")
    assert path.stat().st_size > 1000


def _silent():
    from benchmarks import timing

    return timing.Progress(1, enabled=False)


def _check_report(report, stdout):
    rows = {row["id"]: row for row in report["rows"]}
    assert list(rows) == list(EXTRACT.row_ids)
    for row_id, row in rows.items():
        if (BACKEND != "tensorflow" and row_id in TF_ONLY) or row_id in FOURIER_ONLY:
            assert row["status"] == "skipped", row
            assert row["reason"] in stdout
            continue
        if BACKEND == "torch" and row_id == "layer_graph" and row["status"] == "failed":
            # torch.compile needs a working compiler; the table says n/a.
            assert row["reason"].startswith("n/a")
            continue
        assert row["status"] == "ok", row
        assert row["times_s"] and all(t > 0 and math.isfinite(t) for t in row["times_s"])
        assert row["median_s"] > 0 and math.isfinite(row["median_s"])
        assert row["patches_per_s"] > 0
        assert row["max_error"] <= report["tolerance"]
    assert rows["crop_and_resize"]["status"] == ("ok" if BACKEND == "tensorflow" else "skipped")
    assert "skipped: TensorFlow only" in stdout or BACKEND == "tensorflow"
    for name in ROW_NAMES:
        assert name in stdout, name
    assert report["machine"]["backend"] == BACKEND
    assert report["machine"]["cpu_count"] >= 1
    assert report["machine"]["versions"]["keras"]
    assert report["reference_error"] < 1e-5


def _check_place_report(report, stdout):
    rows = {row["id"]: row for row in report["rows"]}
    assert list(rows) == list(PLACE.row_ids)
    for row_id, row in rows.items():
        if (BACKEND != "tensorflow" and row_id in PLACE_TF_ONLY) or row_id in FOURIER_ONLY:
            assert row["status"] == "skipped", row
            assert row["reason"] in stdout
            continue
        if BACKEND == "torch" and row_id == "place_graph" and row["status"] == "failed":
            assert row["reason"].startswith("n/a")
            continue
        assert row["status"] == "ok", row
        assert row["times_s"] and all(t > 0 and math.isfinite(t) for t in row["times_s"])
        assert row["patches_per_s"] == pytest.approx(report["config"]["patches"] / row["median_s"])
        assert row["max_error"] <= report["tolerance"]
        assert row["ratio_copy"] > 0 and row["ratio_best_layer"] > 0
        has_f64 = row_id not in ("copy_numpy", "copy_backend", "zero_object")
        assert (row["max_error_f64"] is not None) == has_f64
    assert rows["copy_numpy"]["ratio_copy"] == 1
    layer = [rows[i]["ratio_best_layer"] for i in PLACE.layer_modes
             if rows[i]["status"] == "ok"]
    assert min(layer) == 1
    for name in PLACE_ROW_NAMES:
        assert name in stdout or (name.startswith("tf.") and BACKEND != "tensorflow"), name
    assert "placed into one 48x48 complex64 object" in stdout
    assert report["config"]["operator"] == "place"
    assert report["patches_bytes"] == 16 * 16 * 16 * 8
    assert report["reference_error"] < 1e-2 * report["tolerance"]


# The whole quick run in process, every row: about 7 s each on
# TensorFlow, kept out of the default run (which stays under 3 minutes
# there); the default run calls `cli.main` with one row below, and
# `test_command_line_quick_run` covers the same reports from the command
# line.
@pytest.mark.slow
def test_main_in_process(tmp_path, capsys):
    path = tmp_path / "out.json"
    status = cli.main(["--quick", "--repeats", "1", "--memory", "analytic",
                       "--no-progress", "--json", str(path)])
    assert status == 0
    _check_report(json.loads(path.read_text()), capsys.readouterr().out)


@pytest.mark.slow
def test_place_main_in_process(tmp_path, capsys):
    path = tmp_path / "out.json"
    status = cli.main(["--operator", "place", "--quick", "--repeats", "1",
                       "--memory", "analytic", "--no-progress", "--json", str(path)])
    assert status == 0
    _check_place_report(json.loads(path.read_text()), capsys.readouterr().out)


def test_allocator_settings_are_reported(tmp_path, capsys, monkeypatch):
    """Settings that change how fresh buffers are allocated change most
    rows' times: the JSON and the table's notes name them."""
    for name in list(os.environ):
        if name.startswith("MALLOC_") or name in ("GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    monkeypatch.setattr(memory, "_limit", None)
    path = tmp_path / "out.json"
    status = cli.main(["--quick", "--repeats", "1", "--memory", "analytic",
                       "--no-progress", "--rows", "copy_numpy", "--json", str(path)])
    assert status == 0
    settings = json.loads(path.read_text())["machine"]["allocator_settings"]
    assert settings == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "MALLOC_ARENA_MAX": "1"}
    assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 MALLOC_ARENA_MAX=1" in capsys.readouterr().out


def test_reuse_freed_memory_is_made_and_reported(tmp_path, capsys, monkeypatch):
    """--reuse-freed-memory calls `reuse_freed_memory` before any row runs
    (here with glibc's `mallopt` stood in for: the worker keeps its own
    allocator), passes itself on to the memory probes, and the JSON and
    the notes say so."""
    monkeypatch.setattr(memory, "_limit", None)
    calls = []
    monkeypatch.setattr(memory, "_mallopt", lambda: lambda *call: calls.append(call) or 1)
    path = tmp_path / "out.json"
    status = cli.main(["--quick", "--repeats", "1", "--memory", "analytic", "--no-progress",
                       "--rows", "copy_numpy", "--reuse-freed-memory", "--json", str(path)])
    assert status == 0
    assert (memory._M_MMAP_THRESHOLD, 2**30) in calls
    settings = json.loads(path.read_text())["machine"]["allocator_settings"]
    assert settings["reuse_freed_memory"] == str(2**30)
    assert f"reuse_freed_memory={2**30}" in capsys.readouterr().out
    args = cli.parse_args(["--quick", "--reuse-freed-memory"])
    assert "--reuse-freed-memory" in measure._probe_argv(args, "copy_numpy")
    assert "--reuse-freed-memory" not in measure._probe_argv(cli.parse_args(["--quick"]), "copy_numpy")


@pytest.mark.slow
@pytest.mark.parametrize("operator", ["extract", "place"])
def test_command_line_quick_run(tmp_path, operator):
    path = tmp_path / "out.json"
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick",
         "--operator", operator, "--json", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    check = _check_place_report if operator == "place" else _check_report
    check(json.loads(path.read_text()), done.stdout)


@pytest.mark.slow
def test_measured_memory_sees_the_output(tmp_path):
    """A backend copy of an 8 MB output must raise the peak RSS by at least
    8 MB: the measurement sees the backend's own allocator."""
    path = tmp_path / "out.json"
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--groups", "64",
         "--object-size", "96", "--repeats", "1", "--rows", "copy_backend",
         "--memory", "subprocess", "--no-progress", "--json", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(path.read_text())["rows"]
    output_bytes = 64 * 4 * 64 * 64 * 8
    assert row["estimate_bytes"] == output_bytes
    assert row["peak_rss_bytes"] >= 0.95 * output_bytes
    assert row["peak_rss_bytes"] < 4 * output_bytes


def test_command_line_starts_quietly():
    """`python -m benchmarks` prints none of TensorFlow's C++
    start-up log lines (absl's notice, `I0000 ... port.cc`, `E0000 ...
    cuInit`), with TF_CPP_MIN_LOG_LEVEL unset as in a user's shell."""
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    output = done.stdout + done.stderr
    assert "absl::InitializeLog" not in output, output[-2000:]
    assert re.search(r"^[IWEF]\d{4} ", output, re.MULTILINE) is None, output[-2000:]


@pytest.mark.parametrize("function", ["place_patches", "reassemble_position"])
def test_first_call_probe_times_every_call(function):
    """The first-call probe, in this process on a tiny case: every time
    positive, a new batch size smaller than the case's, and the memory
    kept per shape averaged over the shapes it was asked for."""
    from benchmarks import first_call

    config = {"groups": 3, "gridsize": 2, "patch_size": 8, "height": 24, "width": 24,
              "dtype": "complex64", "seed": 0}
    result = first_call.probe(function, config, shapes=1)
    assert result["function"] == function
    assert result["first_s"] > 0 and result["warm_s"] > 0 and result["new_batch_s"] > 0
    assert result["new_batch_groups"] == 2 and result["shapes"] == 1
    assert result["kept_per_shape_bytes"] is None or result["kept_per_shape_bytes"] >= 0
    text = first_call.format_report({"rows": [result], "legacy": {function: dict(result, first_s=1.0)},
                                     "shapes": 1}, BACKEND)
    assert f"| {function} |" in text and "x |" in text


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch compiles nothing per shape")
def test_first_call_probe_fills_the_compilation_cache(tmp_path):
    """`--compilation-cache DIR`: the fresh process the report runs calls
    `persistent_cache(DIR)` before anything of TensorFlow's starts, so the
    programs it compiles land in DIR."""
    from benchmarks import first_call

    config = {"groups": 3, "gridsize": 2, "patch_size": 8, "height": 24, "width": 24,
              "dtype": "complex64", "seed": 0, "compilation_cache": str(tmp_path / "cache")}
    result = first_call._run_probe("place_patches", config, shapes=1)
    assert "error" not in result, result
    assert result["first_s"] > 0
    assert os.listdir(tmp_path / "cache")


@pytest.mark.parametrize("flag,legacy", [([], None), (["--no-ptychopinn"], False)])
def test_first_call_report_can_leave_out_ptychopinn(monkeypatch, flag, legacy):
    """`--no-ptychopinn` asks the report for no PtychoPINN rows; by default
    the report decides (TensorFlow: with them)."""
    from benchmarks import cli, first_call

    asked = {}

    def report(config, shapes=10, functions=first_call.FUNCTIONS, legacy=None, progress=None):
        asked["legacy"] = legacy
        return {"rows": [], "legacy": {}, "shapes": shapes}

    monkeypatch.setattr(first_call, "report", report)
    monkeypatch.setattr(first_call, "format_report", lambda result, backend: "")
    cli.main(["--backend", BACKEND, "--first-call", "--no-progress", *flag])
    assert asked == {"legacy": legacy}
