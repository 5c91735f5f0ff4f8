"""Start Keras without TensorFlow's start-up log lines: `quiet_start()`.

`python -m benchmarks` runs it first thing (`benchmarks/__main__.py`),
before anything imports Keras; it imports nothing of the benchmark or of
`ptycho_layers`, so a script can load it from its file and do the same.
"""

import contextlib
import importlib.util
import os
import re
import sys
import tempfile

__all__ = ["quiet_start"]

# TensorFlow's C++ log lines: severity letter, date, time, thread, file:line].
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\s\]]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"


def quiet_start():
    """Import Keras and its backend without TensorFlow's start-up log lines.

    On a machine without a GPU, TensorFlow starts with half a dozen lines
    of its C++ log on stderr, among them `E0000 ... failed call to cuInit`.
    `TF_CPP_MIN_LOG_LEVEL` (0 shows everything, 3 only fatal errors) hides
    most of them. TensorFlow reads it once, as it is imported, so it is set
    here first: to 3, unless you set it yourself. A few lines come out
    while TensorFlow loads, before it reads the setting (absl's `WARNING:
    All log messages before absl::InitializeLog()...`, `I0000 ... port.cc`,
    `I0000 ... cudart_stub.cc`): those below the level are dropped here,
    and everything else written to stderr meanwhile is kept. Run with
    `TF_CPP_MIN_LOG_LEVEL=0` to see every line.
    """
    setting = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    level = int(setting) if setting.strip().isdigit() else 0
    with _stderr_without_log_lines(level):
        import keras

        if importlib.util.find_spec("tensorflow") is not None:
            # Keras imports TensorFlow on the other backends too, when it
            # first needs it (to save a model, for one): import it now.
            import tensorflow as tf

            if keras.backend.backend() == "tensorflow":
                # Looking for GPUs is what logs the cuInit error.
                tf.config.list_physical_devices()


@contextlib.contextmanager
def _stderr_without_log_lines(level):
    """Send file descriptor 2 (stderr, C++ included) to a temporary file;
    then copy it to stderr without the C++ log lines below `level`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(l for l in lines if not _below(l, level)))
            sys.stderr.flush()


def _below(line, level):
    """Whether `line` is a C++ log line of a severity below `level`."""
    if line.startswith(_ABSL_NOTICE):
        return level >= 1  # a warning that the lines around it are not filtered
    match = _LOG_LINE.match(line)
    return bool(match) and _SEVERITY[match.group(1)] < level
