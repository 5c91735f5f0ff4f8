"""How this layer's time scales: with the object's size, with backprop, and
(for ``--plot``) against its peers over K and over the object's size."""

from ptycho_layers.functional import extract_patches
from benchmarks import backends
from benchmarks import case as case_lib
from benchmarks import rows as rows_lib
from benchmarks import timing

__all__ = [
    "SIZE_TARGET",
    "BACKWARD_TARGET",
    "object_size_scaling",
    "gradient_cost",
    "sweep",
    "plot",
]

# Targets: the vectorized kernel's time should not depend on the object's
# size, and a backward pass should cost at most a few forward passes.
SIZE_TARGET = 1.2
BACKWARD_TARGET = 3.0

SWEEP_IDS = (
    "layer_eager", "layer_graph", "layer_xla", "crop_and_resize", "tiled", "legacy"
)


def _layer_modes():
    return [m for m in ("eager", "graph", "xla") if not backends.mode_unavailable(m)]


def object_size_scaling(config, sizes, repeats, progress=None, modes=None):
    """This layer's forward time at each object size, for every mode, the
    sizes timed in turns (see `timing.time_interleaved`).

    Args:
        config: dict with groups, gridsize, patch_size, dtype.
        sizes: object sizes (square), e.g. (392, 2048).
        repeats: timed calls per point.
        modes: compile modes to time (default: all this backend has).

    Returns:
        {mode label: {"seconds": [median per size], "ratio": last/first}}.
    """
    result = {}
    cases = {}
    for extent in sizes:
        case = _case(config, (extent, extent))
        cases[extent] = (backends.to_tensor(case.images), backends.to_tensor(case.offsets))
    for mode in modes or _layer_modes():
        size = config["patch_size"]
        fn = backends.compile_fn(
            lambda im, off: extract_patches(im, off, size), mode
        )
        if progress:
            progress.start(f"scaling: {backends.mode_label(mode)}, objects {sizes}")
        calls = {
            extent: (lambda args=args: fn(*args)) for extent, args in cases.items()
        }
        times = timing.time_interleaved(calls, repeats, progress=progress)
        seconds = [timing.median(times[extent]) for extent in sizes]
        result[backends.mode_label(mode)] = {
            "seconds": seconds,
            "ratio": seconds[-1] / seconds[0],
        }
    return result


def _loss(weights, dtype):
    """sum(real(conj(w) * patches)): a real scalar that touches every patch
    value, for a fixed random w of the output's shape."""
    from keras import ops

    def loss(images, offsets):
        patches = extract_patches(images, offsets, weights.shape[1])
        w = ops.cast(backends.to_tensor(weights), dtype)
        if dtype in ("complex64", "complex128"):
            return ops.sum(ops.real(ops.conj(w) * patches))
        return ops.sum(w * patches)

    return loss


def gradient_cost(config, sizes, repeats, progress=None):
    """Forward (loss) and forward+backward (loss and d loss / d object)
    times at each object size, in the backend's traced mode.

    Returns:
        {"mode": label, "points": [{"object", "forward_s",
        "forward_backward_s", "backward_s", "ratio"}]}, ratio being
        backward / forward.
    """
    import numpy as np

    mode = backends.peer_mode()
    points = []
    for extent in sizes:
        if progress:
            progress.start(f"gradient: object {extent}")
        case = _case(config, (extent, extent))
        rng = np.random.default_rng(1)
        size = case.patch_size
        shape = (case.offsets.shape[0], size, size, case.offsets.shape[1])
        loss = _loss(random_weights(rng, shape, case.dtype), case.dtype)
        inputs = (backends.to_tensor(case.images), backends.to_tensor(case.offsets))
        points.append(time_gradient(loss, inputs, mode, extent, repeats, progress))
    return {"mode": backends.mode_label(mode), "points": points}


def random_weights(rng, shape, dtype):
    """Standard normal weights of `shape` in `dtype` (complex when it is)."""
    import numpy as np

    weights = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    if np.dtype(dtype).kind != "c":
        weights = weights.real
    return weights.astype(dtype)


def time_gradient(loss, inputs, mode, extent, repeats, progress=None):
    """The loss's forward and forward+backward times on `inputs`, in turns.

    Returns:
        {"object": extent, "forward_s", "forward_backward_s",
        "backward_s", "ratio"}, ratio being backward / forward.
    """
    forward = backends.compile_fn(loss, mode)
    both = backends.value_and_grad(loss, mode)
    times = timing.time_interleaved(
        {"forward": lambda: forward(*inputs), "both": lambda: both(*inputs)},
        repeats,
        progress=progress,
    )
    t_forward = timing.median(times["forward"])
    t_both = timing.median(times["both"])
    return {
        "object": extent,
        "forward_s": t_forward,
        "forward_backward_s": t_both,
        "backward_s": t_both - t_forward,
        "ratio": (t_both - t_forward) / t_forward,
    }


def _case(config, shape, groups=None):
    """The configured case with an object of `shape` (H, W) and, if given,
    `groups` rows of offsets."""
    return case_lib.make_case(
        groups or config["groups"],
        config["gridsize"],
        config["patch_size"],
        shape[0],
        shape[1],
        config["dtype"],
        config["seed"],
    )


def sweep(config, group_counts, extents, repeats, settings, progress=None,
          ids=SWEEP_IDS, build=None):
    """Median seconds (scaled to all K) of this layer and its peers over
    K (at the configured object) and over square object sizes (at the
    configured K). Outputs are not re-checked here: the main table checks
    every row on the configured case. `build(case, ids, settings)` makes
    the rows (default: extraction's, `rows.build_rows`).

    Returns:
        {"k": {row id: [[K, s], ...]}, "object": {row id: [[size, s], ...]},
        "labels": {row id: label}}.
    """
    result = {"k": {}, "object": {}, "labels": {}}
    configured = (config["height"], config["width"])
    points = [("k", g, configured) for g in group_counts]
    points += [("object", config["groups"], (e, e)) for e in extents]
    for axis, groups, shape in points:
        case = _case(config, shape, groups)
        for row in (build or rows_lib.build_rows)(case, ids, settings):
            if row.skip:
                continue
            x = case.count if axis == "k" else shape[0]
            if progress:
                progress.start(f"sweep {axis}={x}: {row.id}")
            try:
                seconds = timing.median(timing.time_calls(row.fn, repeats, progress=progress))
            except Exception:  # e.g. torch.compile without a compiler: no point
                continue
            result[axis].setdefault(row.id, []).append([x, seconds * row.scale])
            result["labels"].setdefault(row.id, row.label.split(" (")[0])
    return result


def plot(result, path, title):
    """Save time against K and against object size, log-log, to `path`."""
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit(
            "--plot needs matplotlib: pip install 'ptycho_layers[plot]'"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis, xlabel in (
        (axes[0], "k", "K (patches)"),
        (axes[1], "object", "object size (pixels per side)"),
    ):
        ticks = set()
        for row_id, series in result[axis].items():
            xs, ys = zip(*series)
            ticks.update(xs)
            ax.loglog(xs, ys, "o-", label=_sweep_label(row_id, result))
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


def _sweep_label(row_id, result):
    if row_id in rows_lib.LAYER_MODES:
        return "this layer, " + backends.mode_label(rows_lib.LAYER_MODES[row_id])
    return result["labels"].get(row_id, row_id)
