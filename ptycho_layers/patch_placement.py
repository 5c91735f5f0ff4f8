"""The `PatchPlacement` Keras layer."""

import keras

from ptycho_layers import layer_calls
from ptycho_layers import onnx_export
from ptycho_layers import operators
from ptycho_layers import placement
from ptycho_layers import validation

__all__ = ["PatchPlacement"]


@keras.saving.register_keras_serializable(package="ptycho_layers")
class PatchPlacement(keras.layers.Layer):
    """Puts each row's patches back into an object: the adjoint of
    `PatchExtraction`, optionally averaged where the patches overlap.

    A patch of size N at offset `[x, y]` (x = column, in object pixels)
    adds its entry `[i, j]` at row `y - N//2 + i`, column `x - N//2 + j`,
    spread over the pixels it would have been sampled from by the same
    kernel (bilinear by default: up to four); what falls outside the
    object is dropped. Row b's c
    patches go into object b (Keras splits and joins batches by rows; to
    sum every row into one object, use `place_patches` or `reassemble`).

    Example:

    >>> import numpy as np, keras
    >>> patches = keras.Input((2, 2, 2))
    >>> offsets = keras.Input((2, 2))
    >>> image = PatchPlacement((3, 4), normalize=True)((patches, offsets))
    >>> model = keras.Model([patches, offsets], image)
    >>> values = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)], -1)
    >>> model.predict([values[None], np.array([[[1, 1], [2, 1]]])], verbose=0)[0]
    array([[1., 2., 3., 0.],
           [1., 2., 3., 0.],
           [0., 0., 0., 0.]], dtype=float32)

    Args:
        image_shape: (H, W) of the objects.
        batched: bool. True (default): the vectorized placement, O(K*N^2)
            whatever the object's size. False: PtychoPINN's per-patch
            shift-and-sum (O(H*W) per patch), kept as the reference.
        normalize: bool. False (default): the patches' sum (the adjoint of
            extraction). True: their average where they overlap, 0 where
            none reaches.
        crop: None (default: the whole patch) or the side of each patch's
            central square that counts, the rest taken as zero.
        interpolation: "bilinear" (default), "fourier" or "nearest": the
            kernel whose adjoint this is (see `PatchExtraction`). Bilinear
            only with `batched=False`.
        fourier_margin: m, a positive int (default 1), the Fourier
            kernel's margin.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        `(patches, offsets)` or `{"patches": ..., "offsets": ...}`:
        patches (B, N, N, c), real or complex; offsets (B, c, 2), [x, y].
        A patch whose offset is not finite adds nothing.

    Output shape:
        (B, H, W) in the patches' dtype.
    """

    def __init__(
        self, image_shape, batched=True, normalize=False, crop=None,
        interpolation="bilinear", fourier_margin=1, **kwargs,
    ):
        # Offsets keep their precision under mixed precision.
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.image_shape = validation.check_image_shape(image_shape)
        self.batched = validation.check_batched(batched)
        self.normalize = validation.check_bool(normalize, "normalize")
        self.crop = validation.check_crop(crop, None)
        self.interpolation, self.fourier_margin = validation.check_interpolation(
            interpolation, fourier_margin, self.batched
        )

    def __call__(self, inputs, **kwargs):
        return layer_calls.call(self, super().__call__, inputs, kwargs, single=False)

    def _split(self, inputs):
        if isinstance(inputs, dict):
            if set(inputs) != {"patches", "offsets"}:
                raise ValueError(
                    "A dict input must have exactly the keys 'patches' and "
                    f"'offsets'. Received keys: {sorted(inputs)}"
                )
            return inputs["patches"], inputs["offsets"]
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(
                "PatchPlacement takes `(patches, offsets)` or "
                "{'patches': ..., 'offsets': ...}. Received: "
                f"{type(inputs).__name__} of "
                f"{len(inputs) if isinstance(inputs, (list, tuple)) else 1} input(s)"
            )
        return tuple(inputs)

    def _check_shapes(self, patches_shape, offsets_shape):
        patches_shape = validation.check_patches_shape(patches_shape)
        offsets_shape = validation.check_offsets_shape(offsets_shape)
        validation.check_patches_match_offsets(patches_shape, offsets_shape)
        validation.check_crop(self.crop, patches_shape[1])
        return patches_shape

    def build(self, input_shape):
        self._check_shapes(*self._split(input_shape))

    def call(self, inputs):
        patches, offsets = placement.prepare_patches(*self._split(inputs))
        self._check_shapes(patches.shape, offsets.shape)
        onnx_export.check_real(patches.dtype, "patches")
        onnx_export.check_kernel(self.interpolation)
        kernel = operators.kernel_spec(self.interpolation, self.fourier_margin)
        if self.normalize:
            image, _ = placement.normalized(
                patches, offsets, self.image_shape, self.crop, self.batched, True,
                kernel=kernel,
            )
            return image
        patches = placement.cropped(patches, self.crop)
        return placement.dispatch(
            patches, offsets, self.image_shape, self.batched, True, kernel
        )

    def compute_output_shape(self, input_shape):
        patches_shape, _ = self._split(input_shape)
        return (patches_shape[0], *self.image_shape)

    def compute_output_spec(self, inputs):
        patches, offsets = self._split(inputs)
        shape = self.compute_output_shape((patches.shape, offsets.shape))
        return keras.KerasTensor(shape, dtype=patches.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_shape": list(self.image_shape),
                "batched": self.batched,
                "normalize": self.normalize,
                "crop": self.crop,
                "interpolation": self.interpolation,
                "fourier_margin": self.fourier_margin,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return validation.layer_from_config(cls, config)
