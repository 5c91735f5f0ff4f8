"""Fast, exact patch extraction for ptychography, as a Keras 3 layer."""

from ptycho_layers.functional import extract_patches
from ptycho_layers.patch_extraction import PatchExtraction
from ptycho_layers.ptychopinn import get_image_patches

__version__ = "0.1.0"

__all__ = ["PatchExtraction", "extract_patches", "get_image_patches"]
