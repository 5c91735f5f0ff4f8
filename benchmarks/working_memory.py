"""The compiled forward pass's working memory (extraction's or
placement's), as XLA plans it.

Peak RSS over a first call mixes the kernel's buffers with tracing and
compiling, and later calls reuse pooled memory, so neither shows the
kernel's own footprint. XLA's buffer assignment does: the temporary
allocation of a compiled program holds every intermediate that is not an
input or an output, packed by liveness. That is the working memory beyond
the output, exactly, for the program as compiled on this machine.

- JAX: `jax.jit(...).lower(...).compile().memory_analysis()`.
- TensorFlow: the buffer assignment XLA writes when asked to dump
  (`XLA_FLAGS=--xla_dump_to=DIR`), so it is read in a fresh process that
  set the flag before TensorFlow started (`dump_flags`, `temp_from_dump`).
- PyTorch: not compiled by XLA; None.
"""

import glob
import os
import re

from benchmarks import backends

__all__ = [
    "dump_flags",
    "temp_from_dump",
    "compiled_temp_bytes",
    "placement_temp_bytes",
]

_DUMP_ENV = "PTYCHO_LAYERS_XLA_DUMP"


def dump_flags(directory):
    """Environment for a fresh process whose XLA programs are dumped."""
    flags = os.environ.get("XLA_FLAGS", "")
    return {
        "XLA_FLAGS": f"{flags} --xla_dump_to={directory} --xla_dump_hlo_as_text".strip(),
        _DUMP_ENV: directory,
    }


def temp_from_dump(directory):
    """Largest preallocated-temp allocation over the dumped programs, in
    bytes (None if nothing was dumped)."""
    largest = None
    for path in glob.glob(os.path.join(directory, "*buffer-assignment.txt")):
        with open(path) as report:
            for match in re.finditer(r"allocation \d+: size (\d+), preallocated-temp", report.read()):
                size = int(match.group(1))
                largest = size if largest is None else max(largest, size)
    return largest


def compiled_temp_bytes(images, offsets, patch_size):
    """Working memory of the layer's compiled extraction on these inputs,
    in bytes, or None where it cannot be read (see the module docstring).
    On TensorFlow the pass must already have run in this process."""
    from ptycho_layers import backends as operator_backends
    from ptycho_layers import functional

    backend = operator_backends.current()
    return _temp_bytes(
        lambda: functional._extraction(patch_size, backend), images, offsets
    )


def placement_temp_bytes(patches, offsets, image_shape):
    """As `compiled_temp_bytes`, for `place_patches` of (B, N, N, c)
    `patches` into one (H, W) = `image_shape` object."""
    from ptycho_layers import backends as operator_backends
    from ptycho_layers import placement

    height, width = image_shape
    backend = operator_backends.current()
    return _temp_bytes(
        lambda: placement._placement(height, width, False, backend), patches, offsets
    )


def _temp_bytes(compiled, *args):
    """Temp bytes of `compiled()` (the backend's compiled function) on
    `args`: from JAX's compiled program, or TensorFlow's dump."""
    backend = backends.name()
    if backend == "jax":
        program = compiled().lower(*args).compile()
        analysis = program.memory_analysis()
        return None if analysis is None else int(analysis.temp_size_in_bytes)
    if backend == "tensorflow" and os.environ.get(_DUMP_ENV):
        return temp_from_dump(os.environ[_DUMP_ENV])
    return None
