"""Large freed buffers kept for reuse: an opt-in, process-wide setting of
glibc's allocator (Linux); and `release_memory`, which gives back what the
operators keep.

glibc's `malloc` serves a large allocation with a fresh `mmap` and hands
it back to the system when freed; its threshold for that adapts upwards,
never past 32 MiB. So every page of each such buffer faults on first
write: under JAX on the CPU, whose runtime allocates each output with
`malloc`, a large share of a call (docs/performance.md). TensorFlow pools
its buffers, and PyTorch's kernels here theirs (`torch.buffers`).

The cost is memory: what the process frees stays with it. glibc's
environment variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`,
`MALLOC_ARENA_MAX`) make the same settings for a whole process.
"""

import ctypes
import ctypes.util
import numbers
import sys

__all__ = ["reuse_freed_memory", "reused_up_to", "release_memory"]

# PyTorch's pool of freed outputs, looked up only where PyTorch is loaded.
_TORCH_BUFFERS = "ptycho_layers.torch.buffers"

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# mallopt takes a C int.
_INT_MAX = 2**31 - 1

_limit = None


def reuse_freed_memory(limit=2**30):
    """Have glibc's `malloc` keep freed buffers of up to `limit` bytes for
    the process's next allocations, instead of handing them back to the
    system (where every page of the next such buffer faults on first
    write).

    Process-wide, for the rest of the process: buffers of up to `limit`
    bytes come from glibc's heap, the heap is trimmed only once more than
    4 x `limit` (at most 2 GiB) is free at its top, and threads that start
    allocating from now on share the main thread's heap (one arena).
    Call it once, early: before the first computation, so that the
    backend's worker threads, which allocate the compiled programs'
    temporaries, do not have arenas of their own yet. Where the C library
    is not glibc, nothing is changed.

    Args:
        limit: the largest buffer kept, in bytes: an int from 1 to 2**31 - 1
            (glibc takes a C int). Default 1 GiB.

    Returns:
        True where the settings were made (Linux with glibc), else False.

    Example:

    >>> import sys
    >>> from ptycho_layers import reuse_freed_memory
    >>> reuse_freed_memory(2**30) == sys.platform.startswith("linux")
    True
    >>> reuse_freed_memory(0)
    Traceback (most recent call last):
        ...
    ValueError: limit must be an int from 1 to 2**31 - 1 (bytes); received: 0
    """
    global _limit
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or not 1 <= limit <= _INT_MAX:
        raise ValueError(
            f"limit must be an int from 1 to 2**31 - 1 (bytes); received: {limit!r}"
        )
    mallopt = _mallopt()
    if mallopt is None:
        return False
    limit = int(limit)
    trim = min(4 * limit, _INT_MAX)
    # The trim threshold first: a lower mmap threshold alone would put freed
    # buffers on the heap only for a trim to hand them back. One arena: a
    # thread's own arena grows in heaps of at most 64 MiB, mapped and
    # unmapped as they fill and empty, and maps anything larger afresh
    # (XLA's worker threads allocate its temporaries).
    settings = ((_M_TRIM_THRESHOLD, trim), (_M_MMAP_THRESHOLD, limit), (_M_ARENA_MAX, 1))
    if not all(mallopt(*setting) for setting in settings):
        return False
    _limit = limit
    return True


def reused_up_to():
    """The `limit` of the last `reuse_freed_memory` call that made its
    settings in this process, or None."""
    return _limit


def release_memory():
    """Give back what the operators keep between calls: PyTorch's pool of
    freed output buffers (up to 256 MiB, kept for the next outputs of the
    same shapes), and the compiled operators cached per patch size and
    object shape (with their compiled programs, once nothing else holds
    them). Later calls work as before, compiling and pooling afresh.

    Outputs still held by a tensor are not in the pool; they return to it
    when freed. Memory that glibc keeps after `reuse_freed_memory` stays
    with the process.

    Returns:
        The bytes of pooled buffers freed: 0 on TensorFlow and JAX, which
        have no such pool.

    Example:

    >>> import gc
    >>> from ptycho_layers import release_memory
    >>> _ = gc.collect()  # outputs in unreachable cycles go back to the pool
    >>> freed = release_memory()  # the pool's bytes (0 on TensorFlow and JAX)
    >>> release_memory()  # nothing pooled since
    0
    """
    # Imported here: the setting above needs nothing of the package's (or
    # Keras's), so the module loads on its own (tests/test_memory.py).
    from ptycho_layers import operators

    freed = 0
    buffers = sys.modules.get(_TORCH_BUFFERS)
    if buffers is not None:
        freed = buffers.clear()
    operators.extraction.cache_clear()
    operators.placement.cache_clear()
    return freed


def _mallopt():
    """glibc's `mallopt(int, int) -> int`, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        # gnu_get_libc_version exists only in glibc (musl has mallopt, a
        # no-op).
        libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
