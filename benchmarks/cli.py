"""Command line of ``python -m benchmarks``: its arguments, and
``main``, which runs the table and the reports, prints them and writes the
JSON file. ``--operator`` picks the table: extraction (the default) or
placement."""

import argparse
import json
import sys

from ptycho_layers import memory
from benchmarks import backends
from benchmarks import case as case_lib
from benchmarks import measure
from benchmarks import placement_scaling
from benchmarks import report as report_lib
from benchmarks import rows as rows_lib
from benchmarks import scaling
from benchmarks import timing

__all__ = ["main", "parse_args"]

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
    if not ids:
        raise argparse.ArgumentTypeError("expected comma-separated row ids")
    return ids


def _check_rows(parser, args):
    """Default `args.rows` to every row of the operator's table; reject ids
    that are not in it."""
    known = measure.OPERATORS[args.operator].ROW_IDS
    if args.rows is None:
        args.rows = list(known)
    unknown = sorted(set(args.rows) - set(known))
    if unknown:
        parser.error(
            f"argument --rows: unknown rows {unknown} for --operator "
            f"{args.operator}; choose from {', '.join(known)}"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time patch extraction (or placement): this layer "
        "against its peers.",
    )
    add = parser.add_argument
    add("--operator", choices=sorted(measure.OPERATORS), default="extract",
        help="extract: extract_patches (default); place: its adjoint, "
        "place_patches, placing the case's patches into the object")
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
    add("--rows", type=_row_ids,
        help="comma-separated rows; extract: " + ",".join(rows_lib.ROW_IDS)
        + "; place: " + ",".join(measure.OPERATORS["place"].ROW_IDS))
    add("--json", metavar="FILE", help="write every number and the machine to FILE")
    add("--plot", metavar="FILE.png",
        help="sweep K and object size; plot time (needs matplotlib)")
    add("--scaling", action="store_true",
        help="also report object 392 vs 2048 and backward vs forward "
        "(place: also with the zeroing of the object subtracted)")
    add("--memory", choices=["subprocess", "analytic"],
        help="measure peak RSS per row in a fresh subprocess (default; "
        "--quick: analytic), or only give the analytic estimate")
    add("--legacy-patches", type=int, default=_LEGACY_PATCHES,
        help="patches the legacy loop (and the tiled batch, when K padded "
        "objects exceed 2 GB) time when K is larger (default 32; 4 on torch)")
    add("--tiled-budget-mb", type=int, default=1024,
        help="memory per chunk of the tiled batch, MB (default 1024)")
    add("--reuse-freed-memory", action="store_true",
        help="first call ptycho_layers.reuse_freed_memory(): glibc keeps "
        "freed buffers for reuse, so fresh outputs do not fault (JAX)")
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
    _check_rows(parser, args)
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
        "operator": args.operator,
    }


def _settings(args):
    settings = rows_lib.RowSettings(
        legacy_patches=args.legacy_patches,
        tiled_budget=args.tiled_budget_mb << 20,
    )
    if backends.name() == "torch" and args.operator == "extract":
        # Keras's torch affine_transform samples each image through a
        # Python-level map_coordinates, two orders of magnitude slower than
        # TensorFlow's kernel: both translate peers time a few patches.
        settings.tiled_full_bytes = 0
        if args.legacy_patches == _LEGACY_PATCHES:
            settings.legacy_patches = 4
    return settings


def _make_case(config):
    return case_lib.make_case(
        config["groups"], config["gridsize"], config["patch_size"],
        config["height"], config["width"], config["dtype"], config["seed"],
    )


def _memory_probe(args):
    """Hidden mode (``--memory-probe``): one row's peak memory, for
    `measure.measure_memory` in the parent process."""
    case = _make_case(_config(args))
    (row,) = measure.build_rows(args.operator, case, args.rows[:1], _settings(args))
    return measure.memory_probe(row)


# ---------------------------------------------------------------- main


def _scaling_report(args, config):
    sizes = (48, 96) if args.quick else (392, 2048)
    progress = timing.Progress(0, enabled=not args.no_progress)
    report = {"operator": args.operator, "sizes": list(sizes)}
    if args.operator == "place":
        report.update(placement_scaling.report(config, sizes, args.repeats, progress))
    else:
        report["object_sizes"] = scaling.object_size_scaling(
            config, sizes, args.repeats, progress
        )
        report["gradient"] = scaling.gradient_cost(config, sizes, args.repeats, progress)
    progress.close()
    return report


def _sweep(args, config):
    g = args.groups
    group_counts = sorted({max(1, g // 16), max(1, g // 4), g, 4 * g})
    extents = (32, 48, 96) if args.quick else (128, 392, 1024, 2048)
    backends.quiet_retracing()
    progress = timing.Progress(0, enabled=not args.no_progress)
    if args.operator == "place":
        options = {"ids": placement_scaling.SWEEP_IDS,
                   "build": placement_scaling.sweep_rows}
    else:
        options = {}
    result = scaling.sweep(config, group_counts, extents, min(args.repeats, 2),
                           _settings(args), progress, **options)
    progress.close()
    return result


def main(argv=None):
    """Run the benchmark; print the table; return the exit status."""
    args = parse_args(argv)
    backends.require(args.backend)
    if args.reuse_freed_memory:
        memory.reuse_freed_memory()
    backends.prepare(args.dtype)
    if args.memory_probe:
        return _memory_probe(args)
    config = _config(args)
    report = {"config": config, "machine": timing.machine_info()}
    report.update(measure.run_table(args, _make_case(config), _settings(args)))
    print(report_lib.format_table(
        report_lib.HEADERS, [report_lib.table_row(r) for r in report["rows"]]
    ))
    for note in report_lib.notes(report):
        print("  " + note)
    sys.stdout.flush()
    if args.scaling:
        report["scaling"] = _scaling_report(args, config)
        print()
        print(report_lib.scaling_table(report["scaling"]))
    if args.plot:
        report["sweep"] = _sweep(args, config)
        operator = "placement, " if args.operator == "place" else ""
        scaling.plot(report["sweep"], args.plot,
                     f"{operator}{config['backend']}, N={config['patch_size']}, "
                     f"{config['dtype']}, {timing.machine_info()['cpu_model']}")
        print(f"\nplot written to {args.plot}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report_lib.json_safe(report), handle, indent=1)
    return 0
