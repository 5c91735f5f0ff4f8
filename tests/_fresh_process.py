"""Run a snippet of Python in a fresh interpreter, under the current backend.

Loading a saved model in the process that built it can hide a missing
registration or config entry (the class and its state are already there);
a fresh process proves the file alone is enough. Some TensorFlow settings
(logical devices) must also be made before TensorFlow starts, which only a
fresh process allows.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import keras

TESTS_DIR = pathlib.Path(__file__).resolve().parent


def run_python(code, workdir, timeout=240):
    """Run `code` with `sys.executable` in `workdir`; fail on a non-zero exit.

    Args:
        code: Python source (dedented here). `tests/` is importable, so it
            may use `oracle`.
        workdir: directory the snippet runs in (e.g. pytest's `tmp_path`).
        timeout: seconds before the run is abandoned.

    Returns:
        The snippet's stdout, as text.
    """
    env = dict(os.environ)
    env["KERAS_BACKEND"] = keras.backend.backend()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("JAX_ENABLE_X64", "1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    script = pathlib.Path(workdir) / "_snippet.py"
    script.write_text(textwrap.dedent(code))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"fresh process failed (exit {result.returncode}):\n"
            f"--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-8000:]}"
        )
    return result.stdout
