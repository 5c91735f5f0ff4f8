"""Placement's table (``--operator place``): `place_patches` and
`reassemble` against the legacy per-patch shift-and-sum and TensorFlow's
`tensor_scatter_nd_add`, with the zeroing of the object timed alongside.

Every row places the case's patches (its float64 reference extraction, in
its dtype) at its offsets into one object, and returns it, (1, H, W); the
copy rows return the patches, the zeroing row a zero object, and each row
is checked against what it should return.
"""

import numpy as np
from keras import ops

import ptycho_layers
from benchmarks import backends
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
               "reassemble", "copy_numpy", "copy_backend", "zero_object")
    layer_modes = {"place_eager": "eager", "place_graph": "graph", "place_xla": "xla"}
    sweep_ids = ("place_eager", "place_graph", "place_xla", "scatter_nd", "place_legacy")

    def call(self, case, batched=True):
        shape = case.shape
        return lambda patches, offsets: ptycho_layers.place_patches(
            patches, offsets, shape, batched=batched
        )

    def source(self, case):
        return case.patches

    def float64(self, case, patches=None):
        patches = case.patches if patches is None else patches
        return peers.reference_placement(patches, case.offsets, case.shape)

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
        # The object, and every patch's (N+1)^2 window of contributions.
        return case.object_bytes + case.count * (case.patch_size + 1) ** 2 * case.itemsize

    def layer_temp(self, case, patches, offsets):
        return working_memory.placement_temp_bytes(patches, offsets, case.shape)

    def peer_rows(self):
        return {"scatter_nd": self.scatter_nd_row, "reassemble": self.reassemble_row,
                "zero_object": self.zero_object_row}

    def scatter_nd_row(self, case, settings):
        label = "tf.tensor_scatter_nd_add"
        skipped = rows.tensorflow_only("scatter_nd", label)
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
            eager = backends.to_numpy(ptycho_layers.reassemble(*self.inputs(case), shape))
            total = self.float64(case)
            coverage = self.float64(case, np.ones(case.patches.shape, np.float64))
            covered = coverage > 0
            return eager, np.where(covered, total / np.where(covered, coverage, 1), 0)

        coord_bytes = 8 if case.dtype in ("float64", "complex128") else 4
        masks = case.count * case.patch_size**2 * coord_bytes
        windows = case.count * (case.patch_size + 1) ** 2 * case.itemsize
        return self.timed(
            "reassemble", f"reassemble(crop=None), {backends.mode_label(mode)}",
            lambda p, off: ptycho_layers.reassemble(p, off, shape), mode, case,
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
