"""The operator pair, written once for every implementation and kernel.

An operator is an integer window gather (extraction) or scatter-add
(placement) composed with an interpolation kernel. Common to all of them,
here: offsets made safe to index with, the non-finite mask, which object
each row reads, the implementation chosen, and the gradients' wiring
(each operator the other's gradient with respect to its values, the
kernel's derivative the offsets').

Each implementation (`ptycho_layers.xla`, `ptycho_layers.torch`, named by
the backend's `IMPLEMENTATION`) offers `extract`, `place`,
`offsets_gradient` and `KERNELS`: the contract in docs/architecture.md.

Shapes: images (Bi, H, W), Bi being 1 (one object for every row of
offsets) or B; offsets (B, c, 2) [x, y]; patches (B, N, N, c).
"""

import functools
import importlib
import math

from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops

__all__ = [
    "COMPLEX",
    "KERNELS",
    "kernel_spec",
    "coordinate_dtype",
    "sanitize_offsets",
    "image_indices",
    "nan_where_not_finite",
    "implementation",
    "extract_patches_batched",
    "place_patches_batched",
    "offsets_gradient",
    "extraction",
    "placement",
]

COMPLEX = ("complex64", "complex128")

# The interpolation kernels every implementation offers.
KERNELS = ("bilinear", "fourier", "nearest")


def kernel_spec(interpolation, fourier_margin=1):
    """The kernel as the operators and their caches name it: a string
    ("bilinear", "nearest", or "fourier:m" with the margin m), hashable
    and passed as it is to `torch.compile`'s custom operators. Each
    implementation's `kernel(spec)` turns it into the kernel itself.
    Checked values (`validation.check_interpolation`)."""
    if interpolation == "fourier":
        return f"fourier:{fourier_margin}"
    return interpolation

def coordinate_dtype(image_dtype):
    """The float dtype used for coordinates and interpolation weights.

    float64 for float64 and complex128 images, float32 for everything else
    (float16/bfloat16 images included: half precision cannot hold a sub-pixel
    position in an object a few thousand pixels wide).
    """
    dtype = standardize_dtype(image_dtype)
    return "float64" if dtype in ("float64", "complex128") else "float32"


def sanitize_offsets(offsets, height, width, window_size, dtype):
    """`offsets` (B, c, 2) [x, y], any real or integer dtype, as (x, y,
    finite): x, y (B, c) in the coordinate `dtype`, safe to turn into
    indices (non-finite values replaced by 0, values clipped to a range
    beyond which a patch reading windows of side `window_size` (the
    kernel's, at least the patch's side) is wholly outside an object of
    `height`, `width` anyway: no overflow, same result); `finite` (B, c)
    bool, which offsets were finite."""
    offsets = ops.cast(offsets, dtype)
    x = offsets[..., 0]
    y = offsets[..., 1]
    finite = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
    x = ops.where(finite, x, ops.zeros_like(x))
    y = ops.where(finite, y, ops.zeros_like(y))
    # A window of side S around an offset S+1 pixels beyond either edge
    # reads only zeros, both before and after clipping (its start is at
    # most S-1 pixels before the offset), so clipping changes nothing but
    # the range.
    margin = window_size + 1
    x = ops.clip(x, -margin, ops.cast(width + margin, dtype))
    y = ops.clip(y, -margin, ops.cast(height + margin, dtype))
    return x, y, finite


def image_indices(batch, num_images):
    """(batch,) int32: which image each row of offsets reads. With one
    shared object every row reads image 0; with one object per row, row b
    reads image b."""
    return ops.minimum(
        ops.arange(batch, dtype="int32"), ops.cast(num_images - 1, "int32")
    )


def nan_where_not_finite(values, finite):
    """Patches `values` (B, N, N, c), those whose offset was not `finite`
    (B, c) bool replaced by NaN (NaN + NaN*i when complex)."""
    # Adding 0 or NaN, rather than `ops.where`, which on the TensorFlow
    # backend turns complex128 into complex64 (losing precision).
    nan = ops.where(finite, 0.0, float("nan"))[:, None, None, :]
    dtype = standardize_dtype(values.dtype)
    if dtype in COMPLEX:
        # NaN in both parts, not NaN + 0j.
        nan = ops.cast(nan, dtype) * ops.cast(1 + 1j, dtype)
    return values + ops.cast(nan, dtype)


_IMPLEMENTATIONS = {}


def implementation():
    """The implementation package the current backend runs
    (`ptycho_layers.xla` or `ptycho_layers.torch`), loaded once (when
    `ptycho_layers` is imported), then looked up: the operators ask for it
    while their kernels are traced, and tracing the import machinery fails
    (`torch.compile`)."""
    name = backends.current().IMPLEMENTATION
    module = _IMPLEMENTATIONS.get(name)
    if module is None:
        module = importlib.import_module(f"ptycho_layers.{name}")
        _IMPLEMENTATIONS[name] = module
    return module


def _sanitized(values, offsets, shape, patch_size, kernel):
    """(x, y, finite, image_index) for `offsets` (B, c, 2) into objects of
    `shape` (Bi, H, W), in the coordinate dtype of `values`, for patches
    of `patch_size` and `kernel` (a kernel module or object)."""
    num_images, height, width = shape
    coord = coordinate_dtype(values.dtype)
    size = kernel.window_size(patch_size)
    x, y, finite = sanitize_offsets(offsets, height, width, size, coord)
    image_index = image_indices(ops.shape(offsets)[0], num_images)
    return x, y, finite, image_index


def extract_patches_batched(images, offsets, patch_size, kernel="bilinear"):
    """Patches (B, N, N, c) of `images` (Bi, H, W) at `offsets` (B, c, 2),
    by the current implementation and `kernel` (a `kernel_spec`): in the
    images' dtype (float16/bfloat16 interpolated in float32), NaN where an
    offset is not finite."""
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    module = implementation()
    kernel = module.kernel(kernel)
    x, y, finite, image_index = _sanitized(
        images, offsets, ops.shape(images), patch_size, kernel
    )
    return module.extract(images, image_index, x, y, finite, patch_size, kernel)


def place_patches_batched(patches, offsets, image_shape, kernel="bilinear"):
    """The adjoint of `extract_patches_batched`: `patches` (B, N, N, c) at
    `offsets` (B, c, 2) added into objects of static `image_shape`
    (Bi, H, W), Bi being 1 (every row into one object) or B (row b into
    object b); what falls outside is dropped, and a patch whose offset is
    not finite adds nothing, whatever its values."""
    patches = ops.convert_to_tensor(patches)
    offsets = ops.convert_to_tensor(offsets)
    patch_size = ops.shape(patches)[1]
    module = implementation()
    kernel = module.kernel(kernel)
    x, y, finite, image_index = _sanitized(
        patches, offsets, image_shape, patch_size, kernel
    )
    return module.place(patches, image_index, x, y, finite, image_shape, kernel)


def offsets_gradient(images, offsets, upstream, kernel="bilinear"):
    """d loss / d offsets (B, c, 2) of `extract_patches_batched`, from
    `upstream` (B, N, N, c), d loss / d patches (for complex values
    TensorFlow's convention, dL/d re + i dL/d im): in the offsets' dtype
    (the coordinate dtype for integer offsets), zero for non-finite
    offsets."""
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    upstream = ops.convert_to_tensor(upstream)
    patch_size = ops.shape(upstream)[1]
    module = implementation()
    kernel = module.kernel(kernel)
    x, y, finite, image_index = _sanitized(
        images, offsets, ops.shape(images), patch_size, kernel
    )
    d_offsets = module.offsets_gradient(
        images, image_index, x, y, finite, upstream, kernel
    )
    d_offsets = ops.where(finite[..., None], d_offsets, ops.zeros_like(d_offsets))
    offsets_dtype = standardize_dtype(offsets.dtype)
    if "float" in offsets_dtype:
        d_offsets = ops.cast(d_offsets, offsets_dtype)
    return d_offsets


# Bounded: an entry keeps its compiled programs alive, and
# `reassemble_position` asks for one per object shape. 64 is more shapes
# than a workload alternates between: eviction recompiles only in a sweep.
@functools.lru_cache(maxsize=64)
def extraction(patch_size, kernel, backend):
    """Extraction of NxN patches as `backend` (a module of
    `ptycho_layers.backends`) runs it: compiled where that pays, with
    placement as its gradient with respect to the object and the kernel's
    derivative as its gradient with respect to the offsets."""

    def extract(images, offsets):
        return extract_patches_batched(images, offsets, patch_size, kernel)

    def d_images(images, offsets, upstream):
        return place_patches_batched(upstream, offsets, ops.shape(images), kernel)

    def d_offsets(images, offsets, upstream):
        return offsets_gradient(images, offsets, upstream, kernel)

    def elements(images, offsets):
        return _window_elements(offsets, patch_size, kernel)

    # Not ordered: the patches are fused into what reads them, and the
    # backward pass waiting for one of them would materialise the windows
    # (`backends.jax.differentiable`).
    return backend.differentiable(
        extract, (d_images, d_offsets), ordered=False, elements=elements
    )


@functools.lru_cache(maxsize=64)  # bounded as `extraction`
def placement(height, width, per_row, kernel, backend):
    """Placement into H x W objects as `backend` runs it, with extraction
    as its gradient with respect to the patches."""

    def place(patches, offsets):
        count = ops.shape(patches)[0] if per_row else 1
        return place_patches_batched(patches, offsets, (count, height, width), kernel)

    def d_patches(patches, offsets, upstream):
        return extract_patches_batched(upstream, offsets, ops.shape(patches)[1], kernel)

    def d_offsets(patches, offsets, upstream):
        # Re<U, place(p)> = Re<extract(U), p>: extraction's offsets
        # gradient, the placed image's gradient U in the object's place.
        return offsets_gradient(upstream, offsets, patches, kernel)

    def elements(patches, offsets):
        return _window_elements(offsets, patches.shape[1], kernel)

    return backend.differentiable(place, (d_patches, d_offsets), elements=elements)


def _window_elements(offsets, patch_size, kernel):
    """The window elements an operator reads or writes for `offsets`
    (B, c, 2) and NxN patches: what its cost on the host grows with."""
    size = implementation().kernel(kernel).window_size(patch_size)
    return math.prod(offsets.shape[:-1]) * size * size

