"""The compiled forward pass's working memory (extraction's or
placement's), as XLA plans it.

Peak RSS over a first call mixes the kernel's buffers with tracing and
compiling, and later calls reuse pooled memory, so neither shows the
kernel's own footprint. XLA's buffer assignment does: the temporary
allocation of a compiled program holds every intermediate that is not an
input or an output, packed by liveness.

- JAX: `jax.jit(...).lower(...).compile().memory_analysis()`.
- TensorFlow: the buffer assignment XLA writes when asked to dump
  (`XLA_FLAGS=--xla_dump_to=DIR`), so it is read in a fresh process that
  set the flag before TensorFlow started (`dump_flags`).
- PyTorch: not compiled by XLA; None.
"""

import glob
import os
import re

from benchmarks import backends
from benchmarks import internals

__all__ = ["dump_flags", "temp_from_dump", "compiled_temp_bytes", "placement_temp_bytes"]

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
    sizes = []
    for path in glob.glob(os.path.join(directory, "*buffer-assignment.txt")):
        with open(path) as report:
            pattern = r"allocation \d+: size (\d+), preallocated-temp"
            sizes += [int(size) for size in re.findall(pattern, report.read())]
    return max(sizes, default=None)


def compiled_temp_bytes(images, offsets, patch_size, kernel="bilinear"):
    """Temp bytes of the layer's compiled extraction on these inputs, with
    `kernel` (an `internals.kernel_spec`), or None where they cannot be
    read. On TensorFlow the pass must already have run in this process."""
    return _temp_bytes(lambda: internals.compiled_extraction(patch_size, kernel),
                       images, offsets)


def placement_temp_bytes(patches, offsets, image_shape, kernel="bilinear"):
    """As `compiled_temp_bytes`, for `place_patches` into one (H, W) =
    `image_shape` object."""
    return _temp_bytes(lambda: internals.compiled_placement(*image_shape, kernel),
                       patches, offsets)


def _temp_bytes(compiled, *args):
    """Temp bytes of `compiled()` on `args`: from JAX's compiled program,
    or from TensorFlow's dump."""
    if backends.name() == "jax":
        analysis = compiled().lower(*args).compile().memory_analysis()
        return None if analysis is None else int(analysis.temp_size_in_bytes)
    if backends.name() == "tensorflow" and os.environ.get(_DUMP_ENV):
        return temp_from_dump(os.environ[_DUMP_ENV])
    return None
