"""What the benchmark prints and writes: the table, its notes, the scaling
table, and JSON-safe values for ``--json``."""

import math

import numpy as np

from benchmarks import scaling

__all__ = [
    "HEADERS",
    "format_table",
    "table_row",
    "notes",
    "scaling_table",
    "json_safe",
]


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


HEADERS = ["row", "median s", "patches/s", "vs layer best", "vs copy",
            "peak RSS", "XLA temp", "est. mem", "err vs layer", "err vs f64"]


def table_row(result):
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


def notes(report):
    config, machine = report["config"], report["machine"]
    versions = machine["versions"]
    backend_version = versions.get(
        {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[config["backend"]]
    )
    place = config.get("operator") == "place"
    lines = _placement_notes(report) if place else _extraction_notes(report)
    settings = machine.get("allocator_settings") or {}
    allocator = "; " + " ".join(f"{k}={v}" for k, v in settings.items()) if settings else ""
    return lines + [
        f"{machine['cpu_model']}, {machine['cpu_count']} CPUs "
        f"({machine['cpus_usable']} usable); python {machine['python']}, "
        f"keras {versions['keras']}, {config['backend']} {backend_version}{allocator}.",
    ]


def _timing_note(config):
    return (f"median of {config['repeats']} calls after warm-up calls (at least "
            "one, for 0.5 s); scaled rows time a subset and multiply by K / subset.")


def _extraction_notes(report):
    config = report["config"]
    return [
        f"K = {config['groups']} x {config['gridsize']}**2 = {config['patches']} "
        f"patches of {config['patch_size']}x{config['patch_size']} from a "
        f"{config['height']}x{config['width']} {config['dtype']} object; offsets "
        f"uniform over the object (seed {config['seed']}); " + _timing_note(config),
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
    ]


def _placement_notes(report):
    config = report["config"]
    size = config["patch_size"]
    return [
        f"K = {config['groups']} x {config['gridsize']}**2 = {config['patches']} "
        f"patches of {size}x{size} (the float64 reference extraction of the "
        f"case) placed into one {config['height']}x{config['width']} "
        f"{config['dtype']} object; offsets uniform over the object (seed "
        f"{config['seed']}); " + _timing_note(config),
        "vs layer best: median / fastest place_patches row; vs copy: median / "
        "np.copyto of a patches-sized array (the memory-bandwidth floor).",
        f"peak RSS: {report['memory_method']}. XLA temp: place_patches's "
        "working memory beyond its inputs and output, from XLA's buffer "
        "assignment of the compiled forward pass (patches: "
        f"{_bytes(report['patches_bytes'])}, target <= 1x; object: "
        f"{_bytes(report['output_bytes'])}). est. mem: analytic estimate of "
        "each row's working memory (computed, not measured).",
        "err vs layer: max |row - place_patches, eager| (tolerance "
        f"{report['tolerance']:.1e}, 1e-3 of the placed object's largest "
        "value; rows above it are not timed): a scaled row on its subset's "
        "placement, reassemble against reassemble eager, copies against "
        "their source, zeroing against zeros. err vs f64: against a float64 "
        "numpy placement (np.add.at); place_patches, eager, vs it: "
        f"{report['reference_error']:.1e}.",
        "object zeroing: the cost of the fresh object every placement fills; "
        "--scaling reports placement at 392 vs 2048 with it subtracted.",
    ]


def scaling_table(report):
    size_result, grad = report["object_sizes"], report["gradient"]
    sizes = report["sizes"]
    place = report.get("operator") == "place"
    name = "place_patches s" if place else "this layer forward s"
    headers = ["measure"] + [f"object {s}" for s in sizes] + ["ratio", "target"]
    size_target = f"<= {scaling.SIZE_TARGET}x"
    body = []
    for mode, entry in size_result.items():
        if "failed" in entry:
            body.append([f"{name}, {mode}", entry["failed"]]
                        + ["-"] * (len(sizes) - 1) + ["-", ""])
            continue
        body.append([f"{name}, {mode}"]
                    + [_seconds(s) for s in entry["seconds"]]
                    + [_ratio(entry["ratio"]), "" if place else size_target])
    if place:
        zeroing = report["zeroing"]
        body.append([f"object zeroing s, {zeroing['label']}"]
                    + [_seconds(s) for s in zeroing["seconds"]]
                    + [_ratio(zeroing["ratio"]), ""])
        for mode, entry in size_result.items():
            if "failed" not in entry:
                body.append([f"place_patches - zeroing s, {mode}"]
                            + [_seconds(s) for s in entry["net_seconds"]]
                            + [_ratio(entry["net_ratio"]), size_target])
    points = grad["points"]
    wrt = " (d/d patches)" if place else ""
    for key, label in (("forward_s", "loss forward s"),
                       ("forward_backward_s", f"loss forward+backward{wrt} s")):
        body.append([f"{label}, {grad['mode']}"]
                    + [_seconds(p[key]) for p in points] + ["", ""])
    body.append([f"backward / forward, {grad['mode']}"]
                + [_ratio(p["ratio"]) for p in points]
                + [_ratio(max(p["ratio"] for p in points)),
                   f"<= {scaling.BACKWARD_TARGET}x"])
    return format_table(headers, body)


def json_safe(value):
    """JSON-safe: NaN and infinities become null, numpy scalars floats."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
