"""Every example runs (`--small`), exits 0, writes the files it says and
prints none of TensorFlow's start-up log lines.

The examples check their own numbers and exit non-zero when one is wrong:
the quickstart that an integer offset's patch is the slice the convention
names; sequential_model that a saved and loaded model predicts exactly the
same; export_savedmodel that the served SavedModel matches the Keras model;
ptychopinn_dropin that `batched=True` matches PtychoPINN's per-patch loop;
reconstruct that `model.fit` on the held, trainable object converges;
stitch that whole-pixel offsets give the object back;
fourier_stitch that the Fourier kernel keeps every band of the object's
spectrum where bilinear blurs the finest;
gpu_check that its "GPU" (the CPU here) matches the CPU and a float64
oracle.

Each example is a fresh Python process that imports Keras and its backend
(seconds each), so all of them are started together when the first test
of this file runs, and each test waits for its own. They run as a user
runs them: without `TF_CPP_MIN_LOG_LEVEL`, which the examples set
themselves.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
TIMEOUT_S = 300

# Example -> (files it writes under --out, PNG files among them).
EXAMPLES = {
    "quickstart": ([], ["quickstart.png"]),
    "sequential_model": (["sequential_model.keras"], []),
    "export_savedmodel": (["patches_savedmodel/saved_model.pb"], []),
    "ptychopinn_dropin": ([], []),
    "reconstruct": ([], ["reconstruct.png"]),
    "stitch": ([], ["stitch.png"]),
    "fourier_stitch": ([], ["fourier_stitch.png"]),
    "gpu_check": (["gpu_check.json"], []),
}
BACKEND_ONLY = {
    "export_savedmodel": ({"tensorflow"}, "exports a TensorFlow SavedModel: TensorFlow backend only"),
    "gpu_check": ({"jax", "torch"}, "checks the JAX and PyTorch backends only"),
}
# A line of TensorFlow's C++ log (glog/absl style: severity, date, time,
# thread, file:line]), and absl's notice that precedes the first ones.
LOG_LINE = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)
ABSL_NOTICE = "All log messages before absl::InitializeLog()"


def runnable(name):
    backends, _ = BACKEND_ONLY.get(name, (None, None))
    return backends is None or keras.backend.backend() in backends


def example_argv(name, out):
    if name == "gpu_check":  # writes its numbers to --json, not under --out
        return ["--small", "--json", str(out / "gpu_check.json")]
    return ["--small", "--out", str(out)]


def child_env():
    """This process's environment as a user's shell has it: the backend
    named (gpu_check would choose JAX by itself) and no TF_CPP_MIN_LOG_LEVEL
    (conftest sets it here; the examples must quiet TensorFlow without it)."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def assert_no_log_lines(name, output):
    for bad in ("cuInit", "E0000", ABSL_NOTICE):
        assert bad not in output, f"{name}.py printed {bad!r}:\n{output[-3000:]}"
    match = LOG_LINE.search(output)
    assert match is None, f"{name}.py printed a C++ log line:\n{output[-3000:]}"


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Start every selected, runnable example at once; name -> (process,
    out dir)."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_example_runs"
    }
    env = child_env()
    started = {}
    for name in EXAMPLES:
        if name not in selected or not runnable(name):
            continue
        out = tmp_path_factory.mktemp(name)
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES_DIR / f"{name}.py"), *example_argv(name, out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        started[name] = (process, out)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


# The README's quickstart and the three that check the operators' numbers
# run by default; the others (each a fresh Keras process, together ~30 s
# on 2 cores) with `-m slow`.
DEFAULT_RUN = ("quickstart", "reconstruct", "stitch", "fourier_stitch")


@pytest.mark.parametrize(
    "name",
    [n if n in DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in EXAMPLES],
)
def test_example_runs(name, runs):
    if not runnable(name):
        pytest.skip(BACKEND_ONLY[name][1])
    process, out = runs[name]
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{name}.py --small ran past {TIMEOUT_S} s:\n{output[-3000:]}")
    assert process.returncode == 0, f"{name}.py --small failed:\n{output[-3000:]}"
    assert "backend:" in output  # it printed what it did
    assert_no_log_lines(name, output)

    files, pngs = EXAMPLES[name]
    for file in files:
        path = out / file
        assert path.is_file() and path.stat().st_size > 0, f"missing {path}"
    if name == "gpu_check":
        check_gpu_report(json.loads((out / "gpu_check.json").read_text()))
    if not HAS_MATPLOTLIB:
        assert "matplotlib is not installed" in output
        return
    for png in pngs:
        path = out / png
        assert path.is_file(), f"{name}.py wrote no {png}:\n{output[-3000:]}"
        head = path.read_bytes()[:8]
        assert head == PNG_SIGNATURE, f"{path} is not a PNG (starts {head!r})"
        assert path.stat().st_size > 1000  # an image, not just a header



def check_gpu_report(report):
    """gpu_check's JSON: it checked on this backend, with the CPU standing
    in for the GPU (there is none here), within its own bound, and timed
    both batch sizes."""
    assert report["backend"] == keras.backend.backend()
    assert report["cpu_stands_in_for_gpu"] is True
    assert report["ok"] is True
    assert report["gpu_vs_cpu"] == 0  # the same device, the same program
    assert 0 <= report["gpu_vs_oracle"] <= 1e-6
    sizes = report["sizes"]
    patches = [groups * 4 for groups in sizes["groups"]]
    assert [case["patches"] for case in report["cases"]] == patches
    for case in report["cases"]:
        assert case["layer_s"] > 0 and case["copy_s"] > 0


def run_gpu_check(env, prelude=""):
    """Run examples/gpu_check.py --small after `prelude` (Python source),
    in a fresh interpreter; (exit status, stdout and stderr)."""
    script = EXAMPLES_DIR / "gpu_check.py"
    code = (f"{prelude}\nimport runpy, sys\nsys.argv = [{str(script)!r}, '--small']\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def assert_one_line_message(output, *phrases):
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_gpu_check_names_the_backends_it_runs_on():
    status, output = run_gpu_check(dict(child_env(), KERAS_BACKEND="tensorflow"))
    assert status == 1
    assert_one_line_message(output, "KERAS_BACKEND=jax", "KERAS_BACKEND=torch")


@pytest.mark.parametrize("backend,package", [("jax", "JAX"), ("torch", "PyTorch")])
def test_gpu_check_without_its_backend_package(backend, package):
    """As where JAX (PyTorch) is not installed: the import fails; the script
    says so in one line, with the install command, instead of a traceback."""
    prelude = f"import sys\nsys.modules[{backend!r}] = None  # import {backend} now fails"
    status, output = run_gpu_check(dict(child_env(), KERAS_BACKEND=backend), prelude)
    assert status == 1
    assert_one_line_message(output, f"needs {package}", f'pip install -e ".[{backend}]"')
