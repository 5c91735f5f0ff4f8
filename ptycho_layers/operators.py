"""The operator pair, written once for every implementation and kernel.

An operator is an integer window gather (extraction) or scatter-add
(placement) composed with an interpolation kernel that maps a window to a
patch (and, for placement, a patch back to its window). What is common to
every implementation and kernel lives here: offsets made safe to index
with, which object each row reads, the non-finite mask, the choice of
implementation, and the gradients' wiring (each operator is the other's
gradient with respect to its values; the offsets' gradient is the
kernel's derivative).

Each implementation is a package offering, for sanitized offsets and a
kernel's module (from its `KERNELS`, by name),

- `extract(images, image_index, x, y, finite, patch_size, kernel)`:
  images (Bi, H, W) -> patches (b, N, N, c), NaN where not `finite`;
- `place(patches, image_index, x, y, finite, image_shape, kernel)`:
  patches (b, N, N, c) -> objects `image_shape` (Bi, H, W), a patch whose
  offset is not finite adding nothing;
- `offsets_gradient(images, image_index, x, y, finite, upstream, kernel)`:
  d loss / d offsets, (b, c, 2) in the coordinate dtype;
- `KERNELS`: its kernels' modules by name;

where image_index is (b,) int32, x, y (b, c) in the coordinate dtype and
finite (b, c) bool. `ptycho_layers.xla` serves TensorFlow and JAX,
`ptycho_layers.torch` PyTorch (each backend names its own, as
`IMPLEMENTATION`).

Shapes: images (Bi, H, W), Bi being 1 (one object for every row of
offsets) or B; offsets (B, c, 2) [x, y]; patches (B, N, N, c).
"""

import functools
import importlib

from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers.backends import keras_ops as ops

__all__ = [
    "COMPLEX",
    "KERNELS",
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
KERNELS = ("bilinear",)

def coordinate_dtype(image_dtype):
    """The float dtype used for coordinates and interpolation weights.

    float64 for float64 and complex128 images, float32 for everything else
    (float16/bfloat16 images included: half precision cannot hold a sub-pixel
    position in an object a few thousand pixels wide).
    """
    dtype = standardize_dtype(image_dtype)
    return "float64" if dtype in ("float64", "complex128") else "float32"


def sanitize_offsets(offsets, height, width, patch_size, dtype):
    """Split offsets into x and y, made safe to turn into indices.

    Args:
        offsets: (B, c, 2) [x, y], any real or integer dtype.
        height, width: the object's size (ints or scalar tensors).
        patch_size: N.
        dtype: the coordinate dtype.

    Returns:
        (x, y, finite): x and y (B, c) in `dtype`, with non-finite values
        replaced by 0 and values clipped to a range beyond which a patch is
        wholly outside the object anyway (so the integer cast cannot
        overflow and the result is unchanged); `finite` (B, c) bool marks
        the offsets that were finite.
    """
    offsets = ops.cast(offsets, dtype)
    x = offsets[..., 0]
    y = offsets[..., 1]
    finite = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
    x = ops.where(finite, x, ops.zeros_like(x))
    y = ops.where(finite, y, ops.zeros_like(y))
    # A window starting N+2 pixels beyond either edge reads only zeros, both
    # before and after clipping, so clipping changes nothing but the range.
    margin = patch_size + 2
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
    """Replace whole patches whose offset was not finite by NaN.

    Args:
        values: (B, N, N, c) patches; finite: (B, c) bool.

    Returns:
        (B, N, N, c), NaN (NaN + NaN*i when complex) for every patch whose
        offset was not finite.
    """
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


def _sanitized(values, offsets, shape, patch_size):
    """(x, y, finite, image_index) for `offsets` (B, c, 2) into objects of
    `shape` (Bi, H, W), in the coordinate dtype of `values`."""
    num_images, height, width = shape
    coord = coordinate_dtype(values.dtype)
    x, y, finite = sanitize_offsets(offsets, height, width, patch_size, coord)
    image_index = image_indices(ops.shape(offsets)[0], num_images)
    return x, y, finite, image_index


def extract_patches_batched(images, offsets, patch_size, kernel="bilinear"):
    """Extract all patches at once: each patch's window gathered and
    interpolated by `kernel`.

    Args:
        images: (Bi, H, W), real or complex; Bi is 1 or B.
        offsets: (B, c, 2), [x, y] in object pixels.
        patch_size: N, a positive Python int.
        kernel: one of `KERNELS`.

    Returns:
        (B, N, N, c) in the images' dtype (for float16/bfloat16 images the
        interpolation runs in float32 and the result is cast back); NaN
        patches where an offset is not finite.
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    x, y, finite, image_index = _sanitized(images, offsets, ops.shape(images), patch_size)
    module = implementation()
    return module.extract(
        images, image_index, x, y, finite, patch_size, module.KERNELS[kernel]
    )


def place_patches_batched(patches, offsets, image_shape, kernel="bilinear"):
    """Add every patch into its object: the adjoint of
    `extract_patches_batched`.

    Args:
        patches: (B, N, N, c), real or complex.
        offsets: (B, c, 2), [x, y] in object pixels.
        image_shape: (Bi, H, W) static ints, Bi being 1 (every row's
            patches into one object) or B (row b's patches into object b).
        kernel: one of `KERNELS`.

    Returns:
        (Bi, H, W) in the patches' dtype. A patch whose offset is not
        finite adds nothing (whatever its values, NaN included); what
        falls outside the object is dropped.
    """
    patches = ops.convert_to_tensor(patches)
    offsets = ops.convert_to_tensor(offsets)
    patch_size = ops.shape(patches)[1]
    x, y, finite, image_index = _sanitized(patches, offsets, image_shape, patch_size)
    module = implementation()
    return module.place(
        patches, image_index, x, y, finite, image_shape, module.KERNELS[kernel]
    )


def offsets_gradient(images, offsets, upstream, kernel="bilinear"):
    """d loss / d offsets of `extract_patches_batched`.

    Args:
        images: (Bi, H, W), offsets: (B, c, 2), as for the forward pass.
        upstream: (B, N, N, c), d loss / d patches (for complex values
            TensorFlow's convention, dL/d re + i dL/d im).
        kernel: one of `KERNELS`.

    Returns:
        (B, c, 2) in the offsets' dtype (the coordinate dtype for integer
        offsets): for complex values, the real part of upstream times the
        conjugate derivative; zero for non-finite offsets.
    """
    images = ops.convert_to_tensor(images)
    offsets = ops.convert_to_tensor(offsets)
    upstream = ops.convert_to_tensor(upstream)
    patch_size = ops.shape(upstream)[1]
    x, y, finite, image_index = _sanitized(images, offsets, ops.shape(images), patch_size)
    module = implementation()
    d_offsets = module.offsets_gradient(
        images, image_index, x, y, finite, upstream, module.KERNELS[kernel]
    )
    d_offsets = ops.where(finite[..., None], d_offsets, ops.zeros_like(d_offsets))
    offsets_dtype = standardize_dtype(offsets.dtype)
    if "float" in offsets_dtype:
        d_offsets = ops.cast(d_offsets, offsets_dtype)
    return d_offsets


@functools.lru_cache(maxsize=None)
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

    # Not ordered: the patches are fused into what reads them, and the
    # backward pass waiting for one of them would materialise the windows
    # (`backends.jax.differentiable`).
    return backend.differentiable(extract, (d_images, d_offsets), ordered=False)


@functools.lru_cache(maxsize=None)
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

    return backend.differentiable(place, (d_patches, d_offsets))

