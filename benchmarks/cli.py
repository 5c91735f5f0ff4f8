"""Command line of ``python -m benchmarks``: its arguments, and `main`,
which runs the table and the reports, prints them and writes the JSON
file. ``--operator`` picks the table: extraction (the default) or
placement."""

import argparse
import json
import sys

from ptycho_layers import memory
from benchmarks import backends
from benchmarks import case as case_lib
from benchmarks import first_call
from benchmarks import measure
from benchmarks import peers
from benchmarks import report as report_lib
from benchmarks import rows
from benchmarks import scaling
from benchmarks import timing
from benchmarks.extract import EXTRACT
from benchmarks.place import PLACE

__all__ = ["OPERATORS", "main", "parse_args"]

OPERATORS = {op.name: op for op in (EXTRACT, PLACE)}
_DEFAULTS = {"groups": 256, "gridsize": 2, "patch_size": 64, "object_size": "392",
             "repeats": 5, "memory": "subprocess"}
# --quick: a tiny case for smoke tests; peak memory only estimated (each
# measured row re-imports the backend in a subprocess).
_QUICK = {"groups": 4, "gridsize": 2, "patch_size": 16, "object_size": "48",
          "repeats": 2, "memory": "analytic"}
_LEGACY_PATCHES = 32


def _object_size(text):
    """(H, W) from "N" or "HxW"."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        shape = ()
    shape = shape * 2 if len(shape) == 1 else shape
    if len(shape) != 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return shape


def _row_ids(text):
    ids = [i.strip() for i in text.split(",") if i.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("expected comma-separated row ids")
    return ids


def parse_args(argv=None):
    """The parsed arguments, with the defaults (or --quick's) filled in."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time patch extraction (or placement): this layer against its peers.",
    )
    add = parser.add_argument
    add("--operator", choices=sorted(OPERATORS), default="extract",
        help="extract: extract_patches (default); place: its adjoint, "
        "place_patches, placing the case's patches into the object")
    add("--groups", type=int, help="B, rows of offsets (default 256)")
    add("--gridsize", type=int, help="patches per group = gridsize**2 (default 2)")
    add("--patch-size", type=int, help="N (default 64)")
    add("--object-size", help="object size, N or HxW (default 392)")
    add("--dtype", default="complex64",
        choices=["complex64", "complex128", "float32", "float64"])
    add("--interpolation", default="bilinear", choices=list(peers.KERNELS),
        help="the kernel the layer rows run and are checked against (default "
        "bilinear; bilinear-only peers are n/a for the others)")
    add("--fourier-margin", type=int, default=1,
        help="m, the Fourier kernel's margin (default 1)")
    add("--repeats", type=int, help="timed calls per row (default 5)")
    add("--quick", action="store_true",
        help="tiny case, 2 repeats, estimated memory (smoke test)")
    add("--backend", choices=["tensorflow", "jax", "torch"],
        help="Keras backend (python -m benchmarks sets KERAS_BACKEND from it)")
    add("--rows", type=_row_ids, help="comma-separated rows; " + "; ".join(
        f"{op.name}: {','.join(op.row_ids)}" for op in OPERATORS.values()))
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
    add("--first-call", action="store_true",
        help="instead of the table: each public function's first call in a fresh "
        "process, a new batch size, and the memory kept per compiled shape, "
        "against PtychoPINN's algorithm's first call (benchmarks/first_call.py)")
    add("--compilation-cache", metavar="DIR",
        help="--first-call: each fresh process first calls "
        "ptycho_layers.persistent_cache(DIR) (run twice: the second run loads "
        "what the first compiled)")
    add("--no-ptychopinn", action="store_true",
        help="--first-call: leave out PtychoPINN's algorithm's rows (TensorFlow; "
        "its per-patch loop takes minutes)")
    add("--shapes", type=int, default=10,
        help="--first-call: new batch sizes the memory kept per shape is "
        "averaged over (default 10)")
    add("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (_QUICK if args.quick else _DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.object_shape = _object_size(args.object_size)
    except argparse.ArgumentTypeError as error:
        parser.error(f"argument --object-size: {error}")
    if min(args.groups, args.gridsize, args.patch_size, args.repeats,
           args.fourier_margin) < 1:
        parser.error("--groups, --gridsize, --patch-size, --repeats and --fourier-margin "
                     "must be >= 1")
    known = OPERATORS[args.operator].row_ids
    args.rows = list(known) if args.rows is None else args.rows
    unknown = sorted(set(args.rows) - set(known))
    if unknown:
        parser.error(f"argument --rows: unknown rows {unknown} for --operator "
                     f"{args.operator}; choose from {', '.join(known)}")
    return args


def _config(args):
    height, width = args.object_shape
    return {
        "groups": args.groups, "gridsize": args.gridsize,
        "patches": args.groups * args.gridsize**2, "patch_size": args.patch_size,
        "height": height, "width": width, "dtype": args.dtype,
        "repeats": args.repeats, "seed": args.seed, "backend": backends.name(),
        "memory": args.memory, "operator": args.operator,
        "interpolation": args.interpolation, "fourier_margin": args.fourier_margin,
        "compilation_cache": args.compilation_cache,
    }


def _settings(args):
    settings = rows.RowSettings(legacy_patches=args.legacy_patches,
                                tiled_budget=args.tiled_budget_mb << 20)
    if backends.name() == "torch" and args.operator == "extract":
        # Keras's torch affine_transform samples each image through a
        # Python-level map_coordinates, two orders of magnitude slower than
        # TensorFlow's kernel: both translate peers time a few patches.
        settings.tiled_full_bytes = 0
        if args.legacy_patches == _LEGACY_PATCHES:
            settings.legacy_patches = 4
    return settings


def _sweep(op, args, config):
    g = args.groups
    group_counts = sorted({max(1, g // 16), max(1, g // 4), g, 4 * g})
    extents = (32, 48, 96) if args.quick else (128, 392, 1024, 2048)
    backends.quiet_retracing()
    progress = timing.Progress(0, enabled=not args.no_progress)
    result = scaling.sweep(op, config, group_counts, extents, min(args.repeats, 2),
                           _settings(args), progress)
    progress.close()
    return result


def _first_call(args, config):
    """The first-call report (``--first-call``): printed, and in the JSON."""
    progress = timing.Progress(2 * len(first_call.FUNCTIONS), enabled=not args.no_progress)
    legacy = False if args.no_ptychopinn else None
    result = first_call.report(config, shapes=args.shapes, legacy=legacy, progress=progress)
    progress.close()
    print(first_call.format_report(result, config["backend"]))
    if args.json:
        report = {"config": config, "machine": timing.machine_info(), "first_call": result}
        with open(args.json, "w") as handle:
            json.dump(report_lib.json_safe(report), handle, indent=1)
    return 0


def main(argv=None):
    """Run the benchmark; print the table; return the exit status."""
    args = parse_args(argv)
    op = OPERATORS[args.operator]
    backends.require(args.backend)
    if args.reuse_freed_memory:
        memory.reuse_freed_memory()
    backends.prepare(args.dtype)
    config = _config(args)
    if args.first_call:
        return _first_call(args, config)
    if args.memory_probe:
        # Hidden mode: one row's peak memory, for `measure.measure_memory`.
        (row,) = op.build_rows(case_lib.from_config(config), args.rows[:1], _settings(args))
        return measure.memory_probe(row)
    report = {"config": config, "machine": timing.machine_info()}
    report.update(measure.run_table(op, args, case_lib.from_config(config), _settings(args)))
    print(report_lib.format_table(
        report_lib.HEADERS, [report_lib.table_row(r) for r in report["rows"]]
    ))
    for note in report_lib.notes(op, report):
        print("  " + note)
    sys.stdout.flush()
    if args.scaling:
        progress = timing.Progress(0, enabled=not args.no_progress)
        sizes = (48, 96) if args.quick else (392, 2048)
        report["scaling"] = scaling.report(op, config, sizes, args.repeats, progress)
        progress.close()
        print()
        print(report_lib.scaling_table(op, report["scaling"]))
    if args.plot:
        report["sweep"] = _sweep(op, args, config)
        operator = "placement, " if op is PLACE else ""
        scaling.plot(report["sweep"], args.plot,
                     f"{operator}{config['backend']}, N={config['patch_size']}, "
                     f"{config['dtype']}, {report['machine']['cpu_model']}")
        print(f"\nplot written to {args.plot}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report_lib.json_safe(report), handle, indent=1)
    return 0
