"""What the benchmark prints and writes: the table, its notes, the scaling
table, and JSON-safe values for ``--json``; one form for both operators,
named by the `rows.Operator` they are given."""

import math

import numpy as np

from benchmarks import scaling

__all__ = ["HEADERS", "format_table", "table_row", "notes", "scaling_table", "json_safe"]

HEADERS = ["row", "median s", "patches/s", "vs layer best", "vs copy",
           "peak RSS", "XLA temp", "est. mem", "err vs layer", "err vs f64"]


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


def table_row(result):
    """The cells of one row's result (`measure.run_row`)."""
    errors = [_error(result.get("max_error")), _error(result.get("max_error_f64"))]
    if result["status"] != "ok":
        return ([result["label"], result["reason"]] + ["-"] * 5
                + [_bytes(result.get("estimate_bytes"))] + errors)
    return [
        result["label"],
        _seconds(result["median_s"]),
        _rate(result["patches_per_s"]),
        _ratio(result["ratio_best_layer"]),
        _ratio(result["ratio_copy"]),
        _bytes(result.get("peak_rss_bytes")),
        _bytes(result.get("xla_temp_bytes")),
        _bytes(result.get("estimate_bytes")),
    ] + errors


def _kernel_words(config):
    """The case's interpolation kernel, as the notes name it."""
    interpolation = config.get("interpolation", "bilinear")
    if interpolation == "fourier":
        return f"Fourier kernel, margin {config.get('fourier_margin', 1)}"
    return f"{interpolation} kernel"


def notes(op, report):
    """The lines under the table."""
    config, machine = report["config"], report["machine"]
    size, layer = config["patch_size"], op.layer_label
    versions = machine["versions"]
    settings = machine.get("allocator_settings") or {}
    allocator = "; " + " ".join(f"{k}={v}" for k, v in settings.items()) if settings else ""
    return [
        f"K = {config['groups']} x {config['gridsize']}**2 = {config['patches']} "
        f"patches of {size}x{size} {op.case_words.format(**config)}, "
        f"{_kernel_words(config)}; offsets uniform over "
        f"the object (seed {config['seed']}); median of {config['repeats']} calls "
        "after warm-up calls (at least one, for 0.5 s), the rows' calls in "
        "turns (so a drift of the machine's speed affects all alike); scaled rows time a "
        "subset and multiply by K / subset.",
        f"vs layer best: median / fastest '{layer}' row; vs copy: median / "
        f"np.copyto of an array the size of the {op.copied} (the memory-bandwidth floor).",
        f"peak RSS: {report['memory_method']}. XLA temp: {layer}'s working "
        "memory beyond its inputs and output, from XLA's buffer assignment of "
        f"the compiled forward pass (output: {_bytes(report['output_bytes'])}; "
        f"patches: {_bytes(report['patches_bytes'])}). est. mem: analytic "
        "estimate of each row's working memory (computed, not measured).",
        f"err vs layer: max |row - {layer}, eager| (tolerance "
        f"{report['tolerance']:.1e}, 1e-3 of {op.scale_words}; rows above it are not "
        "timed); a scaled row is checked on its subset, a copy against its "
        f"source. err vs f64: against a float64 numpy {op.float64_words}; {layer}, "
        f"eager, vs it: {report['reference_error']:.1e}.",
        *op.extra_notes,
        f"{machine['cpu_model']}, {machine['cpu_count']} CPUs "
        f"({machine['cpus_usable']} usable); python {machine['python']}, "
        f"keras {versions['keras']}, {config['backend']} "
        f"{versions.get(config['backend'])}{allocator}.",
    ]


def scaling_table(op, report):
    """The ``--scaling`` report (`scaling.report`) as a table."""
    sizes, grad = report["sizes"], report["gradient"]
    zeroing = report.get("zeroing")
    name = f"{op.layer_label} forward s"
    headers = ["measure"] + [f"object {s}" for s in sizes] + ["ratio", "target"]
    # The target holds for the layer's own work: without the zeroing.
    target = f"<= {scaling.SIZE_TARGET}x"
    body = []
    for mode, entry in report["object_sizes"].items():
        if "failed" in entry:
            body.append([f"{name}, {mode}", entry["failed"]] + ["-"] * len(sizes) + [""])
            continue
        body.append([f"{name}, {mode}"] + [_seconds(s) for s in entry["seconds"]]
                    + [_ratio(entry["ratio"]), "" if zeroing else target])
    if zeroing:
        body.append([f"object zeroing s, {zeroing['label']}"]
                    + [_seconds(s) for s in zeroing["seconds"]]
                    + [_ratio(zeroing["ratio"]), ""])
        for mode, entry in report["object_sizes"].items():
            if "failed" not in entry:
                body.append([f"{op.layer_label} - zeroing s, {mode}"]
                            + [_seconds(s) for s in entry["net_seconds"]]
                            + [_ratio(entry["net_ratio"]), target])
    points = grad["points"]
    for key, label in (("forward_s", "loss forward s"),
                       ("forward_backward_s", f"loss forward+backward (d/d {op.wrt}) s")):
        body.append([f"{label}, {grad['mode']}"] + [_seconds(p[key]) for p in points] + ["", ""])
    body.append([f"backward / forward, {grad['mode']}"] + [_ratio(p["ratio"]) for p in points]
                + [_ratio(max(p["ratio"] for p in points)), f"<= {scaling.BACKWARD_TARGET}x"])
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
