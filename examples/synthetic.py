"""Shared pieces of the examples: a synthetic object, a scan, its groups.

Not an example itself: `examples/*.py` import it (Python puts the script's
folder on `sys.path`, so `import synthetic` works from anywhere).
"""

import argparse
import importlib.util
import os
import time

import numpy as np


def _quiet_start():
    """`benchmarks/startup.py`'s `quiet_start()` (the repository's, beside
    this folder), loaded from its file: importing `benchmarks` would import
    Keras before it could quiet anything."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "startup.py")
    spec = importlib.util.spec_from_file_location("_ptycho_startup", path)
    startup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(startup)
    startup.quiet_start()


_quiet_start()

GOLDEN_ANGLE = np.pi * (3 - np.sqrt(5))


def example_args(description, argv=None):
    """The flags every example takes: `--small` and `--out DIR`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--small",
        action="store_true",
        help="tiny sizes, so the example runs in seconds",
    )
    parser.add_argument(
        "--out",
        default="outputs",
        help="folder for the files it writes (default: outputs/)",
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    return args


def make_object(height, width, dtype="complex64"):
    """A smooth synthetic complex object, with no symmetry to hide a swap of
    rows and columns.

    Amplitude: a bright disc (upper left), a dark ellipse (lower right), a
    bright square (upper right) and a soft bar (lower left) on a level
    background. Phase: a ramp along x and y plus a bump over the ellipse.

    Returns:
        (height, width) array of `dtype`.
    """
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    y = rows / height  # 0 .. 1, top to bottom
    x = cols / width

    def smooth_step(distance, softness=0.01):
        # 1 inside (distance < 0), 0 outside, a soft edge between.
        return 0.5 * (1 - np.tanh(distance / softness))

    disc = smooth_step(np.hypot(x - 0.3, y - 0.3) - 0.17)
    ellipse = smooth_step(
        np.hypot((x - 0.66) / 1.6, (y - 0.68) / 0.8) - 0.14
    )
    square = smooth_step(np.maximum(abs(x - 0.78), abs(y - 0.22)) - 0.09)
    bar = smooth_step(np.maximum(abs(x - 0.25) / 3, abs(y - 0.8)) - 0.04)
    amplitude = 0.6 + 0.35 * disc - 0.35 * ellipse + 0.3 * square + 0.2 * bar

    bump = np.exp(-((x - 0.66) ** 2 + (y - 0.68) ** 2) / 0.01)
    phase = 1.5 * x + 0.7 * y + 1.2 * bump - 1.1
    return (amplitude * np.exp(1j * phase)).astype(dtype)


def fermat_spiral(count, center, radius):
    """`count` scan positions on a Fermat spiral, evenly spread over a disc.

    Args:
        count: number of positions.
        center: (x, y) of the disc, in object pixels.
        radius: radius of the disc; every position lies inside it.

    Returns:
        (count, 2) float32, [x, y] per position.
    """
    n = np.arange(count)
    r = radius * np.sqrt((n + 0.5) / count)
    theta = n * GOLDEN_ANGLE
    x = center[0] + r * np.cos(theta)
    y = center[1] + r * np.sin(theta)
    return np.stack([x, y], axis=-1).astype("float32")


def group_neighbours(positions, group_size):
    """Greedily group scan positions with their nearest neighbours.

    Takes the first position not yet used, adds its `group_size - 1`
    nearest unused neighbours, repeats; positions left over at the end
    (fewer than `group_size`) are dropped.

    Args:
        positions: (P, 2) [x, y].
        group_size: c, positions per group (gridsize**2).

    Returns:
        (B, c, 2) offsets, B = P // c at most.
    """
    positions = np.asarray(positions)
    unused = np.ones(len(positions), bool)
    groups = []
    for start in range(len(positions)):
        if not unused[start] or unused.sum() < group_size:
            continue
        candidates = np.flatnonzero(unused)
        distance = np.hypot(*(positions[candidates] - positions[start]).T)
        members = candidates[np.argsort(distance, kind="stable")[:group_size]]
        unused[members] = False
        groups.append(positions[members])
    return np.stack(groups).astype(positions.dtype)


def best_time(function, repeats=3):
    """Call `function()` once untimed (paying for tracing and compilation),
    then `repeats` times timed.

    `function` must wait for its result (e.g. return a numpy array), or
    asynchronous backends would be timed dispatching only.

    Returns:
        (result of the first call, fastest timed call in seconds).
    """
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return result, min(times)


def pyplot():
    """matplotlib.pyplot on a file-only backend, or None if not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
