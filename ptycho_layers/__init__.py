"""Fast, exact patch extraction and placement for ptychography, as Keras 3
layers."""

from ptycho_layers import backends
from ptycho_layers.functional import extract_patches
from ptycho_layers.patch_extraction import PatchExtraction
from ptycho_layers.patch_placement import PatchPlacement
from ptycho_layers.placement import place_patches
from ptycho_layers.placement import reassemble
from ptycho_layers.ptychopinn import get_image_patches
from ptycho_layers.ptychopinn import reassemble_position

__version__ = "0.1.0"

# Loaded now, not first inside a traced kernel (see `backends.current`);
# another Keras backend is refused when the operators are used.
if backends.name() in backends.SUPPORTED:
    backends.current()

__all__ = [
    "PatchExtraction",
    "PatchPlacement",
    "extract_patches",
    "get_image_patches",
    "place_patches",
    "reassemble",
    "reassemble_position",
]
