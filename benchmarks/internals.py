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
from ptycho_layers.xla import bilinear as _bilinear
from ptycho_layers.xla import extraction as _extraction
from ptycho_layers.xla import padded_table as _padded_table

__all__ = ["batch_pieces", "compiled_extraction", "compiled_placement",
           "padded_table_fits", "padded_table_length"]

padded_table_length = _padded_table.length


def batch_pieces(batch, groups, patch_size):
    """The XLA extraction's batch pieces for bilinear windows."""
    return _extraction.batch_pieces(
        batch, groups, patch_size, _bilinear.window_size(patch_size)
    )


def padded_table_fits(image_shape, batch, groups, patch_size):
    """Whether the XLA operators read bilinear windows from the padded table."""
    return _padded_table.fits(
        image_shape, batch, groups, patch_size, _bilinear.window_size(patch_size)
    )


def compiled_extraction(patch_size):
    """The current backend's compiled (images, offsets) -> patches."""
    return _operators.extraction(patch_size, "bilinear", _backends.current())


def compiled_placement(height, width):
    """The current backend's compiled (patches, offsets) -> (1, H, W)."""
    return _operators.placement(height, width, False, "bilinear", _backends.current())
