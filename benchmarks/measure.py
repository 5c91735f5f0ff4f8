"""Running a table: check, then time, each row; its ratios to the fastest
layer row and to the copy; and each row's peak memory, measured in a fresh
subprocess (the hidden ``--memory-probe`` mode)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks import backends
from benchmarks import timing
from benchmarks import working_memory

__all__ = ["run_table", "run_row", "time_rows", "add_ratios", "measure_memory", "memory_probe",
           "short_error"]

_PROBE_TAG = "MEMORY-PROBE "
# The probes run `python -m benchmarks`, found from the folder above it.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_table(op, args, case, settings):
    """Check and time the rows `args.rows` of `op`'s table for `case`, then
    (``--memory subprocess``) measure their peak memory.

    Returns:
        The report's "rows" (dicts of `run_row`, with ratios), and what the
        notes under the table need.
    """
    checks = op.checks(case)
    reference, float64 = checks.pop("reference"), checks.pop("float64")
    rows = op.build_rows(case, args.rows, settings)
    runnable = sum(1 for row in rows if not row.skip)
    steps = runnable * (args.repeats + (args.memory == "subprocess"))
    progress = timing.Progress(steps, enabled=not args.no_progress)
    results = [run_row(row, reference, float64, checks["tolerance"]) for row in rows]
    time_rows(rows, results, args.repeats, progress)
    if args.memory == "subprocess":
        method = measure_memory(op, args, results, progress)
    else:
        method = "not measured (--memory analytic)"
    progress.close()
    add_ratios(results, op.layer_modes)
    return dict(checks, rows=results, memory_method=method)


def short_error(error):
    """The error's type and the start of its first line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:120] if text else ''}"


def _max_error(output, reference):
    return float(np.max(np.abs(output - reference), initial=0))


def run_row(row, reference, float64, tolerance):
    """Check one row's output against `reference` (numpy; the row's own
    `expected` replaces it and `float64`, the float64 output or None):
    only a row within `tolerance` is timed (`time_rows`).

    Returns:
        A dict: status ("ok", "skipped", "failed" or "wrong"), reason, the
        errors; `time_rows` adds the raw times and median_s.
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
    try:
        output = backends.to_numpy(row.fn())
    except Exception as error:  # a peer or mode that cannot run here
        return dict(result, status="failed", reason="n/a: " + short_error(error))
    if output.shape != reference.shape:
        return dict(result, status="wrong", reason=f"WRONG output shape {output.shape}")
    result["max_error"] = _max_error(output, reference)
    result["max_error_f64"] = None if float64 is None else _max_error(output, float64)
    if not result["max_error"] <= tolerance:
        # Never time a wrong answer: it could look fast.
        reason = f"WRONG output: max error {result['max_error']:.3g}"
        return dict(result, status="wrong", reason=reason)
    return result


def time_rows(rows, results, repeats, progress):
    """Time `repeats` calls of each row whose result (`run_row`) is "ok",
    the rows' calls in turns (`timing.time_interleaved`): the machine's
    speed drifts over a run (shared cores), and timed one row after
    another, a ratio of two rows took that drift in; in turns it affects
    every row alike. Adds each one's raw times, median_s scaled to all K,
    and patches_per_s."""
    timed = {row.id: (row, result) for row, result in zip(rows, results)
             if result["status"] == "ok"}
    if not timed:
        return
    progress.start(", ".join(timed))
    times = timing.time_interleaved(
        {key: row.fn for key, (row, _) in timed.items()}, repeats, progress
    )
    for key, (row, result) in timed.items():
        result["times_s"] = times[key]
        result["median_s"] = statistics.median(times[key]) * row.scale
        result["patches_per_s"] = row.patches * row.scale / result["median_s"]


def add_ratios(results, layer_ids):
    """Set each result's median over the fastest of the `layer_ids` rows
    and over the copy."""
    timed = {r["id"]: r["median_s"] for r in results if r["status"] == "ok"}
    best = min((t for i, t in timed.items() if i in layer_ids), default=None)
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


def measure_memory(op, args, results, progress):
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
            if result["id"] in op.layer_modes:
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
    temp = None if row.skip or row.temp is None else row.temp()
    print(_PROBE_TAG + json.dumps({"peak": peak, "xla_temp": temp}), flush=True)
    return 0
