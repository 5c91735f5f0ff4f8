"""Extraction's table (``--operator extract``, the default):
`extract_patches` against the legacy per-patch translate, a tiled batch
translate and TensorFlow's `crop_and_resize` (bilinear peers), pty-chi's
`extract_patches_fourier_shift` and the FFT floor (Fourier); its output is
(B, N, N, c) patches."""

import numpy as np

import ptycho_layers
from benchmarks import backends
from benchmarks import internals
from benchmarks import peers
from benchmarks import rows
from benchmarks import working_memory
from benchmarks.case import padded_object_bytes

__all__ = ["Extraction", "EXTRACT"]



class Extraction(rows.Operator):
    name = "extract"
    layer_label = "this layer"
    legacy_id = legacy_label = "legacy"
    copied = "output"
    wrt = "object"
    row_ids = ("legacy", "tiled", "crop_and_resize", "layer_eager", "layer_graph",
               "layer_xla", "copy_numpy", "copy_backend", "fft_floor", "ptychi_fourier")
    layer_modes = {"layer_eager": "eager", "layer_graph": "graph", "layer_xla": "xla"}
    sweep_ids = ("layer_eager", "layer_graph", "layer_xla", "crop_and_resize", "tiled",
                 "legacy")

    ptychi_function = "extract_patches_fourier_shift"

    def call(self, case, batched=True):
        size, kernel = case.patch_size, case.kernel
        return lambda images, offsets: ptycho_layers.extract_patches(
            images, offsets, size, batched=batched, **kernel
        )

    def source(self, case):
        return case.images

    def float64(self, case):
        return case.reference

    def output_shape(self, case):
        size = case.patch_size
        return (case.offsets.shape[0], size, size, case.offsets.shape[1])

    def value_scale(self, case, reference):
        return np.max(np.abs(case.images))

    # The notes' words for what differs.
    case_words = "from a {height}x{width} {dtype} object"
    scale_words = "the object's largest value"
    float64_words = "evaluation of the convention"
    extra_notes = ()

    def legacy_estimate(self, case, part):
        # One gathered padded object, its translation and a temporary,
        # plus the channel canvas and the complex result.
        return 3 * padded_object_bytes(case, case.patch_size // 2) + 2 * part.patches_bytes

    def layer_estimate(self, case):
        size = case.patch_size
        batch, groups = case.offsets.shape[:2]
        spec = internals.kernel_spec(**case.kernel)
        window = internals.window_size(size, spec)
        how = internals.extraction_reader(backends.to_tensor(case.images), batch, groups, size,
                                          spec)
        if how == "padded":
            # The output and a padded copy of the object; no window buffer.
            working = internals.padded_table_length(*case.shape, window) * case.itemsize
        elif how == "fused":
            # The object's own runs, read into the blend: no buffer.
            working = 0
        else:
            # The windows of the largest piece of the batch, alive one
            # piece at a time.
            pieces = internals.batch_pieces(batch, groups, size, window)
            largest = max((stop or batch) - start for start, stop in pieces)
            working = largest * groups * window**2 * case.itemsize
        return case.patches_bytes + working

    def layer_temp(self, case, images, offsets):
        return working_memory.compiled_temp_bytes(images, offsets, case.patch_size,
                                                  internals.kernel_spec(**case.kernel))

    def peer_rows(self):
        return {"tiled": self.tiled_row, "crop_and_resize": self.crop_and_resize_row}

    def fft_windows(self, case):
        return peers.fourier_windows(case.images, case.offsets, case.patch_size,
                                     case.fourier_margin)

    def ptychi_row(self, case, label):
        import torch

        size, margin = case.patch_size, case.fourier_margin
        batch_groups = case.offsets.shape[:2]
        image = backends.to_tensor(case.images[0])
        positions = torch.as_tensor(peers.ptychi_positions(case.offsets, size),
                                    dtype=rows.coordinate_dtype(case))
        module = peers.load_ptychi()[0]
        return self.timed(
            "ptychi_fourier", label,
            lambda im, off: peers.ptychi_extraction(module, image, positions, size, margin,
                                                    batch_groups),
            "eager", case,
            # Its padded copy of the object, the K windows and their spectra.
            estimate=padded_object_bytes(case, size) + 3 * case.count * case.window_size**2
            * 2 * case.itemsize + case.patches_bytes,
        )

    def tiled_row(self, case, settings):
        size = case.patch_size
        skipped = rows.bilinear_only("tiled", "tiled batch (affine_transform)", case)
        if skipped:
            return skipped
        padded = padded_object_bytes(case, size // 2)
        part = case
        if case.count * padded > settings.tiled_full_bytes:
            part = case.subset(settings.legacy_patches)
        chunk = min(peers.tiled_chunk(padded, settings.tiled_budget), part.count)
        mode = backends.peer_mode()
        label = (f"tiled batch (affine_transform, chunks of {chunk}, "
                 f"{backends.mode_label(mode)}{rows.subset_note(part, case)})")
        return self.timed(
            "tiled", label, lambda im, off: peers.tiled_batch(im, off, size, chunk),
            mode, case, part, estimate=3 * chunk * padded + 2 * part.patches_bytes,
        )

    def crop_and_resize_row(self, case, settings):
        label = "tf.image.crop_and_resize"
        skipped = rows.bilinear_only("crop_and_resize", label, case) or rows.tensorflow_only(
            "crop_and_resize", label)
        if skipped:
            return skipped
        size = case.patch_size
        channels = 2 if np.dtype(case.dtype).kind == "c" else 1
        crops = case.count * size**2 * channels * 4  # always float32
        return self.timed(
            "crop_and_resize", f"{label} (C++ kernel, {backends.mode_label('graph')})",
            lambda im, off: peers.crop_and_resize(im, off, size), "graph", case,
            estimate=padded_object_bytes(case, 1) + crops + case.patches_bytes,
        )


EXTRACT = Extraction()
