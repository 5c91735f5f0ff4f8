"""How the layer's time scales, for either operator: with the object's
size, with backprop, and (``--plot``) against its peers over K and over
the object's size.

Placement writes into a fresh zero object, so its time has a part that
grows with H*W whatever the patches: its object-size report times that
zeroing alongside, at each size, and gives the layer's time without it.
"""

import statistics

import numpy as np
from keras import ops

from benchmarks import backends
from benchmarks import case as case_lib
from benchmarks import measure
from benchmarks import timing

__all__ = ["SIZE_TARGET", "BACKWARD_TARGET", "report", "object_size_scaling",
           "gradient_cost", "sweep", "plot"]

# Targets: the vectorized kernel's time should not depend on the object's
# size, and a backward pass should cost at most a few forward passes.
SIZE_TARGET = 1.2
BACKWARD_TARGET = 3.0


def report(op, config, sizes, repeats, progress=None):
    """The ``--scaling`` report: object sizes, zeroing (placement), gradient."""
    per_mode, zeroing = object_size_scaling(op, config, sizes, repeats, progress)
    result = {"operator": op.name, "sizes": list(sizes), "object_sizes": per_mode}
    if zeroing is not None:
        result["zeroing"] = zeroing
    result["gradient"] = gradient_cost(op, config, sizes, repeats, progress)
    return result


def object_size_scaling(op, config, sizes, repeats, progress=None, modes=None):
    """The layer's time at each square object size in `sizes`, for every
    compile mode in `modes` (default: all this backend has), all timed in
    turns (`timing.time_interleaved`); for placement, with the zeroing of
    an object of each size.

    Returns:
        ({mode label: {"seconds", "ratio"} (placement: and "net_seconds",
        "net_ratio", less the zeroing) or {"failed": reason}}, zeroing:
        {"label", "seconds", "ratio"}, or None for extraction).
    """
    cases = {extent: case_lib.from_config(config, (extent, extent)) for extent in sizes}
    modes = modes or [m for m in ("eager", "graph", "xla") if not backends.mode_unavailable(m)]
    calls, result = {}, {}
    for mode in modes:
        label = backends.mode_label(mode)
        for extent, case in cases.items():
            fn = backends.compile_fn(op.call(case), mode)
            calls[(label, extent)] = lambda fn=fn, args=op.inputs(case): fn(*args)
        try:  # e.g. torch.compile without a working compiler
            backends.block(calls[(label, sizes[0])]())
        except Exception as error:
            result[label] = {"failed": "n/a: " + measure.short_error(error)}
            for extent in sizes:
                del calls[(label, extent)]
    zeroing = op.zeroes_object
    if zeroing:
        for extent in sizes:
            shape = (1, extent, extent)
            calls[("zeros", extent)] = lambda shape=shape: ops.zeros(shape, config["dtype"])
    if progress:
        progress.start(f"scaling: {op.layer_label}, objects {sizes}")
    times = timing.time_interleaved(calls, repeats, progress=progress)
    medians = {key: statistics.median(value) for key, value in times.items()}
    zeros = [medians[("zeros", extent)] for extent in sizes] if zeroing else None
    for label in dict.fromkeys(key[0] for key in calls if key[0] != "zeros"):
        seconds = [medians[(label, extent)] for extent in sizes]
        result[label] = {"seconds": seconds, "ratio": seconds[-1] / seconds[0]}
        if zeroing:
            net = [s - z for s, z in zip(seconds, zeros)]
            result[label].update(net_seconds=net,
                                 net_ratio=net[-1] / net[0] if net[0] > 0 else None)
    result = {label: result[label] for label in map(backends.mode_label, modes)}
    if not zeroing:
        return result, None
    return result, {"label": f"keras.ops.zeros((1, H, W), {config['dtype']})",
                    "seconds": zeros, "ratio": zeros[-1] / zeros[0]}


def random_weights(rng, shape, dtype):
    """Standard normal weights of `shape` in `dtype` (complex when it is)."""
    weights = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    if np.dtype(dtype).kind != "c":
        weights = weights.real
    return weights.astype(dtype)


def gradient_cost(op, config, sizes, repeats, progress=None):
    """Forward and forward+backward times of a loss over the layer's
    output, sum(real(conj(w) * output)) for a fixed random w, at each
    object size, in the backend's traced mode; the gradient is taken with
    respect to the layer's input (the object, or the patches).

    Returns:
        {"mode": label, "points": [{"object", "forward_s",
        "forward_backward_s", "backward_s", "ratio"}]}, ratio being
        backward / forward.
    """
    mode = backends.peer_mode()
    points = []
    for extent in sizes:
        if progress:
            progress.start(f"gradient: object {extent}")
        case = case_lib.from_config(config, (extent, extent))
        weights = random_weights(np.random.default_rng(1), op.output_shape(case), case.dtype)
        layer = op.call(case)

        def loss(x, offsets, layer=layer, weights=weights, dtype=case.dtype):
            output = layer(x, offsets)
            w = ops.cast(backends.to_tensor(weights), dtype)
            if dtype in ("complex64", "complex128"):
                return ops.sum(ops.real(ops.conj(w) * output))
            return ops.sum(w * output)

        inputs = op.inputs(case)
        forward = backends.compile_fn(loss, mode)
        both = backends.value_and_grad(loss, mode)
        times = timing.time_interleaved(
            {"forward": lambda: forward(*inputs), "both": lambda: both(*inputs)},
            repeats, progress=progress,
        )
        t_forward = statistics.median(times["forward"])
        t_both = statistics.median(times["both"])
        points.append({
            "object": extent, "forward_s": t_forward, "forward_backward_s": t_both,
            "backward_s": t_both - t_forward, "ratio": (t_both - t_forward) / t_forward,
        })
    return {"mode": backends.mode_label(mode), "points": points}


def sweep(op, config, group_counts, extents, repeats, settings, progress=None, ids=None):
    """Median seconds (scaled to all K) of the rows `ids` (default: the
    operator's sweep rows) over K (at the configured object) and over
    square object sizes (at the configured K). Outputs are not re-checked
    here: the main table checks every row on the configured case.

    Returns:
        {"k": {row id: [[K, s], ...]}, "object": {row id: [[size, s], ...]},
        "labels": {row id: label}}.
    """
    result = {"k": {}, "object": {}, "labels": {}}
    configured = (config["height"], config["width"])
    points = [("k", g, configured) for g in group_counts]
    points += [("object", config["groups"], (e, e)) for e in extents]
    for axis, groups, shape in points:
        case = case_lib.from_config(config, shape, groups)
        for row in op.build_rows(case, ids or op.sweep_ids, settings):
            if row.skip:
                continue
            x = case.count if axis == "k" else shape[0]
            if progress:
                progress.start(f"sweep {axis}={x}: {row.id}")
            try:
                seconds = statistics.median(timing.time_calls(row.fn, repeats, progress))
            except Exception:  # e.g. torch.compile without a compiler: no point
                continue
            result[axis].setdefault(row.id, []).append([x, seconds * row.scale])
            # A layer row's label is its mode; a peer's, its name.
            label = row.label if row.id in op.layer_modes else row.label.split(" (")[0]
            result["labels"].setdefault(row.id, label)
    return result


def plot(result, path, title):
    """Save time against K and against object size, log-log, to `path`."""
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit("--plot needs matplotlib: pip install 'ptycho_layers[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis, xlabel in ((axes[0], "k", "K (patches)"),
                             (axes[1], "object", "object size (pixels per side)")):
        ticks = set()
        for row_id, series in result[axis].items():
            xs, ys = zip(*series)
            ticks.update(xs)
            ax.loglog(xs, ys, "o-", label=result["labels"].get(row_id, row_id))
        # Label the measured sizes themselves, not powers of ten.
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds per call")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
