"""Eager calls at a batch size met for the first time run a program
already compiled for a larger batch, padded; XLA compiles the call's own
program when that size comes again.

XLA compiles one program per input shape, and on the CPU that costs a
few tenths of a second and some MB kept for good, per batch size
(docs/performance.md, "The first call"). A user calls
`get_image_patches` or `reassemble_position` once per dataset, a service
takes requests of any size, a training loop's last batch is shorter:
there the compile is the whole cost. So the first call at a batch size B
that has not been seen runs the program of the smallest batch P already
compiled with B < P <= 2B (at most twice the work, which is far less
than a compile), or else compiles the program of P = the next power of
two (later sizes down to P/2 reuse it); rows B.. are padding with
non-finite offsets, which extraction makes NaN (and which are cut off)
and placement adds nothing for. A second call at B compiles B's own
program, so a size that repeats runs at full speed from then on. The
first call of all compiles its own size: that is the shape a training
loop repeats.

A call that moves few elements, at a batch size not met before and with
no compiled program to run it padded (the first call of all at its
shapes, say), runs instead on the host, op by op in NumPy
(`backends.on_host`, the same kernels): at up to `HOST_ELEMENTS` window
elements that takes well under a compile (`reassemble_position`'s crops,
a small batch), and nothing is kept. Its own program is compiled when
that size comes again, as above.

Only eager calls on float offsets are sized: traced inside a caller's
program the shapes are the caller's, and integer offsets have no
non-finite value to pad with. The gradients are not sized: they are
asked for in training, where shapes repeat.
"""

import contextlib
import threading

import numpy as np

from ptycho_layers import backends

__all__ = ["Sized", "padded_size", "repeated", "HOST_ELEMENTS"]

# The most window elements a first call runs on the host. NumPy op by op
# costs about 60 (extraction) to 150 (placement) ns per window element on
# this project's 2-core CPU, against a few tenths of a second to compile:
# 2**20 elements is at most about 0.15 s, below any compile.
HOST_ELEMENTS = 1 << 20


class _State(threading.local):
    repeated = False


_STATE = _State()


@contextlib.contextmanager
def repeated():
    """In this thread, calls that repeat the shapes of the call just made
    (`reassemble`'s masks placed by the patches' program): they run
    whatever program that call ran, and do not count as the shape coming
    again."""
    saved = _STATE.repeated
    _STATE.repeated = True
    try:
        yield
    finally:
        _STATE.repeated = saved


def padded_size(batch, compiled):
    """The batch to run a first call at `batch` with: the smallest of
    `compiled` (sizes with a program) in (batch, 2 * batch], else the next
    power of two at or above `batch`."""
    larger = [size for size in compiled if batch < size <= 2 * batch]
    if larger:
        return min(larger)
    return 1 << (batch - 1).bit_length()


class Sized:
    """`call(x, offsets)`, an XLA-compiled operator with the batch on axis
    0 of `offsets` (B, c, 2), of `x` where it has B rows (patches; images
    one per row) and of the result where it has B rows, called eagerly at
    the sizes the module's docstring describes.

    `backend` gives `compiles_per_shape(*values)` (the backend's: eager
    arrays, not traced), `pad_rows(value, count, fill)` (`value` with
    `count` rows of `fill` appended), `first_rows(value, count)`,
    `is_floating(value)`, `on_host(value)` (whether it is in host memory)
    and `from_host(array)` (a NumPy array as the backend's); other
    attributes (JAX's `lower`, ...) are `call`'s.

    `host(x, offsets)`, `call`'s uncompiled `keras.ops` code, runs a first
    call on the host where `elements(x, offsets)`, the window elements it
    moves, is at most `HOST_ELEMENTS`; without them every call compiles.
    """

    def __init__(self, call, backend, host=None, elements=None):
        self.call = call
        self._backend = backend
        self._host = host
        self._elements = elements
        self._lock = threading.Lock()
        # (the shapes but the batch, the dtypes) -> batch sizes compiled,
        # batch sizes run padded once, and batch sizes run on the host.
        self._compiled = {}
        self._padded_once = {}
        self._hosted = {}

    def _runs_on_host(self, key, batch, x, offsets):
        """Whether this call runs on the host: small, its inputs in host
        memory, at a batch size not met before at `key`'s shapes and with
        no compiled program to run it padded (or repeating such a call).
        Called under the lock."""
        if self._host is None:
            return False
        hosted = self._hosted.setdefault(key, set())
        if batch in hosted:
            return _STATE.repeated
        if any(batch <= size <= 2 * batch for size in self._compiled.get(key, ())):
            return False
        backend = self._backend
        if self._elements(x, offsets) > HOST_ELEMENTS:
            return False
        if not (backend.on_host(x) and backend.on_host(offsets)):
            return False
        hosted.add(batch)
        return True

    def _on_host(self, x, offsets):
        with backends.on_host():
            result = self._host(np.asarray(x), np.asarray(offsets))
        return self._backend.from_host(np.asarray(result))

    def __getattr__(self, name):
        return getattr(self.call, name)

    def __call__(self, x, offsets):
        backend = self._backend
        if not backend.compiles_per_shape(x, offsets) or not backend.is_floating(offsets):
            return self.call(x, offsets)
        batch = int(offsets.shape[0])
        x_rows = int(x.shape[0])
        per_row = x_rows == batch
        key = (tuple(x.shape[1:]), "batch" if per_row else x_rows, str(x.dtype),
               tuple(offsets.shape[1:]), str(offsets.dtype))
        with self._lock:
            host = self._runs_on_host(key, batch, x, offsets)
            if not host:
                size = self._size(key, batch)
        if host:
            return self._on_host(x, offsets)
        if size == batch:
            return self.call(x, offsets)
        extra = size - batch
        offsets = backend.pad_rows(offsets, extra, float("nan"))
        if per_row:
            x = backend.pad_rows(x, extra, 0)
        result = self.call(x, offsets)
        if int(result.shape[0]) == size:
            result = backend.first_rows(result, batch)
        return result

    def _size(self, key, batch):
        """The batch size whose program runs a call at `batch` (module
        docstring), noted as compiled. Called under the lock."""
        compiled = self._compiled.setdefault(key, set())
        once = self._padded_once.setdefault(key, set())
        if batch in compiled or not compiled or (batch in once and not _STATE.repeated):
            size = batch
        else:
            size = padded_size(batch, compiled)
        if not _STATE.repeated:
            if size == batch:
                once.discard(batch)
            else:
                once.add(batch)
        compiled.add(size)
        return size
