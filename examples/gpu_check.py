"""Check and time the vectorized path on a GPU, under the JAX or PyTorch backend.

One short run, made for a machine with a CUDA GPU and JAX or PyTorch (it
needs no TensorFlow):

    KERAS_BACKEND=jax   python examples/gpu_check.py --json gpu_jax.json
    KERAS_BACKEND=torch python examples/gpu_check.py --json gpu_torch.json
    KERAS_BACKEND=jax   python examples/gpu_check.py --small   # seconds, CPU too

It checks GPU patches against the same computation on the CPU (within
1e-6 * max|object| for complex64) and against the float64 oracle on a
subset, then times the default case (256 groups x 4 = 1024 patches of
64x64 from a 392x392 complex64 object) and K = 16384 patches against a
device-to-device copy of an array the size of the output. `--small` takes
tiny sizes and, where there is no GPU, lets the CPU stand in for it (as
`--dry-run` does), so the script can be tried anywhere.
"""

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time

BACKEND = os.environ.setdefault("KERAS_BACKEND", "jax")
PACKAGES = {"jax": "JAX", "torch": "PyTorch"}


def require_backend():
    """Exit with one line, not a traceback, unless BACKEND can run here."""
    if BACKEND not in PACKAGES:
        sys.exit(f"gpu_check.py checks the JAX and PyTorch backends: run it with "
                 f"KERAS_BACKEND=jax or KERAS_BACKEND=torch, not {BACKEND!r}")
    try:
        importlib.import_module(BACKEND)
    except ImportError as error:
        reason = " ".join(str(error).split())
        sys.exit(f"gpu_check.py: KERAS_BACKEND={BACKEND} needs {PACKAGES[BACKEND]}, "
                 f"which does not import here ({reason}); install it with "
                 f'pip install -e ".[{BACKEND}]" or choose the other backend')


require_backend()

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402

from ptycho_layers import extract_patches  # noqa: E402

# Sizes of a normal run and of --small.
FULL = {"patch_size": 64, "object_size": 392, "groups": [256, 4096], "repeats": 50}
SMALL = {"patch_size": 16, "object_size": 64, "groups": [8, 64], "repeats": 5}


def make_case(groups, size, patch_size, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    amplitude = 1 + 0.5 * np.sin(7 * xx) * np.cos(5 * yy)
    phase = 3 * xx + rng.uniform(-0.5, 0.5, (size, size))
    image = (amplitude * np.exp(1j * phase)).astype("complex64")[None]
    # Positions over the whole object, edges included.
    offsets = rng.uniform(-patch_size / 2, size + patch_size / 2, (groups, 4, 2))
    return image, offsets.astype("float32")


def oracle_subset(image, offsets, patch_size, count=8):
    """Float64 bilinear samples of the first `count` patches (group 0..)."""
    img = image[0].astype(np.complex128)
    height, width = img.shape
    half = patch_size // 2
    steps = np.arange(patch_size)
    out = []
    for b, k in [(b, k) for b in range(count) for k in range(offsets.shape[1])][:count]:
        x, y = offsets[b, k].astype(np.float64)
        rows = (y - half + steps)[:, None] + 0 * steps
        cols = (x - half + steps)[None, :] + 0 * steps[:, None]
        r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
        tr, tc = rows - r0, cols - c0

        def pix(r, c):
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            return np.where(ok, img[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)], 0)

        out.append(
            (1 - tr) * (1 - tc) * pix(r0, c0) + (1 - tr) * tc * pix(r0, c0 + 1)
            + tr * (1 - tc) * pix(r0 + 1, c0) + tr * tc * pix(r0 + 1, c0 + 1)
        )
    return np.stack(out)


class Runner:
    """Backend-specific device placement, compilation and timing.

    With `on_cpu`, the CPU stands in for the GPU (to try the script where
    there is none)."""

    def __init__(self, patch_size, on_cpu=False):
        self.patch_size = patch_size
        self.on_cpu = on_cpu
        if BACKEND == "jax":
            import jax

            self.jax = jax
            self.cpu = jax.devices("cpu")[0]
            self.gpu = self.cpu if on_cpu else jax.devices("gpu")[0]
            self.device_name = self.gpu.device_kind
        else:
            import torch

            self.torch = torch
            self.cuda = "cpu" if on_cpu else "cuda"
            self.device_name = "cpu" if on_cpu else torch.cuda.get_device_name(0)

    @staticmethod
    def has_gpu():
        if BACKEND == "jax":
            import jax

            try:
                return bool(jax.devices("gpu"))
            except RuntimeError:  # no GPU platform in this jaxlib or machine
                return False
        import torch

        return torch.cuda.is_available()

    def run(self, image, offsets, where):
        """Patches as numpy, computed on 'gpu' or 'cpu'."""
        if BACKEND == "jax":
            device = self.gpu if where == "gpu" else self.cpu
            with self.jax.default_device(device):
                fn = self.jax.jit(lambda a, b: extract_patches(a, b, self.patch_size))
                args = [self.jax.device_put(a, device) for a in (image, offsets)]
                return np.asarray(fn(*args))
        device = self.cuda if where == "gpu" else "cpu"
        args = [self.torch.as_tensor(a, device=device) for a in (image, offsets)]
        # Keras creates the kernel's own tensors (aranges, constants) on its
        # current device: pin it to the one the inputs are on.
        with keras.device("cpu:0" if device == "cpu" else "gpu:0"):
            with self.torch.no_grad():
                return extract_patches(*args, self.patch_size).cpu().numpy()

    def timers(self, image, offsets):
        """(layer, copy, sync): callables on device-resident data."""
        n = self.patch_size
        if BACKEND == "jax":
            jax = self.jax
            img, ofs = (jax.device_put(a, self.gpu) for a in (image, offsets))
            layer = jax.jit(lambda a, b: extract_patches(a, b, n))
            out = layer(img, ofs)
            copy = jax.jit(lambda x: x.copy())
            return (lambda: layer(img, ofs)), (lambda: copy(out)), (lambda r: r.block_until_ready())
        torch = self.torch
        img, ofs = (torch.as_tensor(a, device=self.cuda) for a in (image, offsets))
        with torch.no_grad():
            out = extract_patches(img, ofs, n)
        dst = torch.empty_like(out)

        def layer():
            with torch.no_grad():
                return extract_patches(img, ofs, n)

        def sync(result):
            if self.cuda == "cuda":
                torch.cuda.synchronize()

        return layer, (lambda: dst.copy_(out)), sync


def median_time(fn, sync, repeats, warmup=3):
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help="tiny sizes, seconds; the CPU stands in where there is no GPU")
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--object-size", type=int)
    parser.add_argument("--groups", type=int, nargs="+")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--dry-run", action="store_true",
                        help="use the CPU as the 'GPU' (to try the script where there is none)")
    args = parser.parse_args(argv)
    for name, value in (SMALL if args.small else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    n = args.patch_size
    on_cpu = args.dry_run
    if not on_cpu and not Runner.has_gpu():
        if not args.small:
            sys.exit(f"gpu_check.py: {PACKAGES[BACKEND]} finds no GPU here; "
                     "--small or --dry-run runs the check on the CPU instead")
        on_cpu = True
    runner = Runner(n, on_cpu)
    report = {
        "backend": BACKEND,
        "device": runner.device_name,
        "cpu_stands_in_for_gpu": on_cpu,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "sizes": {"patch_size": n, "object_size": args.object_size, "groups": args.groups,
                  "repeats": args.repeats},
        "cases": [],
    }
    stand_in = " (no GPU: the CPU stands in for it)" if on_cpu else ""
    print(f"backend: {BACKEND}, device: {runner.device_name}{stand_in}")

    # Correctness: GPU vs CPU, and vs the float64 oracle on a subset.
    image, offsets = make_case(args.groups[0], args.object_size, n)
    gpu = runner.run(image, offsets, "gpu")
    cpu = runner.run(image, offsets, "cpu")
    scale = float(np.abs(image).max())
    gpu_vs_cpu = float(np.abs(gpu - cpu).max()) / scale
    expected = oracle_subset(image, offsets, n)
    flat = np.moveaxis(gpu, -1, 1).reshape(-1, n, n)[: len(expected)]
    gpu_vs_oracle = float(np.abs(flat - expected).max()) / scale
    ok = gpu_vs_cpu <= 1e-6 and gpu_vs_oracle <= 1e-6
    report.update(gpu_vs_cpu=gpu_vs_cpu, gpu_vs_oracle=gpu_vs_oracle, ok=ok)
    print(f"max|gpu - cpu| / max|object|    = {gpu_vs_cpu:.2e}")
    print(f"max|gpu - oracle| / max|object| = {gpu_vs_oracle:.2e}  ({'OK' if ok else 'FAIL'})")

    # Timing against a device-to-device copy of the output's size.
    print(f"{'patches':>8} {'layer ms':>10} {'copy ms':>9} {'ratio':>7} {'Mpatch/s':>9} {'copy GB/s':>10}")
    for groups in args.groups:
        image, offsets = make_case(groups, args.object_size, n, seed=groups)
        layer, copy, sync = runner.timers(image, offsets)
        t_layer = median_time(layer, sync, args.repeats)
        t_copy = median_time(copy, sync, args.repeats)
        patches = groups * offsets.shape[1]
        out_bytes = patches * n * n * 8
        case = {
            "patches": patches,
            "layer_s": t_layer,
            "copy_s": t_copy,
            "ratio_to_copy": t_layer / t_copy,
            "patches_per_s": patches / t_layer,
            "copy_GBps_read_plus_write": 2 * out_bytes / t_copy / 1e9,
        }
        report["cases"].append(case)
        print(f"{patches:8d} {t_layer * 1e3:10.3f} {t_copy * 1e3:9.3f} {t_layer / t_copy:7.2f} "
              f"{patches / t_layer / 1e6:9.2f} {case['copy_GBps_read_plus_write']:10.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
