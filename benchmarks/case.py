"""The benchmark case: one object and its scan positions.

Every row of both tables, and every point of the scaling report, runs on a
`Case` made by `make_case`: a random object and offsets uniform over it.
Placement places the case's patches: its float64 reference extraction, in
the case's dtype. The case carries the interpolation kernel its layer rows
and references follow (`--interpolation`, `--fourier-margin`).
"""

import dataclasses
import functools
import math

import numpy as np

from benchmarks import peers

__all__ = ["Case", "make_case", "from_config", "padded_object_bytes"]


@dataclasses.dataclass
class Case:
    """images: (1, H, W) numpy array; offsets: (B, c, 2) [x, y] numpy
    array; patch_size: N; dtype: the object's dtype name; interpolation,
    fourier_margin: the kernel ("bilinear", "fourier" or "nearest"; m)."""

    images: np.ndarray
    offsets: np.ndarray
    patch_size: int
    dtype: str
    interpolation: str = "bilinear"
    fourier_margin: int = 1

    @property
    def kernel(self):
        """The keyword arguments of the kernel, for the package's calls."""
        return {"interpolation": self.interpolation, "fourier_margin": self.fourier_margin}

    @property
    def window_size(self):
        """S: the side of the window each patch reads (N + 2m for Fourier,
        N for nearest, N + 1 for bilinear)."""
        extra = {"fourier": 2 * self.fourier_margin, "nearest": 0}
        return self.patch_size + extra.get(self.interpolation, 1)

    @property
    def count(self):
        """K, the number of patches (B * c)."""
        return self.offsets.shape[0] * self.offsets.shape[1]

    @property
    def shape(self):
        """(H, W)."""
        return self.images.shape[1:]

    @property
    def itemsize(self):
        return np.dtype(self.dtype).itemsize

    @property
    def patches_bytes(self):
        return self.count * self.patch_size**2 * self.itemsize

    @property
    def object_bytes(self):
        return math.prod(self.shape) * self.itemsize

    @functools.cached_property
    def reference(self):
        """(B, N, N, c) float64 (complex128) patches of the case, by
        `peers.reference_patches`, for the case's kernel."""
        return peers.reference_patches(self.images, self.offsets, self.patch_size,
                                       **self.kernel)

    @functools.cached_property
    def patches(self):
        """`reference` in the case's dtype, in C order (np.copyto from a
        strided array took 4.5 ms, not 1.2)."""
        return np.ascontiguousarray(self.reference.astype(self.dtype))

    def subset(self, patches):
        """The case cut to the first whole groups holding >= `patches`."""
        groups = self.offsets.shape[1]
        rows = min(self.offsets.shape[0], max(1, math.ceil(patches / groups)))
        return dataclasses.replace(self, offsets=self.offsets[:rows])


def make_case(groups, gridsize, patch_size, height, width, dtype, seed=0,
              interpolation="bilinear", fourier_margin=1):
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
    return Case(images, offsets, patch_size, dtype, interpolation, fourier_margin)


def from_config(config, shape=None, groups=None):
    """The case of a run's config (`cli`), with an object of `shape` (H, W)
    and `groups` rows of offsets where given, and its kernel (bilinear
    where the config names none)."""
    height, width = shape or (config["height"], config["width"])
    return make_case(groups or config["groups"], config["gridsize"],
                     config["patch_size"], height, width, config["dtype"], config["seed"],
                     config.get("interpolation", "bilinear"), config.get("fourier_margin", 1))


def padded_object_bytes(case, pad):
    """Bytes of the object split into real channels and padded by `pad`."""
    height, width = case.shape
    channels = 2 if np.dtype(case.dtype).kind == "c" else 1
    real = np.dtype(case.dtype).itemsize // channels
    return (height + 2 * pad) * (width + 2 * pad) * channels * real
