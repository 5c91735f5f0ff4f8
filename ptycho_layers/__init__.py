"""Fast, exact patch extraction and placement for ptychography, as Keras 3
layers."""

from ptycho_layers.compilation import persistent_cache
from ptycho_layers.functional import extract_patches
from ptycho_layers.memory import release_memory
from ptycho_layers.memory import reuse_freed_memory
from ptycho_layers.patch_extraction import PatchExtraction
from ptycho_layers.patch_placement import PatchPlacement
from ptycho_layers.placement import place_patches
from ptycho_layers.placement import reassemble
from ptycho_layers.ptychopinn import get_image_patches
from ptycho_layers.ptychopinn import reassemble_position

__version__ = "0.1.0"

__all__ = [
    "PatchExtraction",
    "PatchPlacement",
    "extract_patches",
    "get_image_patches",
    "persistent_cache",
    "place_patches",
    "reassemble",
    "reassemble_position",
    "release_memory",
    "reuse_freed_memory",
]
