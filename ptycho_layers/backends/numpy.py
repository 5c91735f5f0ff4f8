"""The host backend: NumPy arrays in host memory, for the XLA
implementation's `keras.ops` code run op by op without compiling
(`backends.on_host`, inside `batch_sizes.Sized`).

On TensorFlow and JAX an eager call compiles a program for its shapes, a
few tenths of a second to a second on the CPU, and a user who calls
`reassemble_position` or `get_image_patches` once per dataset pays only
that. The same kernels run in NumPy take tens of milliseconds at the
default case: so an eager call at shapes never met runs here, and the
compiled program is made when the shapes come again. Like an ONNX
export's trace (`backends.portable`), no run gather or scatter, no
conditionals and the batch in one piece; each element is read, weighted
and summed as the compiled program does, in the same dtypes.

Not a Keras backend a user selects: the result goes back to the backend
in use (`from_host`), and the gradients stay the compiled ones.
"""

import numpy as np

__all__ = [
    "NAME",
    "IMPLEMENTATION",
    "SPLITS_BATCH",
    "complex",
    "cos_sin",
    "where",
    "take",
    "add_at",
    "take_runs",
    "add_runs",
    "fusion_boundary",
    "differentiable",
    "compiling",
    "compiles_per_shape",
    "persistent_cache",
]

NAME = "numpy"
# The same `keras.ops` code as TensorFlow and JAX compile.
IMPLEMENTATION = "xla"
# Op by op every intermediate is materialised whole: pieces would only
# add passes.
SPLITS_BATCH = False
take_runs = None
add_runs = None


def complex(real, imag):
    """real + i*imag, (...) float32/float64 -> complex64/complex128."""
    real = np.asarray(real)
    out = np.empty(real.shape, np.result_type(real.dtype, np.complex64))
    out.real = real
    out.imag = imag
    return out


def cos_sin(angles):
    """(cos, sin) of `angles` (...) float, in its dtype."""
    return np.cos(angles), np.sin(angles)


def where(condition, x, y):
    """Select (broadcasting), in the dtype `keras.ops.where` gives."""
    return np.where(condition, x, y)


def take(flat, positions):
    """flat (L,) at int32 positions (...) -> (...)."""
    return np.asarray(flat)[positions]


def add_at(values, positions, size):
    """zeros (size,) with values (M,) added at int32 positions (M,):
    `np.bincount`'s weighted sums (in float64, then cast back), a part at a
    time for complex values; `np.add.at` is an order of magnitude slower."""
    values = np.asarray(values)
    positions = np.asarray(positions).reshape(-1)

    def summed(part):
        return np.bincount(positions, weights=part.reshape(-1), minlength=size)[:size]

    if np.iscomplexobj(values):
        total = np.empty(size, values.dtype)
        total.real = summed(values.real)
        total.imag = summed(values.imag)
        return total
    return summed(values).astype(values.dtype)


def fusion_boundary(fn, predicate):
    """`fn()`: nothing fuses op by op."""
    del predicate
    return fn()


def differentiable(forward, gradients, ordered=True, elements=None):
    """`forward` itself: NumPy arrays carry no gradient, and a gradient is
    asked of the backend in use, whose operators are compiled."""
    del gradients, ordered, elements
    return forward


def compiling():
    """False: nothing here traces."""
    return False


def compiles_per_shape(*values):
    """False: NumPy runs each operation as it comes."""
    del values
    return False


def persistent_cache(directory):
    """False: nothing is compiled, so nothing is kept."""
    del directory
    return False
