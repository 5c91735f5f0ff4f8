"""`reuse_freed_memory` (`ptycho_layers/memory.py`): glibc keeps freed
buffers for reuse, so a fresh one does not fault page by page.

The effect is measured in page faults, which are counted exactly, in fresh
interpreters (the setting is process-wide): never in time."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ptycho_layers import memory

MODULE = Path(memory.__file__)

# A 64 MiB buffer filled, freed, and allocated and filled again, by a
# thread started after the setting (as a backend's worker threads are):
# the page faults of the second fill. The module is loaded on its own,
# without the package (and Keras), so nothing else allocates in between.
SNIPPET = """
import ctypes, importlib.util, resource, sys, threading
spec = importlib.util.spec_from_file_location("memory", sys.argv[1])
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
assert "keras" not in sys.modules, "memory.py imported Keras"
applied = memory.reuse_freed_memory() if sys.argv[2] == "reuse" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
def filled():
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    return buffer
faults = []
def work():
    libc.free(filled())
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    libc.free(filled())
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(applied, faults[0], size // resource.getpagesize())
"""


def _second_fill(mode):
    """(applied, faults of the second fill, pages in the buffer)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SNIPPET), str(MODULE), mode],
        capture_output=True, text=True, timeout=60, check=True,
    )
    applied, faults, pages = done.stdout.split()
    return applied, int(faults), int(pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_buffer_is_reused_without_faults():
    applied, faults, pages = _second_fill("plain")
    # Without the setting, the buffer is mapped afresh: every page faults
    # (fewer with transparent huge pages, but still at least one per 2 MiB).
    assert applied == "None"
    assert faults >= (64 << 20) // (2 << 20)
    applied, reused_faults, _ = _second_fill("reuse")
    assert applied == "True"
    # Reused: the pages are already there.
    assert reused_faults < max(faults // 10, 8), (faults, reused_faults, pages)


@pytest.mark.parametrize("limit", [0, -1, 2**31, 1.5, True, "1", None])
def test_bad_limits_are_refused_before_anything_changes(limit, monkeypatch):
    monkeypatch.setattr(memory, "_limit", None)
    with pytest.raises(ValueError, match=r"limit must be an int .*received: " + re.escape(repr(limit))):
        memory.reuse_freed_memory(limit)
    assert memory.reused_up_to() is None


def test_where_there_is_no_glibc_nothing_is_set(monkeypatch):
    monkeypatch.setattr(memory, "_limit", None)
    monkeypatch.setattr(memory, "_mallopt", lambda: None)
    assert memory.reuse_freed_memory() is False
    assert memory.reused_up_to() is None


def test_the_settings_made_are_recorded(monkeypatch):
    """The three settings, trim threshold first, the trim capped at C's
    int."""
    monkeypatch.setattr(memory, "_limit", None)
    calls = []
    monkeypatch.setattr(memory, "_mallopt", lambda: lambda *call: calls.append(call) or 1)
    assert memory.reuse_freed_memory(2**30) is True
    assert calls == [
        (memory._M_TRIM_THRESHOLD, 2**31 - 1), (memory._M_MMAP_THRESHOLD, 2**30), (memory._M_ARENA_MAX, 1)
    ]
    assert memory.reused_up_to() == 2**30
    calls.clear()
    # Any integer, NumPy's included, passed on as a Python int.
    assert memory.reuse_freed_memory(np.int64(1000)) is True
    assert all(type(value) is int for _, value in calls)
    assert calls == [
        (memory._M_TRIM_THRESHOLD, 4000), (memory._M_MMAP_THRESHOLD, 1000), (memory._M_ARENA_MAX, 1)
    ]
