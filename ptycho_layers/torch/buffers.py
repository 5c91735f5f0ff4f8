"""Output buffers for PyTorch's operators on the CPU (`torch.pieces`,
`torch.placement`), reused once freed.

A fresh buffer as large as the output can cost more to fault in than the
extraction, and PyTorch's CPU allocator does not pool freed memory. So
outputs are NumPy arrays (NumPy asks for huge pages for large ones) whose
memory, when the last tensor viewing one is freed, is kept for the next
output of the same shape and dtype, within `POOL_BYTES`. A dtype NumPy
lacks (bfloat16) is held as NumPy's unsigned integers of its size, which
the tensor views as that dtype. `clear` (through
`ptycho_layers.release_memory`) gives the kept memory back.
"""

import collections
import threading
import weakref

import numpy
import torch

__all__ = ["POOL_BYTES", "new_output", "padded_copy", "pooled_bytes", "clear"]

# Freed outputs kept for reuse, in bytes at most; beyond, the least
# recently freed go back to the system. An output larger than this is
# never kept.
POOL_BYTES = 256 * 2**20

# Re-entrant: a garbage collection inside the lock can free an output and
# run its finalizer (`_give_back`) in the same thread.
_lock = threading.RLock()
_free = collections.OrderedDict()  # (shape, dtype) -> [numpy arrays]
_bytes = 0


def new_output(shape, dtype):
    """An uninitialised CPU tensor of `shape` and `dtype` (a torch float or
    complex dtype), from the pool where it holds a freed one."""
    shape = tuple(int(n) for n in shape)
    if 0 in shape:
        return torch.empty(shape, dtype=dtype)
    key = (shape, dtype)
    base = _take(key)
    if base is None:
        base = numpy.empty(shape, _numpy_dtype(dtype))
    # The tensor holds this view of `base` (through its storage, also when
    # viewed as another dtype); once no tensor holds it, the view dies and
    # `base` returns to the pool.
    view = base.view()
    finalizer = weakref.finalize(view, _give_back, key, base)
    finalizer.atexit = False
    tensor = torch.from_numpy(view)
    return tensor if tensor.dtype == dtype else tensor.view(dtype)


_NUMPY_DTYPES = {}


def _numpy_dtype(dtype):
    """The NumPy dtype whose array holds a tensor of torch `dtype`: its
    own, or, where NumPy has none (bfloat16), the unsigned integer of the
    same size, which `torch.Tensor.view(dtype)` reinterprets in place."""
    held = _NUMPY_DTYPES.get(dtype)
    if held is None:
        try:
            held = torch.empty((), dtype=dtype).numpy().dtype
        except TypeError:
            held = numpy.dtype(f"u{dtype.itemsize}")
        _NUMPY_DTYPES[dtype] = held
    return held


def padded_copy(objects, size):
    """(Bi, H + 2 size, W + 2 size, q): `objects` (Bi, H, W, q) zero-padded
    by `size`, in a pooled buffer."""
    count, height, width, q = objects.shape
    padded = new_output((count, height + 2 * size, width + 2 * size, q), objects.dtype)
    padded[:, :size].zero_()
    padded[:, size + height:].zero_()
    padded[:, size:size + height, :size].zero_()
    padded[:, size:size + height, size + width:].zero_()
    padded[:, size:size + height, size:size + width].copy_(objects)
    return padded


def _take(key):
    global _bytes
    with _lock:
        bases = _free.get(key)
        if not bases:
            return None
        base = bases.pop()
        if not bases:
            del _free[key]
        _bytes -= base.nbytes
        return base


def _give_back(key, base):
    global _bytes
    with _lock:
        if base.nbytes > POOL_BYTES:
            return
        _free.setdefault(key, []).append(base)
        _free.move_to_end(key)
        _bytes += base.nbytes
        while _bytes > POOL_BYTES:
            oldest, bases = next(iter(_free.items()))
            _bytes -= bases.pop(0).nbytes
            if not bases:
                del _free[oldest]


def pooled_bytes():
    """Bytes of freed outputs kept for reuse now."""
    with _lock:
        return _bytes


def clear():
    """Give every kept buffer back to the system; return their bytes.
    Outputs still viewed by a tensor are not kept, so not counted: they
    return to the pool when freed."""
    global _bytes
    with _lock:
        freed = _bytes
        _free.clear()
        _bytes = 0
        return freed
