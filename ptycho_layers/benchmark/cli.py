"""Command line, table and JSON of ``python -m ptycho_layers.benchmark``."""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

from ptycho_layers import kernels
from ptycho_layers.benchmark import backends
from ptycho_layers.benchmark import peers
from ptycho_layers.benchmark import rows as rows_lib
from ptycho_layers.benchmark import scaling
from ptycho_layers.benchmark import timing
from ptycho_layers.benchmark import working_memory

__all__ = ["main", "parse_args", "run_row", "format_table"]

_DEFAULTS = {
    "groups": 256,
    "gridsize": 2,
    "patch_size": 64,
    "object_size": "392",
    "repeats": 5,
    "memory": "subprocess",
}
# --quick: a tiny case for smoke tests; peak memory only estimated (each
# measured row re-imports the backend in a subprocess).
_QUICK = {
    "groups": 4,
    "gridsize": 2,
    "patch_size": 16,
    "object_size": "48",
    "repeats": 2,
    "memory": "analytic",
}
# Peers compute sample positions in float32 (affine_transform's transforms,
# crop_and_resize's boxes): ~1e-4 px at a few thousand pixels, so errors of
# ~1e-4 of the object's range. A wrong peer is off by O(1).
_TOLERANCE = 1e-3
_PROBE_TAG = "MEMORY-PROBE "
_LEGACY_PATCHES = 32


def _object_size(text):
    parts = text.lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return shape


def _row_ids(text):
    ids = [i.strip() for i in text.split(",") if i.strip()]
    unknown = sorted(set(ids) - set(rows_lib.ROW_IDS))
    if unknown or not ids:
        raise argparse.ArgumentTypeError(
            f"unknown rows {unknown}; choose from {', '.join(rows_lib.ROW_IDS)}"
        )
    return ids


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_layers.benchmark",
        description="Time patch extraction: this layer against its peers.",
    )
    add = parser.add_argument
    add("--groups", type=int, help="B, rows of offsets (default 256)")
    add("--gridsize", type=int, help="patches per group = gridsize**2 (default 2)")
    add("--patch-size", type=int, help="N (default 64)")
    add("--object-size", help="object size, N or HxW (default 392)")
    add("--dtype", default="complex64",
        choices=["complex64", "complex128", "float32", "float64"])
    add("--repeats", type=int, help="timed calls per row (default 5)")
    add("--quick", action="store_true",
        help="tiny case, 2 repeats, estimated memory (smoke test)")
    add("--backend", choices=["tensorflow", "jax", "torch"],
        help="Keras backend (re-runs in a fresh interpreter if needed)")
    add("--rows", type=_row_ids, default=list(rows_lib.ROW_IDS),
        help="comma-separated rows: " + ",".join(rows_lib.ROW_IDS))
    add("--json", metavar="FILE", help="write every number and the machine to FILE")
    add("--plot", metavar="FILE.png",
        help="sweep K and object size; plot time (needs matplotlib)")
    add("--scaling", action="store_true",
        help="also report object 392 vs 2048 and backward vs forward")
    add("--memory", choices=["subprocess", "analytic"],
        help="measure peak RSS per row in a fresh subprocess (default; "
        "--quick: analytic), or only give the analytic estimate")
    add("--legacy-patches", type=int, default=_LEGACY_PATCHES,
        help="patches the legacy loop (and the tiled batch, when K padded "
        "objects exceed 2 GB) time when K is larger (default 32; 4 on torch)")
    add("--tiled-budget-mb", type=int, default=1024,
        help="memory per chunk of the tiled batch, MB (default 1024)")
    add("--seed", type=int, default=0)
    add("--no-progress", action="store_true", help="no progress bar")
    add("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = _QUICK if args.quick else _DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.object_shape = _object_size(args.object_size)
    except argparse.ArgumentTypeError as error:
        parser.error(f"argument --object-size: {error}")
    if min(args.groups, args.gridsize, args.patch_size, args.repeats) < 1:
        parser.error("--groups, --gridsize, --patch-size and --repeats must be >= 1")
    return args


def _config(args):
    height, width = args.object_shape
    return {
        "groups": args.groups,
        "gridsize": args.gridsize,
        "patches": args.groups * args.gridsize**2,
        "patch_size": args.patch_size,
        "height": height,
        "width": width,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "seed": args.seed,
        "backend": backends.name(),
        "memory": args.memory,
    }


def _settings(args):
    settings = rows_lib.RowSettings(
        legacy_patches=args.legacy_patches,
        tiled_budget=args.tiled_budget_mb << 20,
    )
    if backends.name() == "torch":
        # Keras's torch affine_transform samples each image through a
        # Python-level map_coordinates, two orders of magnitude slower than
        # TensorFlow's kernel: both translate peers time a few patches.
        settings.tiled_full_bytes = 0
        if args.legacy_patches == _LEGACY_PATCHES:
            settings.legacy_patches = 4
    return settings


def _make_case(config):
    return rows_lib.make_case(
        config["groups"], config["gridsize"], config["patch_size"],
        config["height"], config["width"], config["dtype"], config["seed"],
    )


# ---------------------------------------------------------------- running


def _short(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:120] if text else ''}"


def run_row(row, reference, float64, tolerance, repeats, progress):
    """Check one row's output, then time it.

    Args:
        row: a `rows.Row`.
        reference: (B, N, N, c) numpy patches of this layer (eager), the
            check every row must pass within `tolerance` to be timed.
        float64: the same from the float64 numpy reference (reported).
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
    progress.start(row.id)
    try:
        output = backends.to_numpy(row.fn())
    except Exception as error:  # a peer or mode that cannot run here
        return dict(result, status="failed", reason="n/a: " + _short(error))
    result["max_error"] = rows_lib.max_error(output, reference)
    result["max_error_f64"] = rows_lib.max_error(output, float64)
    if not result["max_error"] <= tolerance:
        # Never time a wrong answer: it could look fast.
        reason = f"WRONG output: max error {result['max_error']:.3g}"
        return dict(result, status="wrong", reason=reason)
    result["times_s"] = timing.time_calls(row.fn, repeats, progress=progress)
    result["median_s"] = timing.median(result["times_s"]) * row.scale
    count = reference.shape[0] * reference.shape[-1]  # K
    result["patches_per_s"] = count / result["median_s"]
    return result


def _add_ratios(results):
    timed = {r["id"]: r["median_s"] for r in results if r["status"] == "ok"}
    layer = [t for i, t in timed.items() if i in rows_lib.LAYER_MODES]
    best = min(layer) if layer else None
    copy = timed.get("copy_numpy", timed.get("copy_backend"))
    for result in results:
        median = result.get("median_s")
        result["ratio_best_layer"] = median / best if median and best else None
        result["ratio_copy"] = median / copy if median and copy else None


def _probe_argv(args, row_id):
    height, width = args.object_shape
    return [
        sys.executable, "-m", "ptycho_layers.benchmark", "--memory-probe",
        "--groups", str(args.groups), "--gridsize", str(args.gridsize),
        "--patch-size", str(args.patch_size), "--object-size", f"{height}x{width}",
        "--dtype", args.dtype, "--rows", row_id, "--seed", str(args.seed),
        "--legacy-patches", str(args.legacy_patches),
        "--tiled-budget-mb", str(args.tiled_budget_mb),
    ]


def _measure_memory(args, results, progress):
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
            if result["id"] in rows_lib.LAYER_MODES:
                row_env = dict(env, **working_memory.dump_flags(dump))
            done = subprocess.run(_probe_argv(args, result["id"]), env=row_env,
                                  capture_output=True, text=True)
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


def _memory_probe(args):
    """Hidden mode: the peak RSS growth of one row's first call, printed as
    a JSON line (null if the row does not run)."""
    case = _make_case(_config(args))
    (row,) = rows_lib.build_rows(case, args.rows[:1], _settings(args))
    peak = None if row.skip else timing.peak_growth(row.fn)
    temp = None
    if not row.skip and row.id in rows_lib.LAYER_MODES:
        temp = working_memory.compiled_temp_bytes(
            backends.to_tensor(case.images), backends.to_tensor(case.offsets),
            case.patch_size,
        )
    print(_PROBE_TAG + json.dumps({"peak": peak, "xla_temp": temp}), flush=True)
    return 0


# ---------------------------------------------------------------- output


def _seconds(value):
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}"


def _rate(value):
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def _bytes(value):
    if value is None:
        return "n/a"
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value} B"


def _ratio(value):
    if value is None:
        return "-"
    return f"{value:.0f}x" if value >= 100 else f"{value:.3g}x"


def _error(value):
    return f"{value:.1e}" if value is not None else "-"


def format_table(headers, body):
    """A pipe table with aligned columns."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *body)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule] + [line(cells) for cells in body])


_HEADERS = ["row", "median s", "patches/s", "vs layer best", "vs copy",
            "peak RSS", "XLA temp", "est. mem", "err vs layer", "err vs f64"]


def _table_row(result):
    if result["status"] != "ok":
        blank = ["-"] * 3 + ["-", "-", _bytes(result.get("estimate_bytes")),
                             _error(result.get("max_error")),
                             _error(result.get("max_error_f64"))]
        return [result["label"], result["reason"]] + blank
    return [
        result["label"],
        _seconds(result["median_s"]),
        _rate(result["patches_per_s"]),
        _ratio(result["ratio_best_layer"]),
        _ratio(result["ratio_copy"]),
        _bytes(result.get("peak_rss_bytes")),
        _bytes(result.get("xla_temp_bytes")),
        _bytes(result.get("estimate_bytes")),
        _error(result["max_error"]),
        _error(result["max_error_f64"]),
    ]


def _notes(report):
    config, machine = report["config"], report["machine"]
    versions = machine["versions"]
    backend_version = versions.get(
        {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[config["backend"]]
    )
    return [
        f"K = {config['groups']} x {config['gridsize']}**2 = {config['patches']} "
        f"patches of {config['patch_size']}x{config['patch_size']} from a "
        f"{config['height']}x{config['width']} {config['dtype']} object; offsets "
        f"uniform over the object (seed {config['seed']}); median of "
        f"{config['repeats']} calls after 1 warm-up; scaled rows time a subset "
        "and multiply by K / subset.",
        "vs layer best: median / fastest 'this layer' row; vs copy: median / "
        "np.copyto of an output-sized array (the memory-bandwidth floor).",
        f"peak RSS: {report['memory_method']}. XLA temp: this layer's "
        "working memory beyond its inputs and output, from XLA's buffer "
        f"assignment of the compiled forward pass (output: "
        f"{_bytes(report['output_bytes'])}). est. mem: analytic estimate of "
        "each row's working memory (computed, not measured).",
        f"err vs layer: max |row - this layer, eager| (tolerance "
        f"{report['tolerance']:.1e}; rows above it are not timed). err vs "
        "f64: against a float64 numpy evaluation of the convention; this "
        f"layer, eager, vs it: {report['reference_error']:.1e}.",
        f"{machine['cpu_model']}, {machine['cpu_count']} CPUs "
        f"({machine['cpus_usable']} usable); python {machine['python']}, "
        f"keras {versions['keras']}, {config['backend']} {backend_version}.",
    ]


def _scaling_table(report):
    size_result, grad = report["object_sizes"], report["gradient"]
    sizes = report["sizes"]
    headers = ["measure"] + [f"object {s}" for s in sizes] + ["ratio", "target"]
    body = []
    for mode, entry in size_result.items():
        body.append([f"this layer forward s, {mode}"]
                    + [_seconds(s) for s in entry["seconds"]]
                    + [_ratio(entry["ratio"]), f"<= {scaling.SIZE_TARGET}x"])
    points = grad["points"]
    for key, name in (("forward_s", "loss forward s"),
                      ("forward_backward_s", "loss forward+backward s")):
        body.append([f"{name}, {grad['mode']}"]
                    + [_seconds(p[key]) for p in points] + ["", ""])
    body.append([f"backward / forward, {grad['mode']}"]
                + [_ratio(p["ratio"]) for p in points]
                + [_ratio(max(p["ratio"] for p in points)),
                   f"<= {scaling.BACKWARD_TARGET}x"])
    return format_table(headers, body)


def _clean(value):
    """JSON-safe: NaN and infinities become null, numpy scalars floats."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------- main


def _main_table(args, config):
    case = _make_case(config)
    images, offsets = backends.to_tensor(case.images), backends.to_tensor(case.offsets)
    reference = backends.to_numpy(
        kernels.extract_patches_batched(images, offsets, case.patch_size)
    )
    float64 = peers.reference_patches(case.images, case.offsets, case.patch_size)
    tolerance = _TOLERANCE * float(np.max(np.abs(case.images)))
    rows = rows_lib.build_rows(case, args.rows, _settings(args), reference)
    runnable = sum(1 for row in rows if not row.skip)
    steps = runnable * (args.repeats + (args.memory == "subprocess"))
    progress = timing.Progress(steps, enabled=not args.no_progress)
    results = [
        run_row(row, reference, float64, tolerance, args.repeats, progress)
        for row in rows
    ]
    if args.memory == "subprocess":
        method = _measure_memory(args, results, progress)
    else:
        method = "not measured (--memory analytic)"
    progress.close()
    _add_ratios(results)
    return {
        "rows": results,
        "memory_method": method,
        "output_bytes": case.output_bytes,
        "tolerance": tolerance,
        "reference_error": float(np.max(np.abs(reference - float64), initial=0)),
    }


def _scaling_report(args, config):
    sizes = (48, 96) if args.quick else (392, 2048)
    progress = timing.Progress(0, enabled=not args.no_progress)
    report = {
        "sizes": list(sizes),
        "object_sizes": scaling.object_size_scaling(config, sizes, args.repeats, progress),
        "gradient": scaling.gradient_cost(config, sizes, args.repeats, progress),
    }
    progress.close()
    return report


def _sweep(args, config):
    g = args.groups
    group_counts = sorted({max(1, g // 16), max(1, g // 4), g, 4 * g})
    extents = (32, 48, 96) if args.quick else (128, 392, 1024, 2048)
    backends.quiet_retracing()
    progress = timing.Progress(0, enabled=not args.no_progress)
    result = scaling.sweep(config, group_counts, extents, min(args.repeats, 2),
                           _settings(args), progress)
    progress.close()
    return result


def main(argv=None):
    """Run the benchmark; print the table; return the exit status."""
    args = parse_args(argv)
    backends.require(args.backend)
    backends.prepare(args.dtype)
    if args.memory_probe:
        return _memory_probe(args)
    config = _config(args)
    report = {"config": config, "machine": timing.machine_info()}
    report.update(_main_table(args, config))
    print(format_table(_HEADERS, [_table_row(r) for r in report["rows"]]))
    for note in _notes(report):
        print("  " + note)
    sys.stdout.flush()
    if args.scaling:
        report["scaling"] = _scaling_report(args, config)
        print()
        print(_scaling_table(report["scaling"]))
    if args.plot:
        report["sweep"] = _sweep(args, config)
        scaling.plot(report["sweep"], args.plot,
                     f"{config['backend']}, N={config['patch_size']}, "
                     f"{config['dtype']}, {timing.machine_info()['cpu_model']}")
        print(f"\nplot written to {args.plot}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(_clean(report), handle, indent=1)
    return 0
