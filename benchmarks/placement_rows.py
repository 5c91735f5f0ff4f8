"""The rows of the placement table (``--operator place``): this layer's
`place_patches` and `reassemble`, their peers, the copy floor and the
zeroing of the object.

Every row places the case's patches (the float64 reference extraction of
the case, in its dtype) at the case's offsets into one object, and returns
it, (1, H, W); a row timed on a subset places the patches of the first B'
rows of offsets. The copy rows return the patches, the zeroing row a zero
object: each row is checked against what it should return.
"""

import numpy as np
from keras import ops

from ptycho_layers.placement import place_patches
from ptycho_layers.placement import reassemble
from benchmarks import backends
from benchmarks import case as case_lib
from benchmarks import peers
from benchmarks import working_memory
from benchmarks.rows import Row
from benchmarks.rows import RowSettings
from benchmarks.rows import subset_note

__all__ = [
    "ROW_IDS",
    "LAYER_MODES",
    "case_patches",
    "object_bytes",
    "checks",
    "build_rows",
]

ROW_IDS = (
    "place_legacy",
    "scatter_nd",
    "place_eager",
    "place_graph",
    "place_xla",
    "reassemble",
    "copy_numpy",
    "copy_backend",
    "zero_object",
)
LAYER_MODES = {"place_eager": "eager", "place_graph": "graph", "place_xla": "xla"}
# The mode `reassemble` is timed in: the backend's fastest for placement
# (XLA on TensorFlow; jax.jit; eager on torch, where torch.compile may not
# run).
_BEST_MODE = {"tensorflow": "xla", "jax": "graph", "torch": "eager"}
# Placement sums every patch reaching a pixel: checked to 1e-3 of the
# placed object's largest value, the same bar as extraction's.
_TOLERANCE = 1e-3


def case_patches(case):
    """(B, N, N, c) numpy patches to place: the float64 reference
    extraction of the case, in the case's dtype."""
    patches = peers.reference_patches(case.images, case.offsets, case.patch_size)
    # C order: copied from a strided array, np.copyto took 4.5 ms, not 1.2.
    return np.ascontiguousarray(patches.astype(case.dtype))


def object_bytes(case):
    height, width = case.shape
    return height * width * case.itemsize


def _eager(case, patches):
    """This layer's eager placement of `patches` (the first rows of the
    case's offsets), as numpy."""
    offsets = case.offsets[: patches.shape[0]]
    return backends.to_numpy(place_patches(
        backends.to_tensor(patches), backends.to_tensor(offsets), case.shape
    ))


def _float64(case, patches):
    return peers.reference_placement(patches, case.offsets[: patches.shape[0]], case.shape)


def checks(case, patches):
    """What the table's rows are checked against: this layer's eager
    placement of all the patches, the float64 reference placement, the
    tolerance and the error between the two."""
    reference = _eager(case, patches)
    float64 = _float64(case, patches)
    scale = float(np.max(np.abs(reference), initial=0)) or 1.0
    return {
        "reference": reference,
        "float64": float64,
        "tolerance": _TOLERANCE * scale,
        "reference_error": float(np.max(np.abs(reference - float64), initial=0)),
        "output_bytes": object_bytes(case),
        "patches_bytes": case.output_bytes,
    }


def _tensors(case, patches):
    rows = patches.shape[0]
    return backends.to_tensor(patches), backends.to_tensor(case.offsets[:rows])


def _legacy(case, settings, patches):
    part = case.subset(settings.legacy_patches)
    subset = patches[: part.offsets.shape[0]]
    mode = backends.peer_mode()
    shape = case.shape
    fn = backends.compile_fn(
        lambda p, off: place_patches(p, off, shape, batched=False), mode
    )
    inputs = _tensors(case, subset)
    padded = case_lib.padded_object_bytes(case, case.patch_size // 2)
    return Row(
        "place_legacy",
        f"legacy shift-and-sum (batched=False, {backends.mode_label(mode)}"
        f"{subset_note(part, case)})",
        lambda: fn(*inputs),
        patches=part.count,
        scale=case.count / part.count,
        # Per patch: its padded canvas, the two translation passes and a
        # temporary; the object carried through the loop, and its update.
        estimate=4 * padded + 2 * object_bytes(case),
        expected=lambda: (_eager(case, subset), _float64(case, subset)),
    )


def _scatter_nd(case, settings, patches):
    label = "tf.tensor_scatter_nd_add"
    if backends.name() != "tensorflow":
        return Row("scatter_nd", label, skip="skipped: TensorFlow only")
    shape = case.shape
    fn = backends.compile_fn(
        lambda p, off: peers.scatter_nd_placement(p, off, shape), "graph"
    )
    inputs = _tensors(case, patches)
    updates = 4 * case.count * case.patch_size**2
    return Row(
        "scatter_nd",
        f"{label} (4 updates per value, {backends.mode_label('graph')})",
        lambda: fn(*inputs),
        patches=case.count,
        # The int32 indices and the updates, each stacked from four parts.
        estimate=2 * updates * (4 + case.itemsize) + object_bytes(case),
    )


def _layer(row_id):
    mode = LAYER_MODES[row_id]

    def build(case, settings, patches):
        label = f"place_patches, {backends.mode_label(mode)}"
        reason = backends.mode_unavailable(mode)
        if reason:
            return Row(row_id, label, skip=reason)
        shape = case.shape
        fn = backends.compile_fn(lambda p, off: place_patches(p, off, shape), mode)
        inputs = _tensors(case, patches)
        windows = case.count * (case.patch_size + 1) ** 2 * case.itemsize
        return Row(
            row_id,
            label,
            lambda: fn(*inputs),
            patches=case.count,
            # The object, and every patch's (N+1)^2 window of contributions.
            estimate=object_bytes(case) + windows,
            temp=lambda: working_memory.placement_temp_bytes(*inputs, shape),
        )

    return build


def _reassemble(case, settings, patches):
    mode = _BEST_MODE[backends.name()]
    shape = case.shape
    fn = backends.compile_fn(lambda p, off: reassemble(p, off, shape), mode)
    inputs = _tensors(case, patches)

    def expected():
        eager = backends.to_numpy(reassemble(*inputs, shape))
        total = _float64(case, patches)
        ones = np.ones(patches.shape, np.float64)
        coverage = _float64(case, ones)
        covered = coverage > 0
        average = np.where(covered, total / np.where(covered, coverage, 1), 0)
        return eager, average

    windows = case.count * (case.patch_size + 1) ** 2 * case.itemsize
    coord_bytes = 8 if case.dtype in ("float64", "complex128") else 4
    masks = case.count * case.patch_size**2 * coord_bytes
    return Row(
        "reassemble",
        f"reassemble(crop=None), {backends.mode_label(mode)}",
        lambda: fn(*inputs),
        patches=case.count,
        # Two placements (the patches, the real masks) and the quotient.
        estimate=windows + masks + 3 * object_bytes(case),
        expected=expected,
    )


def _copy_numpy(case, settings, patches):
    # A written copy, not np.empty: its pages must be resident already.
    target = patches.copy()

    def copy():
        np.copyto(target, patches)
        return target

    return Row(
        "copy_numpy",
        "patches copy, np.copyto into a preallocated array",
        copy,
        patches=case.count,
        estimate=0,
        expected=lambda: (patches, None),
    )


def _copy_backend(case, settings, patches):
    source = backends.to_tensor(patches)
    return Row(
        "copy_backend",
        f"patches copy, {backends.native_copy_label()}",
        lambda: backends.native_copy(source),
        patches=case.count,
        estimate=case.output_bytes,
        expected=lambda: (patches, None),
    )


def _zero_object(case, settings, patches):
    shape = (1, *case.shape)
    return Row(
        "zero_object",
        f"object zeroing, keras.ops.zeros({shape}, {case.dtype})",
        lambda: ops.zeros(shape, case.dtype),
        patches=case.count,
        estimate=object_bytes(case),
        expected=lambda: (np.zeros(shape, case.dtype), None),
    )


_BUILDERS = {
    "place_legacy": _legacy,
    "scatter_nd": _scatter_nd,
    "place_eager": _layer("place_eager"),
    "place_graph": _layer("place_graph"),
    "place_xla": _layer("place_xla"),
    "reassemble": _reassemble,
    "copy_numpy": _copy_numpy,
    "copy_backend": _copy_backend,
    "zero_object": _zero_object,
}


def build_rows(case, ids=ROW_IDS, settings=None, patches=None):
    """The rows named by `ids`, in table order.

    Args:
        case: a `case.Case`.
        ids: row ids from `ROW_IDS`.
        settings: a `rows.RowSettings` (defaults if None).
        patches: (B, N, N, c) numpy patches to place (`case_patches(case)`
            if None).
    """
    settings = settings or RowSettings()
    if patches is None:
        patches = case_patches(case)
    return [_BUILDERS[i](case, settings, patches) for i in ROW_IDS if i in ids]
