"""Fast, exact patch extraction and placement for ptychography, as Keras 3
layers."""

import sys

# `python -m ptycho_layers.benchmark` imports this package, and with it
# Keras, before any of the benchmark's code runs; Python marks that moment
# by sys.argv[0] == "-m". Start Keras quietly then, as the examples do.
if sys.argv[:1] == ["-m"]:
    from ptycho_layers.benchmark.startup import quiet_start

    quiet_start()

from ptycho_layers.functional import extract_patches  # noqa: E402
from ptycho_layers.memory import reuse_freed_memory  # noqa: E402
from ptycho_layers.patch_extraction import PatchExtraction  # noqa: E402
from ptycho_layers.patch_placement import PatchPlacement  # noqa: E402
from ptycho_layers.placement import place_patches  # noqa: E402
from ptycho_layers.placement import reassemble  # noqa: E402
from ptycho_layers.ptychopinn import get_image_patches  # noqa: E402
from ptycho_layers.ptychopinn import reassemble_position  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "PatchExtraction",
    "PatchPlacement",
    "extract_patches",
    "get_image_patches",
    "place_patches",
    "reassemble",
    "reassemble_position",
    "reuse_freed_memory",
]
