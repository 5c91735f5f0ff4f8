"""The `PatchExtraction` Keras layer."""

import keras
import numpy as np
from keras.backend import standardize_dtype

from ptycho_layers import backends
from ptycho_layers import functional
from ptycho_layers import held_image
from ptycho_layers import layer_calls
from ptycho_layers import onnx_export
from ptycho_layers import operators
from ptycho_layers import validation
from ptycho_layers.backends import keras_ops as ops

__all__ = ["PatchExtraction"]

_COMPLEX = ("complex64", "complex128")


@keras.saving.register_keras_serializable(package="ptycho_layers")
class PatchExtraction(keras.layers.Layer):
    """Extracts the NxN patch of an object under each scan position.

    For an offset `[x, y]` (x = column, in object pixels) the patch is

        patch[i, j] = bilinear(object, row = y - N//2 + i, col = x - N//2 + j)

    with the object extended by zeros outside its bounds, so integer
    offsets give plain slices; `interpolation` picks another kernel
    (Fourier shifts, nearest pixel) under the same convention. Patches of a group of c scan positions go on
    the last axis (PtychoPINN's channel format).

    The layer has two forms:

    - Two inputs: `layer((images, offsets))` or
      `layer({"images": images, "offsets": offsets})`.
    - Held image: `PatchExtraction(N, image=obj)` keeps the (H, W) object as
      a weight and takes offsets as its only input, so it can go into a
      `keras.Sequential` model with `model.add`.

    Example:

    >>> import numpy as np, keras
    >>> obj = np.arange(64, dtype="complex64").reshape(8, 8)
    >>> model = keras.Sequential(
    ...     [keras.Input((4, 2)), PatchExtraction(3, image=obj)]
    ... )
    >>> offsets = np.array([[[2, 2], [3, 2], [2, 3], [3, 3]]], "float32")
    >>> patches = model.predict(offsets, verbose=0)
    >>> patches.shape, patches.dtype
    ((1, 3, 3, 4), dtype('complex64'))
    >>> patches[0, :, :, 1].real  # offset [x=3, y=2]: obj[1:4, 2:5]
    array([[10., 11., 12.],
           [18., 19., 20.],
           [26., 27., 28.]], dtype=float32)

    Args:
        patch_size: N, a positive int: patches are NxN.
        batched: bool. True (default): the vectorized path, which gathers
            each patch's (N+1)x(N+1) neighbourhood and blends it, all
            patches at once, O(K*N^2) whatever the object's size. False: the
            legacy algorithm (pad the object by N//2, translate the whole of
            it by -offset, keep the top-left NxN, one patch at a time), kept
            as the reference. On TensorFlow the vectorized path always runs
            XLA-compiled, so the first call with new input shapes compiles
            (seconds; docs/performance.md has the figures) and later ones
            reuse it.
        interpolation: "bilinear" (default), "fourier" (the integer window
            of (N + 2m)^2 pixels, m = `fourier_margin`, shifted by the
            offset's fraction in Fourier space and cropped to NxN: no
            blur) or "nearest" (the pixel nearest each position; no
            offsets gradient). The README's "Interpolation kernels" has
            the definitions. Bilinear only with `batched=False`.
        fourier_margin: m, a positive int (default 1), the Fourier
            kernel's margin.
        image: optional (H, W) or (H, W, 1) array, real or complex: the held
            object. Its values are stored as a weight named "image"
            (`layer.image_variable`): (H, W) for a real object, (H, W, 2)
            real and imaginary parts for a complex one (Keras weights are
            real: summaries, optimizers and JAX's gradients assume it).
            `layer.image` gives it back as an (H, W) tensor in
            `image_dtype`.
        image_shape: (H, W) of the held object, used instead of `image`
            when the layer is rebuilt from its config (its values then come
            back with the weights).
        image_dtype: dtype of the held object. Defaults to `image`'s dtype,
            or "complex64" when only `image_shape` is given.
        trainable_image: bool, whether the held object is a trainable
            weight (e.g. to reconstruct an object by gradient descent).
            Default False.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        Two-input form: `images` (B, H, W) or (B, H, W, 1), real or
        complex, B being 1 (one object for every row of offsets) or the
        offsets' batch; and `offsets` (B, c, 2), [x, y] per scan position.
        Held-image form: `offsets` (B, c, 2) alone. Offsets may be float or
        integer (integers are cast, exactly). Non-finite offsets give a NaN
        patch for that patch alone.

    Output shape:
        (B, N, N, c) in the object's dtype. Complex objects stay complex
        under any dtype policy; real objects come out in the policy's
        compute dtype when it is a mixed policy (e.g. "mixed_float16").
    """

    def __init__(
        self,
        patch_size,
        batched=True,
        image=None,
        image_shape=None,
        image_dtype=None,
        trainable_image=False,
        interpolation="bilinear",
        fourier_margin=1,
        **kwargs,
    ):
        # Offsets must keep their float32/float64 precision under mixed
        # precision: Keras's input autocast would turn them into float16.
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.patch_size = validation.check_positive_int(patch_size, "patch_size")
        self.batched = validation.check_batched(batched)
        self.interpolation, self.fourier_margin = validation.check_interpolation(
            interpolation, fourier_margin, self.batched
        )
        if not isinstance(trainable_image, bool):
            raise ValueError(
                "Argument `trainable_image` must be a bool. "
                f"Received: trainable_image={trainable_image!r}"
            )
        self.trainable_image = trainable_image

        if image is not None:
            image = validation.single_object(np.asarray(image), "image")
            if image_shape is not None and tuple(image_shape) != image.shape:
                raise ValueError(
                    "Arguments `image` and `image_shape` disagree. Received: "
                    f"image.shape={image.shape}, image_shape={image_shape!r}"
                )
            image_shape = image.shape
            image_dtype = image_dtype or str(image.dtype)
        if image_shape is not None:
            image_shape = validation.check_image_shape(image_shape)
            image_dtype = standardize_dtype(image_dtype or "complex64")
            validation.check_object_size(
                1, *image_shape, self.patch_size, backends.current().IMPLEMENTATION,
                "image_shape", f"image_shape={tuple(image_shape)}",
            )
        self.image_shape = image_shape
        self.image_dtype = image_dtype if image_shape is not None else None

        self.image_variable = None
        if image_shape is not None:
            shape, dtype = held_image.stored_as(image_shape, self.image_dtype)
            self.image_variable = self.add_weight(
                name="image",
                shape=shape,
                dtype=dtype,
                initializer="zeros",
                trainable=trainable_image,
                autocast=False,
            )
            if image is not None:
                self.image_variable.assign(
                    held_image.stored_values(image, self.image_dtype)
                )
            # Nothing else to build: the held form is usable (and
            # `count_params()` answers) before its first call.
            self.built = True

    def __call__(self, inputs, **kwargs):
        return layer_calls.call(
            self, super().__call__, inputs, kwargs, single=self.holds_image
        )

    @property
    def holds_image(self):
        return self.image_variable is not None

    @property
    def image(self):
        """The held (H, W) object as a tensor in `image_dtype`, or None."""
        if not self.holds_image:
            return None
        return held_image.image_of(self.image_variable, self.image_dtype)

    def load_own_variables(self, store):
        old = store["0"] if self.holds_image and "0" in store else None
        pairs = held_image.pairs_from_old_file(old, self.image_shape, self.name)
        if pairs is None:
            super().load_own_variables(store)
        else:
            self.image_variable.assign(pairs)

    def _split(self, inputs):
        """Return (images, offsets) from either form's inputs (tensors or,
        in `build` and `compute_output_shape`, their shapes)."""
        if _is_shape(inputs):
            inputs = (inputs,)
        if isinstance(inputs, dict):
            if set(inputs) != {"images", "offsets"}:
                raise ValueError(
                    "A dict input must have exactly the keys 'images' and "
                    f"'offsets'. Received keys: {sorted(inputs)}"
                )
            pair = (inputs["images"], inputs["offsets"])
        elif isinstance(inputs, (list, tuple)):
            pair = tuple(inputs)
        else:
            pair = (inputs,)

        if self.holds_image:
            if len(pair) != 1:
                raise ValueError(
                    "This PatchExtraction layer holds its image: call it on "
                    "`offsets` alone, shape (B, c, 2). Received "
                    f"{len(pair)} inputs."
                )
            return None, pair[0]
        if len(pair) != 2:
            raise ValueError(
                "This PatchExtraction layer holds no image: call it on "
                "`(images, offsets)` or {'images': ..., 'offsets': ...}, or "
                "give it `image=` to hold one. Received "
                f"{len(pair)} input(s)."
            )
        return pair

    def _check_shapes(self, images_shape, offsets_shape):
        offsets_shape = validation.check_offsets_shape(offsets_shape)
        if images_shape is not None:
            images_shape = validation.check_images_shape(images_shape)
            validation.check_batches_match(images_shape, offsets_shape)

    def build(self, input_shape):
        self._check_shapes(*self._split(input_shape))

    def call(self, inputs):
        images, offsets = self._split(inputs)
        if images is None:
            validation.check_real_offsets(offsets)
            offsets = ops.convert_to_tensor(offsets)
            validation.check_offsets_shape(offsets.shape)
            images = functional.as_float(ops.expand_dims(self.image, 0), self.image_dtype)
        else:
            images, offsets = functional.prepare_inputs(images, offsets)
        onnx_export.check_real(
            images.dtype, "image" if self.holds_image else "images"
        )
        onnx_export.check_kernel(self.interpolation)
        kernel = operators.kernel_spec(self.interpolation, self.fourier_margin)
        patches = functional.dispatch(
            images, offsets, self.patch_size, self.batched, kernel
        )
        if standardize_dtype(patches.dtype) not in _COMPLEX and _is_mixed(
            self.dtype_policy
        ):
            patches = ops.cast(patches, self.compute_dtype)
        return patches

    def compute_output_shape(self, input_shape):
        _, offsets_shape = self._split(input_shape)
        batch, groups = tuple(offsets_shape)[:2]
        return (batch, self.patch_size, self.patch_size, groups)

    def compute_output_spec(self, inputs):
        images, offsets = self._split(inputs)
        # The held form is built at construction: its symbolic calls are
        # checked here.
        self._check_shapes(None if images is None else images.shape, offsets.shape)
        shape = self.compute_output_shape(
            offsets.shape if images is None else (images.shape, offsets.shape)
        )
        dtype = standardize_dtype(self.image_dtype if images is None else images.dtype)
        dtype = functional.computed_dtype(dtype)
        if dtype not in _COMPLEX and _is_mixed(self.dtype_policy):
            dtype = self.compute_dtype
        return keras.KerasTensor(shape, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "patch_size": self.patch_size,
                "batched": self.batched,
                "image_shape": (
                    list(self.image_shape) if self.holds_image else None
                ),
                "image_dtype": self.image_dtype,
                "trainable_image": self.trainable_image,
                "interpolation": self.interpolation,
                "fourier_margin": self.fourier_margin,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return validation.layer_from_config(cls, config)


def _is_shape(value):
    """A single shape (a tuple of ints and None), not a tuple of shapes."""
    return isinstance(value, (tuple, list)) and all(
        size is None or isinstance(size, (int, np.integer)) for size in value
    ) and len(value) > 0


def _is_mixed(policy):
    return policy.compute_dtype != policy.variable_dtype
