"""``python -m ptycho_layers.benchmark``.

Keras picks its backend once, when it is first imported, and importing
``ptycho_layers`` (which ``python -m`` does before this file runs) imports
Keras. So a ``--backend`` other than the one already loaded is honoured by
re-running this module in a fresh interpreter with ``KERAS_BACKEND`` set.
"""

import os
import sys

_REEXEC_GUARD = "PTYCHO_BENCHMARK_REEXEC"


def _requested_backend(argv):
    """The value of --backend in argv, or None (argparse is not run yet)."""
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--backend="):
            return arg.split("=", 1)[1]
    return None


def _ensure_backend(argv):
    backend = _requested_backend(argv)
    if backend is None:
        return
    keras = sys.modules.get("keras")
    if keras is None:
        os.environ["KERAS_BACKEND"] = backend
        return
    if keras.backend.backend() == backend:
        return
    if os.environ.get(_REEXEC_GUARD):
        # The fresh interpreter still got another backend: a keras.json or
        # sitecustomize overrides KERAS_BACKEND; say so rather than loop.
        sys.exit(
            f"error: asked for backend {backend!r} but Keras loaded "
            f"{keras.backend.backend()!r} even with KERAS_BACKEND={backend}"
        )
    env = dict(os.environ, KERAS_BACKEND=backend, **{_REEXEC_GUARD: "1"})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, "-m", "ptycho_layers.benchmark", *argv],
        env,
    )


if __name__ == "__main__":
    _ensure_backend(sys.argv[1:])
    from ptycho_layers.benchmark import cli

    sys.exit(cli.main(sys.argv[1:]))
