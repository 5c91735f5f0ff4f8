"""Placement's table (``--operator place``): `place_patches` and
`reassemble` against the legacy per-patch shift-and-sum and TensorFlow's
`tensor_scatter_nd_add` (bilinear peers), pty-chi's
`place_patches_fourier_shift` and the FFT floor (Fourier), with the
zeroing of the object timed alongside.

Every row places the case's patches (its float64 reference extraction, in
its dtype) at its offsets into one object, and returns it, (1, H, W); the
copy rows return the patches, the zeroing row a zero object, and each row
is checked against what it should return.
"""

import numpy as np
from keras import ops

import ptycho_layers
from benchmarks import backends
from benchmarks import internals
from benchmarks import peers
from benchmarks import rows
from benchmarks import working_memory
from benchmarks.case import padded_object_bytes

__all__ = ["Placement", "PLACE"]

# The mode `reassemble` is timed in: the backend's fastest for placement
# (XLA on TensorFlow; jax.jit; eager on torch, where torch.compile may not
# run).
_BEST_MODE = {"tensorflow": "xla", "jax": "graph", "torch": "eager"}


class Placement(rows.Operator):
    name = "place"
    layer_label = "place_patches"
    legacy_id, legacy_label = "place_legacy", "legacy shift-and-sum"
    copied = wrt = "patches"
    zeroes_object = True
    row_ids = ("place_legacy", "scatter_nd", "place_eager", "place_graph", "place_xla",
               "reassemble", "copy_numpy", "copy_backend", "zero_object", "fft_floor",
               "ptychi_fourier")
    layer_modes = {"place_eager": "eager", "place_graph": "graph", "place_xla": "xla"}
    sweep_ids = ("place_eager", "place_graph", "place_xla", "scatter_nd", "place_legacy")

    ptychi_function = "place_patches_fourier_shift"

    def call(self, case, batched=True):
        shape, kernel = case.shape, case.kernel
        return lambda patches, offsets: ptycho_layers.place_patches(
            patches, offsets, shape, batched=batched, **kernel
        )

    def source(self, case):
        return case.patches

    def float64(self, case, patches=None):
        patches = case.patches if patches is None else patches
        return peers.reference_placement(patches, case.offsets, case.shape, **case.kernel)

    def output_shape(self, case):
        return (1, *case.shape)

    def value_scale(self, case, reference):
        # Placement sums every patch reaching a pixel: 1e-3 of the placed
        # object's largest value.
        return np.max(np.abs(reference), initial=0)

    # The notes' words for what differs.
    case_words = ("(the float64 reference extraction of the case) placed into one "
                  "{height}x{width} {dtype} object")
    scale_words = "the placed object's largest value"
    float64_words = "placement (np.add.at)"
    extra_notes = (
        "XLA temp target for place_patches: <= 1x the patches. object zeroing: "
        "the cost of the fresh object every placement fills; --scaling reports "
        "placement at 392 vs 2048 with it subtracted.",
    )

    def legacy_estimate(self, case, part):
        # Per patch: its padded canvas, the two translation passes and a
        # temporary; the object carried through the loop, and its update.
        return 4 * padded_object_bytes(case, case.patch_size // 2) + 2 * case.object_bytes

    def layer_estimate(self, case):
        # The object, and every patch's window of contributions.
        return case.object_bytes + case.count * case.window_size**2 * case.itemsize

    def layer_temp(self, case, patches, offsets):
        return working_memory.placement_temp_bytes(patches, offsets, case.shape,
                                                   internals.kernel_spec(**case.kernel))

    def peer_rows(self):
        return {"scatter_nd": self.scatter_nd_row, "reassemble": self.reassemble_row,
                "zero_object": self.zero_object_row}

    def fft_windows(self, case):
        return peers.padded_patches(case.patches, case.fourier_margin)

    def ptychi_row(self, case, label):
        import torch

        size, margin, shape = case.patch_size, case.fourier_margin, case.shape
        positions = torch.as_tensor(peers.ptychi_positions(case.offsets, size),
                                    dtype=rows.coordinate_dtype(case))
        module = peers.load_ptychi()[0]

        def place(patches, offsets):
            # (B, N, N, c) -> pty-chi's (K, N, N), b-major.
            flat = patches.permute(0, 3, 1, 2).reshape(-1, size, size)
            return peers.ptychi_placement(module, flat, positions, shape, margin)

        return self.timed(
            "ptychi_fourier", label, place, "eager", case,
            # The object, its padded copy, the padded patches and their spectra.
            estimate=case.object_bytes + padded_object_bytes(case, size)
            + 3 * case.count * case.window_size**2 * case.itemsize,
        )

    def scatter_nd_row(self, case, settings):
        label = "tf.tensor_scatter_nd_add"
        skipped = rows.bilinear_only("scatter_nd", label, case) or rows.tensorflow_only(
            "scatter_nd", label)
        if skipped:
            return skipped
        shape = case.shape
        updates = 4 * case.count * case.patch_size**2
        return self.timed(
            "scatter_nd", f"{label} (4 updates per value, {backends.mode_label('graph')})",
            lambda p, off: peers.scatter_nd_placement(p, off, shape), "graph", case,
            # The int32 indices and the updates, each stacked from four parts.
            estimate=2 * updates * (4 + case.itemsize) + case.object_bytes,
        )

    def reassemble_row(self, case, settings):
        mode = _BEST_MODE[backends.name()]
        shape = case.shape

        def expected():
            eager = backends.to_numpy(ptycho_layers.reassemble(*self.inputs(case), shape,
                                                               **case.kernel))
            total = self.float64(case)
            coverage = self.float64(case, np.ones(case.patches.shape, np.float64))
            covered = coverage > 0
            return eager, np.where(covered, total / np.where(covered, coverage, 1), 0)

        coord_bytes = 8 if case.dtype in ("float64", "complex128") else 4
        masks = case.count * case.patch_size**2 * coord_bytes
        windows = case.count * case.window_size**2 * case.itemsize
        kernel = case.kernel
        return self.timed(
            "reassemble", f"reassemble(crop=None), {backends.mode_label(mode)}",
            lambda p, off: ptycho_layers.reassemble(p, off, shape, **kernel), mode, case,
            # Two placements (the patches, the real masks) and the quotient.
            estimate=windows + masks + 3 * case.object_bytes, expected=expected,
        )

    def zero_object_row(self, case, settings):
        shape = (1, *case.shape)
        return rows.Row(
            "zero_object", f"object zeroing, keras.ops.zeros({shape}, {case.dtype})",
            lambda: ops.zeros(shape, case.dtype), patches=case.count,
            estimate=case.object_bytes, expected=lambda: (np.zeros(shape, case.dtype), None),
        )


PLACE = Placement()
