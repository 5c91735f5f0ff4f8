"""Measuring: call times, peak memory, progress, the machine.

Peak memory is the growth of the process's peak resident set (VmHWM in
/proc/self/status) over a row's first call, in a fresh process that has
only built the row's inputs: the peak is reset to the current RSS first
(writing 5 to /proc/self/clear_refs, Linux 4.0+). This sees every
allocator (TensorFlow's, XLA's, torch's), which tracemalloc does not. It
must be the first call: TensorFlow's oneDNN allocator pools freed memory,
so later calls reuse resident pages and would show no growth. It therefore
includes tracing and compilation.
"""

import ctypes
import gc
import os
import platform
import sys
import time

from ptycho_layers import memory
from benchmarks import backends

__all__ = ["time_calls", "time_interleaved", "peak_memory_supported", "peak_growth",
           "Progress", "machine_info"]

# Warm-up: calls until this many seconds have passed (at least one call,
# at most WARMUP_CALLS). Beyond tracing and compilation, a process's first
# fresh buffers can be slow to fault in (on this project's CI machine, a
# virtual machine, the first ~10 outputs of 32 MB in huge pages took 54 ms
# each, then 4 ms): one call would not cover them.
WARMUP_SECONDS = 0.5
WARMUP_CALLS = 20
# Environment variables that change how fresh buffers are allocated, and
# with it most rows' times; glibc's MALLOC_* too.
ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE", "LD_PRELOAD")


def time_calls(fn, repeats, progress=None):
    """Seconds of each of `repeats` calls of `fn()`, after warm-up calls
    (`WARMUP_SECONDS`), which pay for tracing and compiling."""
    return time_interleaved({None: fn}, repeats, progress)[None]


def time_interleaved(fns, repeats, progress=None):
    """{key: seconds of each of `repeats` calls of `fns[key]()`}, after
    each one's warm-up, the calls taken in turns: on a shared machine the
    speed drifts over a run, and in turns it affects all alike, so the
    ratio of their medians holds."""
    for fn in fns.values():
        start = time.perf_counter()
        for _ in range(WARMUP_CALLS):
            backends.block(fn())
            if time.perf_counter() - start >= WARMUP_SECONDS:
                break
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            backends.block(fn())
            times[key].append(time.perf_counter() - start)
            if progress is not None:
                progress.step()
    return times


def _status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_memory_supported():
    """True where the peak RSS can be read and reset (Linux)."""
    try:
        _status_bytes("VmHWM")
        _reset_peak()
    except OSError:
        return False
    return True


def peak_growth(fn):
    """Bytes by which one call of `fn()` raises the process's peak RSS,
    its output included (meant for `fn`'s first call in a fresh process)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: only the baseline is a little higher
    _reset_peak()
    before = _status_bytes("VmRSS")
    result = backends.block(fn())
    peak = _status_bytes("VmHWM")
    del result
    return max(0, peak - before)


class Progress:
    """Progress on stderr: a one-line bar on a terminal, else a line per
    step started."""

    def __init__(self, total, enabled=True):
        self.total, self.done, self.label = max(1, total), 0, ""
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.started = time.perf_counter()

    def start(self, label):
        self.label = label
        if self.enabled and not self.tty:
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)
        self._draw()

    def step(self):
        self.done = min(self.total, self.done + 1)
        self._draw()

    def close(self):
        if self.enabled and self.tty:
            sys.stderr.write("\r" + " " * 98 + "\r")

    def _draw(self):
        if self.enabled and self.tty:
            bar = ("#" * int(28 * self.done / self.total)).ljust(28, ".")
            elapsed = time.perf_counter() - self.started
            text = f"[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {self.label}"
            sys.stderr.write("\r" + text[:98].ljust(98))
            sys.stderr.flush()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    """CPU, cores, software versions and allocator settings."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable or os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "backend": backends.name(),
        "versions": backends.versions(),
        "allocator_settings": allocator_settings(),
    }


def allocator_settings():
    """{name: value} of the allocator variables set in this process, and
    `reuse_freed_memory`'s limit where it was called."""
    settings = {
        name: value
        for name, value in sorted(os.environ.items())
        if name in ALLOCATOR_VARIABLES or name.startswith("MALLOC_")
    }
    if memory.reused_up_to() is not None:
        settings["reuse_freed_memory"] = str(memory.reused_up_to())
    return settings
