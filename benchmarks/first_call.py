"""What a call costs the first time (``python -m benchmarks --first-call``).

A PtychoPINN user calls `get_image_patches` once per dataset and
`reassemble_position` once per inference, each in a fresh process: there
the trace and compile are the whole cost. For each public function this
report runs a fresh subprocess (``python -m benchmarks.first_call``) that
imports the package, then times, on the benchmark's case:

- the first call (tracing and compiling included; the import not);
- the second call, warm;
- a first call at a new batch size (about 0.8 of the case's groups), the
  same patch size;
- the memory kept per compiled shape: the growth of the resident set over
  `shapes` more calls, each at a batch size not seen before, divided by
  their number (the process's total growth is reported too).

With ``--compilation-cache DIR`` each process first calls
`ptycho_layers.persistent_cache(DIR)`: a second run of the report then
times first calls that load the programs the first run compiled.

On TensorFlow, PtychoPINN's backend, PtychoPINN's own algorithm (the
package's per-patch `batched=False` path, which follows it) is timed the
same way, each function in a fresh process of its own: what a PtychoPINN
user's first call costs today.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

__all__ = ["FUNCTIONS", "probe", "report", "format_report"]

FUNCTIONS = ("extract_patches", "place_patches", "reassemble", "get_image_patches",
             "reassemble_position")
# `reassemble_position`'s M, as PtychoPINN's inference calls it.
_M = 20
_TAG = "FIRST-CALL "
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def _inputs(function, groups, config, rng):
    """The call's arguments for `groups` rows of offsets: a zero-argument
    callable returning the function's output, numpy in, numpy out."""
    import ptycho_layers

    size, gridsize = config["patch_size"], config["gridsize"]
    height, width = config["height"], config["width"]
    channels = gridsize * gridsize
    dtype = config["dtype"]
    kernel = {"interpolation": config.get("interpolation", "bilinear"),
              "fourier_margin": config.get("fourier_margin", 1)}
    batched = config.get("batched", True)
    if not batched:
        kernel = {}
    coord = "float64" if dtype in ("complex128", "float64") else "float32"
    x = rng.uniform(0, width, (groups, channels))
    y = rng.uniform(0, height, (groups, channels))
    offsets = np.stack([x, y], axis=-1).astype(coord)
    complex_ = np.dtype(dtype).kind == "c"

    def values(shape):
        real = rng.standard_normal(shape)
        return (real + 1j * rng.standard_normal(shape) if complex_ else real).astype(dtype)

    if function == "extract_patches":
        image = values((1, height, width))
        return lambda: ptycho_layers.extract_patches(image, offsets, size, batched=batched,
                                                     **kernel)
    if function == "get_image_patches":
        image = values((height, width))
        # PtychoPINN's layout: (B, 1, 2, c), [x, y] on axis 2; the global
        # offsets carry the positions, the local ones are zero.
        global_offsets = np.transpose(offsets, (0, 2, 1))[:, None]
        local_offsets = np.zeros_like(global_offsets)
        return lambda: ptycho_layers.get_image_patches(image, global_offsets, local_offsets,
                                                       size, gridsize, batched=batched)
    patches = values((groups, size, size, channels))
    if function == "place_patches":
        return lambda: ptycho_layers.place_patches(patches, offsets, (height, width),
                                                   batched=batched, **kernel)
    if function == "reassemble":
        return lambda: ptycho_layers.reassemble(patches, offsets, (height, width),
                                                batched=batched, **kernel)
    if function == "reassemble_position":
        # One patch per row of PtychoPINN's (K, N, N, 1) predictions, at
        # (K, 1, 1, 2) global offsets.
        count = groups * channels
        single = np.transpose(patches, (0, 3, 1, 2)).reshape(count, size, size, 1)
        positions = offsets.reshape(count, 1, 1, 2)
        return lambda: ptycho_layers.reassemble_position(single, positions, M=_M,
                                                         batched=batched)
    raise ValueError(f"function must be one of {FUNCTIONS}, got {function!r}")


def _timed(fn):
    from keras import ops

    start = time.perf_counter()
    ops.convert_to_numpy(fn())
    return time.perf_counter() - start


def probe(function, config, shapes):
    """In this (fresh) process: the first call's seconds, the warm call's,
    a new batch size's first call, and the memory kept per compiled shape
    over `shapes` more batch sizes (each new), as a dict."""
    rng = np.random.default_rng(config.get("seed", 0))
    groups = config["groups"]
    first = _timed(_inputs(function, groups, config, rng))
    call = _inputs(function, groups, config, rng)
    warm = min(_timed(call) for _ in range(3))
    new_groups = max(1, (groups * 4) // 5)
    new_batch = _timed(_inputs(function, new_groups, config, rng))
    before = _rss_bytes()
    sizes = [new_groups - 1 - i for i in range(shapes) if new_groups - 1 - i >= 1]
    for size in sizes:
        _timed(_inputs(function, size, config, rng))
    after = _rss_bytes()
    kept = None
    if sizes and before is not None and after is not None:
        kept = max(0, after - before) / len(sizes)
    return {"function": function, "first_s": first, "warm_s": warm,
            "new_batch_groups": new_groups, "new_batch_s": new_batch,
            "shapes": len(sizes), "kept_per_shape_bytes": kept,
            "rss_bytes": after}


def _run_probe(function, config, shapes, batched=True):
    """`probe` in a fresh subprocess on the current backend."""
    import keras

    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    settings = json.dumps(dict(config, batched=batched))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.first_call", function, settings, str(shapes)],
        env=env, cwd=_ROOT, capture_output=True, text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(_TAG)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"function": function, "error": tail[:200]}
    return json.loads(lines[-1][len(_TAG):])


def report(config, shapes=10, functions=FUNCTIONS, legacy=None, progress=None):
    """{"rows": [probe results, this package's], "legacy": {function: the
    first call of PtychoPINN's algorithm}}, each in a fresh process;
    `legacy` (None: on TensorFlow only) whether to time PtychoPINN's."""
    import keras

    if legacy is None:
        legacy = keras.backend.backend() == "tensorflow"
    rows, legacy_rows = [], {}
    for function in functions:
        if progress:
            progress.start(f"first call: {function}")
        rows.append(_run_probe(function, config, shapes))
        if progress:
            progress.step()
    if legacy:
        for function in functions:
            if progress:
                progress.start(f"first call, PtychoPINN's algorithm: {function}")
            # Its per-patch loop compiles nothing new per batch size: the
            # first call is what is compared.
            legacy_rows[function] = _run_probe(function, config, 0, batched=False)
            if progress:
                progress.step()
    return {"rows": rows, "legacy": legacy_rows, "shapes": shapes}


def _seconds(value):
    return "-" if value is None else f"{value:.3g}"


def format_report(result, backend):
    """The first-call table, as markdown."""
    header = ["function", "first call s", "warm s", "new batch size s",
              "kept per shape", "PtychoPINN's first call s", "PtychoPINN / this"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        function = row["function"]
        legacy = result["legacy"].get(function, {})
        if "error" in row:
            lines.append(f"| {function} | failed: {row['error']} |" + " |" * 5)
            continue
        kept = row["kept_per_shape_bytes"]
        kept_text = "-" if kept is None else f"{kept / 2**20:.1f} MiB"
        legacy_first = legacy.get("first_s")
        ratio = "-" if legacy_first is None else f"{legacy_first / row['first_s']:.1f}x"
        lines.append(
            f"| {function} | {_seconds(row['first_s'])} | {_seconds(row['warm_s'])} | "
            f"{_seconds(row['new_batch_s'])} ({row['new_batch_groups']} groups) | "
            f"{kept_text} | {_seconds(legacy_first)} | {ratio} |"
        )
    lines.append("")
    lines.append(
        f"  {backend}: each function in a fresh process, the import not timed; first call: "
        "tracing and compiling included; warm: the best of 3 calls after it; new batch "
        f"size: the first call at about 0.8 of the groups; kept per shape: resident-set "
        f"growth over {result['shapes']} more calls at new batch sizes, per batch size. "
        "PtychoPINN's first call: the package's per-patch path (batched=False, "
        "PtychoPINN's algorithm), in a fresh process of its own."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    from benchmarks.startup import quiet_start

    _function, _settings, _shapes = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    if _settings.get("compilation_cache"):
        # Before TensorFlow first looks at its devices (`quiet_start`'s
        # GPU check), when it reads its XLA flags; the import's log lines
        # on stderr are not read here anyway.
        import ptycho_layers

        ptycho_layers.persistent_cache(_settings["compilation_cache"])
    quiet_start()
    print(_TAG + json.dumps(probe(_function, _settings, _shapes)), flush=True)
