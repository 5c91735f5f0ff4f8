"""The benchmark case: one object and its scan positions.

Every row of the table, and every point of the scaling report, extracts
patches of a `Case` made by `make_case`: a random object and offsets
uniform over it.
"""

import dataclasses
import math

import numpy as np

__all__ = ["Case", "make_case", "padded_object_bytes"]


@dataclasses.dataclass
class Case:
    """One object and its scan positions.

    images: (1, H, W) numpy array; offsets: (B, c, 2) [x, y] numpy array;
    patch_size: N; dtype: the object's dtype name.
    """

    images: np.ndarray
    offsets: np.ndarray
    patch_size: int
    dtype: str

    @property
    def count(self):
        """K, the number of patches (B * c)."""
        return self.offsets.shape[0] * self.offsets.shape[1]

    @property
    def shape(self):
        return self.images.shape[1:]

    @property
    def itemsize(self):
        return np.dtype(self.dtype).itemsize

    @property
    def output_bytes(self):
        return self.count * self.patch_size**2 * self.itemsize

    def subset(self, patches):
        """The case cut to the first whole groups holding >= `patches`."""
        groups = self.offsets.shape[1]
        rows = min(self.offsets.shape[0], max(1, math.ceil(patches / groups)))
        return dataclasses.replace(self, offsets=self.offsets[:rows])


def make_case(groups, gridsize, patch_size, height, width, dtype, seed=0):
    """A random object and uniformly random scan positions over it.

    The object has random amplitude and phase (random real values for real
    dtypes); offsets [x, y] are uniform over [0, W) x [0, H), float64 for
    64-bit dtypes and float32 otherwise (PtychoPINN's offsets are float32).
    """
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.5, 1.5, (1, height, width))
    if np.dtype(dtype).kind == "c":
        phase = rng.uniform(-np.pi, np.pi, (1, height, width))
        images = (amplitude * np.exp(1j * phase)).astype(dtype)
    else:
        images = amplitude.astype(dtype)
    channels = gridsize**2
    x = rng.uniform(0, width, (groups, channels))
    y = rng.uniform(0, height, (groups, channels))
    coord = "float64" if dtype in ("float64", "complex128") else "float32"
    offsets = np.stack([x, y], axis=-1).astype(coord)
    return Case(images, offsets, patch_size, dtype)


def padded_object_bytes(case, pad):
    """Bytes of the object split into real channels and padded by `pad`."""
    height, width = case.shape
    channels = 2 if np.dtype(case.dtype).kind == "c" else 1
    real = np.dtype(case.dtype).itemsize // channels
    return (height + 2 * pad) * (width + 2 * pad) * channels * real
