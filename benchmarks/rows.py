"""The rows of the table: this layer, its peers and the copy floor.

A row is a zero-argument callable returning (B', N, N, c) patches for the
first B' rows of the case's offsets (B' = B unless the row times a subset
and scales its time up), with what the table needs to describe it.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

from ptycho_layers import ops as patch_ops
from ptycho_layers.ops import padded_table
from ptycho_layers.functional import extract_patches
from benchmarks import backends
from benchmarks import case as case_lib
from benchmarks import peers
from benchmarks import working_memory

__all__ = [
    "ROW_IDS",
    "LAYER_MODES",
    "Row",
    "RowSettings",
    "build_rows",
    "max_error",
    "subset_note",
]

ROW_IDS = (
    "legacy",
    "tiled",
    "crop_and_resize",
    "layer_eager",
    "layer_graph",
    "layer_xla",
    "copy_numpy",
    "copy_backend",
)
LAYER_MODES = {"layer_eager": "eager", "layer_graph": "graph", "layer_xla": "xla"}

_GIB = 1 << 30


@dataclasses.dataclass
class Row:
    """A row of the table.

    fn: () -> the row's output for `patches` patches (None if skipped);
    scale: K divided by `patches` (the time is multiplied by it); estimate:
    analytic working memory in bytes; skip: why the row does not run;
    expected: None, or () -> (reference, float64 or None), what this row's
    output is checked against instead of the table's (a subset, a copy);
    temp: None, or () -> the XLA temp bytes of the row's compiled program
    (None where they cannot be read), asked after the row has run.
    """

    id: str
    label: str
    fn: Optional[Callable] = None
    patches: int = 0
    scale: float = 1.0
    estimate: Optional[int] = None
    skip: Optional[str] = None
    expected: Optional[Callable] = None
    temp: Optional[Callable] = None


@dataclasses.dataclass
class RowSettings:
    """legacy_patches: patches the legacy loop times when K is larger.
    tiled_budget: bytes a chunk of the tiled batch may use.
    tiled_full_bytes: the tiled batch times all K patches while K padded
    objects fit in this many bytes, else `legacy_patches` of them."""

    legacy_patches: int = 32
    tiled_budget: int = _GIB
    tiled_full_bytes: int = 2 * _GIB


def max_error(patches, reference):
    """Max |patches - reference| over the rows `patches` covers."""
    patches = backends.to_numpy(patches)
    return float(np.max(np.abs(patches - reference[: patches.shape[0]]), initial=0))


def _tensors(case):
    return backends.to_tensor(case.images), backends.to_tensor(case.offsets)


def subset_note(part, case):
    """The label's note for a row timed on `part`, a subset of `case`."""
    if part.count == case.count:
        return ""
    return f", timed on {part.count} of {case.count} patches, x{case.count / part.count:.0f}"


def _legacy(case, settings, reference):
    part = case.subset(settings.legacy_patches)
    mode = backends.peer_mode()
    size = case.patch_size
    fn = backends.compile_fn(
        lambda im, off: patch_ops.extract_patches_legacy(im, off, size), mode
    )
    images, offsets = _tensors(part)
    padded = case_lib.padded_object_bytes(case, size // 2)
    return Row(
        "legacy",
        f"legacy (batched=False, {backends.mode_label(mode)}{subset_note(part, case)})",
        lambda: fn(images, offsets),
        patches=part.count,
        scale=case.count / part.count,
        # One gathered padded object, its translation and a temporary,
        # plus the channel canvas and the complex result.
        estimate=3 * padded + 2 * part.output_bytes,
    )


def _tiled(case, settings, reference):
    padded = case_lib.padded_object_bytes(case, case.patch_size // 2)
    chunk = peers.tiled_chunk(padded, settings.tiled_budget)
    part = case
    if case.count * padded > settings.tiled_full_bytes:
        part = case.subset(settings.legacy_patches)
    chunk = min(chunk, part.count)
    mode = backends.peer_mode()
    size = case.patch_size
    fn = backends.compile_fn(
        lambda im, off: peers.tiled_batch(im, off, size, chunk), mode
    )
    images, offsets = _tensors(part)
    return Row(
        "tiled",
        f"tiled batch (affine_transform, chunks of {chunk}, "
        f"{backends.mode_label(mode)}{subset_note(part, case)})",
        lambda: fn(images, offsets),
        patches=part.count,
        scale=case.count / part.count,
        estimate=3 * chunk * padded + 2 * part.output_bytes,
    )


def _crop_and_resize(case, settings, reference):
    label = "tf.image.crop_and_resize"
    if backends.name() != "tensorflow":
        return Row("crop_and_resize", label, skip="skipped: TensorFlow only")
    size = case.patch_size
    fn = backends.compile_fn(
        lambda im, off: peers.crop_and_resize(im, off, size), "graph"
    )
    images, offsets = _tensors(case)
    channels = 2 if np.dtype(case.dtype).kind == "c" else 1
    crops = case.count * size**2 * channels * 4  # always float32
    return Row(
        "crop_and_resize",
        f"{label} (C++ kernel, {backends.mode_label('graph')})",
        lambda: fn(images, offsets),
        patches=case.count,
        estimate=case_lib.padded_object_bytes(case, 1) + crops + case.output_bytes,
    )


def _layer(row_id):
    mode = LAYER_MODES[row_id]

    def build(case, settings, reference):
        label = f"this layer, {backends.mode_label(mode)}"
        reason = backends.mode_unavailable(mode)
        if reason:
            return Row(row_id, label, skip=reason)
        size = case.patch_size
        fn = backends.compile_fn(
            lambda im, off: extract_patches(im, off, size), mode
        )
        images, offsets = _tensors(case)
        groups, channels = case.offsets.shape[:2]
        shape = (1,) + tuple(case.shape)
        if padded_table.fits(shape, groups, channels, size):
            # The output and the padded table; no window buffer.
            count, height, width = shape
            working = count * padded_table.length(height, width, size + 1) * case.itemsize
        else:
            # The (N+1)^2 windows of the largest piece of the batch, alive
            # one piece at a time.
            pieces = patch_ops.batch_pieces(groups, channels, size)
            largest = max((stop or groups) - start for start, stop in pieces)
            working = largest * channels * (size + 1) ** 2 * case.itemsize
        return Row(
            row_id,
            label,
            lambda: fn(images, offsets),
            patches=case.count,
            estimate=case.output_bytes + working,
            temp=lambda: working_memory.compiled_temp_bytes(images, offsets, size),
        )

    return build


def _copy_numpy(case, settings, reference):
    # C order, whatever the layout of the layer's output (PyTorch's is a
    # view with the groups moved last): copied from a strided array,
    # np.copyto took 4.5 ms, not 1.2, and would no longer be the floor.
    source = np.ascontiguousarray(reference)
    # A written copy, not np.empty: its pages must be resident already, or
    # the first copy would count them as new memory.
    target = source.copy()

    def copy():
        np.copyto(target, source)
        return target

    return Row(
        "copy_numpy",
        "output copy, np.copyto into a preallocated array",
        copy,
        patches=case.count,
        estimate=0,
    )


def _copy_backend(case, settings, reference):
    source = backends.to_tensor(np.ascontiguousarray(reference))
    return Row(
        "copy_backend",
        f"output copy, {backends.native_copy_label()}",
        lambda: backends.native_copy(source),
        patches=case.count,
        estimate=case.output_bytes,
    )


_BUILDERS = {
    "legacy": _legacy,
    "tiled": _tiled,
    "crop_and_resize": _crop_and_resize,
    "layer_eager": _layer("layer_eager"),
    "layer_graph": _layer("layer_graph"),
    "layer_xla": _layer("layer_xla"),
    "copy_numpy": _copy_numpy,
    "copy_backend": _copy_backend,
}


def build_rows(case, ids=ROW_IDS, settings=None, reference=None):
    """The rows named by `ids`, in table order.

    Args:
        case: a `case.Case`.
        ids: row ids from `ROW_IDS`.
        settings: a `RowSettings` (defaults if None).
        reference: (B, N, N, c) numpy patches of the case, the source of the
            copy rows (zeros of that shape if None).
    """
    settings = settings or RowSettings()
    if reference is None:
        size = case.patch_size
        reference = np.zeros(
            (case.offsets.shape[0], size, size, case.offsets.shape[1]), case.dtype
        )
    return [_BUILDERS[i](case, settings, reference) for i in ROW_IDS if i in ids]
