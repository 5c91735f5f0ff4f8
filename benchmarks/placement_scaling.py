"""How placement's time scales (``--operator place --scaling``): with the
object's size, raw and with the zeroing of the object subtracted, and with
backprop (the gradient with respect to the patches).

Placement writes into a fresh zero object: its time has a part that grows
with H*W whatever the patches. `object_size_scaling` times that zeroing
alongside, at each object size, so the patches' own cost can be judged.
"""

import numpy as np
from keras import ops

from ptycho_layers.placement import place_patches
from benchmarks import backends
from benchmarks import case as case_lib
from benchmarks import placement_rows
from benchmarks import scaling
from benchmarks import timing

__all__ = [
    "SWEEP_IDS",
    "object_size_scaling",
    "gradient_cost",
    "report",
    "sweep_rows",
]

SWEEP_IDS = ("place_eager", "place_graph", "place_xla", "scatter_nd", "place_legacy")


def _case(config, extent):
    """The configured case with a square object of side `extent`."""
    return case_lib.make_case(
        config["groups"], config["gridsize"], config["patch_size"],
        extent, extent, config["dtype"], config["seed"],
    )


def _inputs(case):
    patches = placement_rows.case_patches(case)
    return backends.to_tensor(patches), backends.to_tensor(case.offsets)


def _modes():
    return [m for m in ("eager", "graph", "xla") if not backends.mode_unavailable(m)]


def _short(error):
    lines = str(error).strip().splitlines()
    return f"n/a: {type(error).__name__}: {lines[0][:100] if lines else ''}"


def object_size_scaling(config, sizes, repeats, progress=None, modes=None):
    """`place_patches` time at each object size for every mode, and the
    time to zero an object of each size, all timed in turns (see
    `timing.time_interleaved`).

    Args:
        config: dict with groups, gridsize, patch_size, dtype, seed.
        sizes: object sizes (square), e.g. (392, 2048).
        repeats: timed calls per point.
        modes: compile modes to time (default: all this backend has).

    Returns:
        ({mode label: {"seconds", "ratio", "net_seconds", "net_ratio"} or
        {"failed": reason}}, {"label", "seconds", "ratio"}): per mode, the
        median per size, last over first, and the same less the zeroing of
        that size; then the zeroing itself.
    """
    dtype = config["dtype"]
    inputs = {extent: _inputs(_case(config, extent)) for extent in sizes}
    calls, result = {}, {}
    for mode in modes or _modes():
        label = backends.mode_label(mode)
        for extent in sizes:
            fn = backends.compile_fn(
                lambda p, off, s=extent: place_patches(p, off, (s, s)), mode
            )
            calls[(label, extent)] = lambda fn=fn, args=inputs[extent]: fn(*args)
        try:  # e.g. torch.compile without a working compiler
            backends.block(calls[(label, sizes[0])]())
        except Exception as error:
            result[label] = {"failed": _short(error)}
            for extent in sizes:
                del calls[(label, extent)]
    for extent in sizes:
        shape = (1, extent, extent)
        calls[("zeros", extent)] = lambda shape=shape: ops.zeros(shape, dtype)
    if progress:
        progress.start(f"scaling: place_patches and zeroing, objects {sizes}")
    times = timing.time_interleaved(calls, repeats, progress=progress)
    medians = {key: timing.median(value) for key, value in times.items()}
    zeros = [medians[("zeros", extent)] for extent in sizes]
    for label in {key[0] for key in calls} - {"zeros"}:
        seconds = [medians[(label, extent)] for extent in sizes]
        net = [s - z for s, z in zip(seconds, zeros)]
        result[label] = {
            "seconds": seconds,
            "ratio": seconds[-1] / seconds[0],
            "net_seconds": net,
            "net_ratio": net[-1] / net[0] if net[0] > 0 else None,
        }
    order = [backends.mode_label(m) for m in modes or _modes()]
    result = {label: result[label] for label in order}
    zeroing = {
        "label": f"keras.ops.zeros((1, H, W), {dtype})",
        "seconds": zeros,
        "ratio": zeros[-1] / zeros[0],
    }
    return result, zeroing


def _loss(weights, dtype, shape):
    """sum(real(conj(w) * place(patches))): a real scalar that every patch
    value reaches, for a fixed random (1, H, W) w."""

    def loss(patches, offsets):
        placed = place_patches(patches, offsets, shape)
        w = ops.cast(backends.to_tensor(weights), dtype)
        if dtype in ("complex64", "complex128"):
            return ops.sum(ops.real(ops.conj(w) * placed))
        return ops.sum(w * placed)

    return loss


def gradient_cost(config, sizes, repeats, progress=None):
    """Forward (loss) and forward+backward (loss and d loss / d patches)
    times at each object size, in the backend's traced mode.

    Returns:
        {"mode": label, "points": [{"object", "forward_s",
        "forward_backward_s", "backward_s", "ratio"}]}, ratio being
        backward / forward.
    """
    mode = backends.peer_mode()
    points = []
    for extent in sizes:
        if progress:
            progress.start(f"placement gradient: object {extent}")
        case = _case(config, extent)
        rng = np.random.default_rng(1)
        shape = (1, extent, extent)
        weights = scaling.random_weights(rng, shape, case.dtype)
        loss = _loss(weights, case.dtype, (extent, extent))
        points.append(
            scaling.time_gradient(loss, _inputs(case), mode, extent, repeats, progress)
        )
    return {"mode": backends.mode_label(mode), "points": points}


def report(config, sizes, repeats, progress=None):
    """The ``--scaling`` report's entries for placement."""
    per_mode, zeroing = object_size_scaling(config, sizes, repeats, progress)
    return {
        "object_sizes": per_mode,
        "zeroing": zeroing,
        "gradient": gradient_cost(config, sizes, repeats, progress),
    }


def sweep_rows(case, ids, settings):
    """Placement rows for `scaling.sweep` (its `build`)."""
    return placement_rows.build_rows(case, ids, settings)
