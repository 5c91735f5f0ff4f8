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

Only eager calls on float offsets are sized: traced inside a caller's
program the shapes are the caller's, and integer offsets have no
non-finite value to pad with. The gradients are not sized: they are
asked for in training, where shapes repeat.
"""

import contextlib
import threading

__all__ = ["Sized", "padded_size", "repeated"]


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
    `count` rows of `fill` appended), `first_rows(value, count)` and
    `is_floating(value)`; other attributes (JAX's `lower`, ...) are
    `call`'s.
    """

    def __init__(self, call, backend):
        self.call = call
        self._backend = backend
        self._lock = threading.Lock()
        # (the shapes but the batch, the dtypes) -> batch sizes compiled,
        # and batch sizes run padded once.
        self._compiled = {}
        self._padded_once = {}

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
