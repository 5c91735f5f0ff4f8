"""Running the table: check, then time, each row; its ratios to the fastest
layer row and to the copy; and each row's peak memory, measured in a fresh
subprocess (the hidden ``--memory-probe`` mode). The table is extraction's
(`rows`) or placement's (`placement_rows`), by ``--operator``."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from ptycho_layers import ops as patch_ops
from benchmarks import backends
from benchmarks import peers
from benchmarks import placement_rows
from benchmarks import rows as rows_lib
from benchmarks import timing
from benchmarks import working_memory

__all__ = [
    "OPERATORS",
    "build_rows",
    "run_table",
    "run_row",
    "add_ratios",
    "measure_memory",
    "memory_probe",
]

# Each operator's rows module: ROW_IDS, LAYER_MODES (its "this layer"
# rows), build_rows(case, ids, settings, source).
OPERATORS = {"extract": rows_lib, "place": placement_rows}
_LAYER_IDS = set(rows_lib.LAYER_MODES) | set(placement_rows.LAYER_MODES)

# Peers compute sample positions in float32 (affine_transform's transforms,
# crop_and_resize's boxes): ~1e-4 px at a few thousand pixels, so errors of
# ~1e-4 of the object's range. A wrong peer is off by O(1).
_TOLERANCE = 1e-3
_PROBE_TAG = "MEMORY-PROBE "
# The probes run `python -m benchmarks`, found from the folder above it.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_rows(operator, case, ids, settings, source=None):
    """The rows `ids` of `operator`'s table for `case`; `source`: the
    extraction reference patches (the copy rows' source), or the patches to
    place; made from the case if None."""
    return OPERATORS[operator].build_rows(case, ids, settings, source)


def _extraction_checks(case):
    images, offsets = backends.to_tensor(case.images), backends.to_tensor(case.offsets)
    reference = backends.to_numpy(
        patch_ops.extract_patches_batched(images, offsets, case.patch_size)
    )
    float64 = peers.reference_patches(case.images, case.offsets, case.patch_size)
    return {
        "source": reference,
        "reference": reference,
        "float64": float64,
        "tolerance": _TOLERANCE * float(np.max(np.abs(case.images))),
        "reference_error": float(np.max(np.abs(reference - float64), initial=0)),
        "output_bytes": case.output_bytes,
    }


def _placement_checks(case):
    patches = placement_rows.case_patches(case)
    return dict(placement_rows.checks(case, patches), source=patches)


def run_table(args, case, settings):
    """Check and time the rows `args.rows` of `args.operator`'s table for
    `case`, then (``--memory subprocess``) measure their peak memory.

    Returns:
        The report's "rows" (dicts of `run_row`, with ratios), and what the
        notes under the table need.
    """
    checks = (_placement_checks if args.operator == "place" else _extraction_checks)(case)
    reference, float64 = checks.pop("reference"), checks.pop("float64")
    rows = build_rows(args.operator, case, args.rows, settings, checks.pop("source"))
    runnable = sum(1 for row in rows if not row.skip)
    steps = runnable * (args.repeats + (args.memory == "subprocess"))
    progress = timing.Progress(steps, enabled=not args.no_progress)
    results = [
        run_row(row, reference, float64, checks["tolerance"], args.repeats, progress)
        for row in rows
    ]
    if args.memory == "subprocess":
        method = measure_memory(args, results, progress)
    else:
        method = "not measured (--memory analytic)"
    progress.close()
    add_ratios(results)
    return dict(checks, rows=results, memory_method=method)


def _short(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:120] if text else ''}"


def run_row(row, reference, float64, tolerance, repeats, progress):
    """Check one row's output, then time it.

    Args:
        row: a `rows.Row`; its `expected`, if any, replaces `reference`
            and `float64`.
        reference: this layer's output (eager) as numpy, the check every
            row must pass within `tolerance` to be timed; a row covering
            the first B' rows of offsets is checked on those.
        float64: the same from the float64 numpy reference (reported), or
            None.
        tolerance: max abs error allowed against `reference`.
        repeats: timed calls.
        progress: a `timing.Progress`.

    Returns:
        A dict: status ("ok", "skipped", "failed" or "wrong"), reason, the
        errors, the raw times and (if ok) median_s, scaled to all K.
    """
    result = {
        "id": row.id, "label": row.label, "status": "ok", "reason": None,
        "patches_timed": row.patches, "scale": row.scale,
        "estimate_bytes": row.estimate, "times_s": [],
    }
    if row.skip:
        return dict(result, status="skipped", reason=row.skip)
    if row.expected is not None:
        reference, float64 = row.expected()
    progress.start(row.id)
    try:
        output = backends.to_numpy(row.fn())
    except Exception as error:  # a peer or mode that cannot run here
        return dict(result, status="failed", reason="n/a: " + _short(error))
    result["max_error"] = rows_lib.max_error(output, reference)
    result["max_error_f64"] = (
        None if float64 is None else rows_lib.max_error(output, float64)
    )
    if not result["max_error"] <= tolerance:
        # Never time a wrong answer: it could look fast.
        reason = f"WRONG output: max error {result['max_error']:.3g}"
        return dict(result, status="wrong", reason=reason)
    result["times_s"] = timing.time_calls(row.fn, repeats, progress=progress)
    result["median_s"] = timing.median(result["times_s"]) * row.scale
    result["patches_per_s"] = row.patches * row.scale / result["median_s"]
    return result


def add_ratios(results):
    """Set each result's median over the fastest layer row and over the copy."""
    timed = {r["id"]: r["median_s"] for r in results if r["status"] == "ok"}
    layer = [t for i, t in timed.items() if i in _LAYER_IDS]
    best = min(layer) if layer else None
    copy = timed.get("copy_numpy", timed.get("copy_backend"))
    for result in results:
        median = result.get("median_s")
        result["ratio_best_layer"] = median / best if median and best else None
        result["ratio_copy"] = median / copy if median and copy else None


def _probe_argv(args, row_id):
    height, width = args.object_shape
    return [
        sys.executable, "-m", "benchmarks", "--memory-probe",
        "--operator", args.operator,
        "--groups", str(args.groups), "--gridsize", str(args.gridsize),
        "--patch-size", str(args.patch_size), "--object-size", f"{height}x{width}",
        "--dtype", args.dtype, "--rows", row_id, "--seed", str(args.seed),
        "--legacy-patches", str(args.legacy_patches),
        "--tiled-budget-mb", str(args.tiled_budget_mb),
    ] + (["--reuse-freed-memory"] if args.reuse_freed_memory else [])


def measure_memory(args, results, progress):
    """Peak RSS growth of each timed row, each in a fresh subprocess."""
    if not timing.peak_memory_supported():
        return "not measured (needs Linux /proc/self/clear_refs)"
    env = dict(os.environ, KERAS_BACKEND=backends.name())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    failures = []
    for result in results:
        if result["status"] != "ok":
            continue
        progress.start(f"peak memory: {result['id']}")
        with tempfile.TemporaryDirectory() as dump:
            row_env = env
            if result["id"] in _LAYER_IDS:
                row_env = dict(env, **working_memory.dump_flags(dump))
            done = subprocess.run(_probe_argv(args, result["id"]), env=row_env,
                                  cwd=_ROOT, capture_output=True, text=True)
        lines = [l for l in done.stdout.splitlines() if l.startswith(_PROBE_TAG)]
        probe = json.loads(lines[-1][len(_PROBE_TAG):]) if lines else None
        if done.returncode != 0 or probe is None or probe["peak"] is None:
            failures.append(result["id"])
        else:
            result["peak_rss_bytes"] = probe["peak"]
            result["xla_temp_bytes"] = probe["xla_temp"]
        progress.step()
    note = ("peak RSS growth over a row's first call (tracing and compiling "
            "included), measured per row in a fresh subprocess")
    return note + (f"; failed for {', '.join(failures)}" if failures else "")


def memory_probe(row):
    """Hidden mode: the peak RSS growth of `row`'s first call, and the XLA
    temp of its compiled program where it has one, printed as a JSON line
    (null if the row does not run)."""
    peak = None if row.skip else timing.peak_growth(row.fn)
    temp = None
    if not row.skip and row.temp is not None:
        temp = row.temp()
    print(_PROBE_TAG + json.dumps({"peak": peak, "xla_temp": temp}), flush=True)
    return 0
