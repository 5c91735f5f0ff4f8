"""The benchmark's only window onto private code of `ptycho_layers`.

Everything else in `benchmarks/` uses the package's public names
(`ptycho_layers.extract_patches`, `place_patches`, `reassemble`,
`ptycho_layers.memory`). What it needs beyond them comes from here: the
compiled programs whose XLA temporaries it reads, and the layout facts
behind its memory estimates. When the package's internals move, this file
is the one to follow them.
"""

from ptycho_layers import backends as _backends
from ptycho_layers import operators as _operators
from ptycho_layers.xla import kernel as _xla_kernel
from ptycho_layers.xla import padded_table as _padded_table
from ptycho_layers.xla import windows as _windows
from ptycho_layers.xla.extraction import batch_pieces

__all__ = ["batch_pieces", "compiled_extraction", "compiled_placement", "kernel_spec",
           "extraction_reader", "padded_table_length", "window_size"]

padded_table_length = _padded_table.length


def kernel_spec(interpolation="bilinear", fourier_margin=1):
    """The package's name for a kernel ("bilinear", "nearest",
    "fourier:m"), as its operators and their caches take it."""
    return _operators.kernel_spec(interpolation, fourier_margin)


def window_size(patch_size, kernel="bilinear"):
    """The side of the window a patch of `patch_size` reads with `kernel`
    (a `kernel_spec`)."""
    return _xla_kernel(kernel).window_size(patch_size)


def compiled_extraction(patch_size, kernel="bilinear"):
    """The current backend's compiled (images, offsets) -> patches."""
    return _operators.extraction(patch_size, kernel, _backends.current())


def compiled_placement(height, width, kernel="bilinear"):
    """The current backend's compiled (patches, offsets) -> (1, H, W)."""
    return _operators.placement(height, width, False, kernel, _backends.current())


def extraction_reader(images, batch, groups, patch_size, kernel="bilinear"):
    """How extraction reads its windows from `images` (1, H, W) tensor for
    (B, c) = (`batch`, `groups`) offsets: "padded" (a padded copy of the
    object), "fused" (the object's own runs) or "gathered" (a buffer of
    windows, `batch_pieces` at a time; always, off the XLA implementation)."""
    if _backends.current().IMPLEMENTATION != "xla":
        return "gathered"
    return _windows.reader(images, batch, groups, patch_size, _xla_kernel(kernel))
