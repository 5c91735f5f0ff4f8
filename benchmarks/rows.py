"""The rows of a table, written once for both operators.

`Operator` is what a table times. A subclass (`extract.Extraction`,
`place.Placement`) supplies what differs: the layer's call, its input,
its float64 reference, its memory estimates and its own peers' rows. The
rows every table has are built here: the legacy per-patch loop, the layer
in each compile mode, the copy floor, the Fourier kernel's FFT floor and
pty-chi's Fourier shift (a peer on the PyTorch backend).

The layer rows run the case's kernel (`Case.interpolation`); rows that
only implement bilinear interpolation (the legacy loop and the peers that
blend four pixels) are marked n/a for the other kernels.

A row is a zero-argument callable returning the operator's output for the
case, or for its first B' rows of offsets when the row times a subset and
scales its time up, with what the table needs to describe it.
"""

import dataclasses
import functools
from typing import Callable, Optional

import numpy as np

from benchmarks import backends
from benchmarks import peers

__all__ = ["Row", "RowSettings", "Operator", "subset_note", "tensorflow_only",
           "bilinear_only", "ptychi_unavailable", "coordinate_dtype", "complex_dtype"]

_GIB = 1 << 30
# Peers compute sample positions in float32 (affine_transform's transforms,
# crop_and_resize's boxes): ~1e-4 px at a few thousand pixels, so errors of
# ~1e-4 of the values' range. A wrong peer is off by O(1).
TOLERANCE = 1e-3


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


def subset_note(part, case):
    """The label's note for a row timed on `part`, a subset of `case`."""
    if part.count == case.count:
        return ""
    return f", timed on {part.count} of {case.count} patches, x{case.count / part.count:.0f}"


def tensorflow_only(row_id, label):
    """A skipped row, on backends other than TensorFlow; else None."""
    if backends.name() != "tensorflow":
        return Row(row_id, label, skip="skipped: TensorFlow only")
    return None


def bilinear_only(row_id, label, case):
    """A row marked n/a, for a case whose kernel is not bilinear; else
    None."""
    if case.interpolation != "bilinear":
        return Row(row_id, label,
                   skip=f"n/a: bilinear only (--interpolation {case.interpolation})")
    return None


def ptychi_unavailable(case):
    """Why pty-chi's Fourier shift cannot be timed for `case` (a row's
    skip reason), or None."""
    if case.interpolation != "fourier":
        return "n/a: Fourier only (--interpolation fourier)"
    if backends.name() != "torch":
        return "skipped: PyTorch only (--backend torch)"
    return peers.load_ptychi()[1]


def coordinate_dtype(case):
    """pty-chi's positions as a torch dtype in the case's coordinate
    precision."""
    import torch

    return torch.float64 if case.dtype in ("float64", "complex128") else torch.float32


def complex_dtype(dtype):
    """The complex dtype of `dtype`'s precision."""
    return "complex128" if dtype in ("float64", "complex128") else "complex64"


class Operator:
    """One table: its rows, its layer's call and what they are checked
    against. A subclass sets the class attributes and defines:

    - call(case, batched=True): (x, offsets) -> the layer's output;
    - source(case): x, the numpy input the layer takes besides the offsets;
    - float64(case): the output by a float64 numpy evaluation;
    - output_shape(case); value_scale(case, reference): what the tolerance
      is a fraction of;
    - legacy_estimate(case, part), layer_estimate(case): working bytes;
    - layer_temp(case, x, offsets): XLA temp bytes of the layer, or None;
    - peer_rows(): {row id: builder(case, settings) -> Row}, its own rows
      (each returning `bilinear_only` first where it only blends bilinearly);
    - fft_windows(case): the (K, S, S) windows the Fourier kernel
      transforms, complex128 numpy (the object's, or the padded patches);
    - ptychi_row(case, settings): pty-chi's Fourier shift, as a Row;
    - case_words, scale_words, float64_words, extra_notes: the words the
      notes under its table need (`report.notes`).
    """

    name = ""  # --operator
    layer_label = ""  # the layer rows' label: "this layer", "place_patches"
    legacy_id = legacy_label = ""
    copied = ""  # what the copy rows copy, as the table names it
    row_ids = ()
    layer_modes = {}  # the layer rows: id -> compile mode
    sweep_ids = ()  # the rows `--plot` sweeps
    wrt = ""  # what the layer's gradient is taken with respect to
    zeroes_object = False  # whether its output is a fresh object it fills

    def inputs(self, case):
        return backends.to_tensor(self.source(case)), backends.to_tensor(case.offsets)

    def expected(self, case):
        """(this layer's eager output as numpy, the float64 output)."""
        reference = backends.to_numpy(self.call(case)(*self.inputs(case)))
        return reference, self.float64(case)

    def checks(self, case):
        """What the table's rows are checked against, and the numbers the
        notes give about it."""
        reference, float64 = self.expected(case)
        scale = float(self.value_scale(case, reference)) or 1.0
        return {
            "reference": reference,
            "float64": float64,
            "tolerance": TOLERANCE * scale,
            "reference_error": float(np.max(np.abs(reference - float64), initial=0)),
            "output_bytes": int(np.prod(self.output_shape(case))) * case.itemsize,
            "patches_bytes": case.patches_bytes,
        }

    def build_rows(self, case, ids=None, settings=None):
        """The rows named by `ids` (all if None), in table order."""
        settings = settings or RowSettings()
        builders = {
            self.legacy_id: self.legacy_row,
            "copy_numpy": self.copy_numpy_row,
            "copy_backend": self.copy_backend_row,
            "fft_floor": self.fft_floor_row,
            "ptychi_fourier": self.ptychi_fourier_row,
            **{i: functools.partial(self.layer_row, i) for i in self.layer_modes},
            **self.peer_rows(),
        }
        ids = self.row_ids if ids is None else ids
        return [builders[i](case, settings) for i in self.row_ids if i in ids]

    def timed(self, row_id, label, fn, mode, case, part=None, temp=None, **fields):
        """A row timing `fn(x, offsets)` compiled for `mode`, on `part` of
        `case` (all of it if None); a subset's output is checked against
        the layer's for that subset. `temp`: None, or (x, offsets) -> XLA
        temp bytes."""
        part = part or case
        compiled = backends.compile_fn(fn, mode)
        inputs = self.inputs(part)
        if part.count != case.count:
            fields.setdefault("expected", lambda: self.expected(part))
        return Row(
            row_id, label, lambda: compiled(*inputs),
            patches=part.count, scale=case.count / part.count,
            temp=temp and (lambda: temp(*inputs)), **fields,
        )

    def legacy_row(self, case, settings):
        part = case.subset(settings.legacy_patches)
        mode = backends.peer_mode()
        label = (f"{self.legacy_label} (batched=False, {backends.mode_label(mode)}"
                 f"{subset_note(part, case)})")
        skipped = bilinear_only(self.legacy_id, label, case)
        if skipped:
            return skipped
        return self.timed(self.legacy_id, label, self.call(case, batched=False), mode,
                          case, part, estimate=self.legacy_estimate(case, part))

    def layer_row(self, row_id, case, settings):
        mode = self.layer_modes[row_id]
        label = f"{self.layer_label}, {backends.mode_label(mode)}"
        reason = backends.mode_unavailable(mode)
        if reason:
            return Row(row_id, label, skip=reason)
        return self.timed(row_id, label, self.call(case), mode, case,
                          temp=functools.partial(self.layer_temp, case),
                          estimate=self.layer_estimate(case))

    def copy_numpy_row(self, case, settings):
        source = case.patches
        # A written copy, not np.empty: its pages must be resident already,
        # or the first copy would count them as new memory.
        target = source.copy()

        def copy():
            np.copyto(target, source)
            return target

        return Row("copy_numpy", f"{self.copied} copy, np.copyto into a preallocated array",
                   copy, patches=case.count, estimate=0, expected=lambda: (source, None))

    def copy_backend_row(self, case, settings):
        source = backends.to_tensor(case.patches)
        return Row("copy_backend", f"{self.copied} copy, {backends.native_copy_label()}",
                   lambda: backends.native_copy(source), patches=case.count,
                   estimate=case.patches_bytes, expected=lambda: (case.patches, None))

    def fft_floor_row(self, case, settings):
        """One batched forward and inverse 2-D FFT of the K windows of
        (N+2m)^2 the Fourier kernel transforms, complex in the table's
        precision, by the backend's own FFT in its traced mode (eager on
        torch): what the Fourier kernel cannot go below."""
        dtype = complex_dtype(case.dtype)
        size = case.patch_size + 2 * case.fourier_margin
        mode = backends.peer_mode()
        label = (f"FFT floor: fft2 + ifft2 of K {size}x{size} {dtype} windows "
                 f"({backends.fft_label()}, {backends.mode_label(mode)})")
        if case.interpolation != "fourier":
            return Row("fft_floor", "FFT floor: fft2 + ifft2 of the Fourier kernel's windows",
                       skip="n/a: the Fourier kernel's floor (--interpolation fourier)")
        windows = self.fft_windows(case).astype(dtype)
        compiled = backends.compile_fn(peers.fft_round_trip, mode)
        tensor = backends.to_tensor(windows)
        return Row("fft_floor", label, lambda: compiled(tensor), patches=case.count,
                   estimate=2 * windows.nbytes, expected=lambda: (windows, None))

    def ptychi_fourier_row(self, case, settings):
        version = peers.ptychi_version()
        label = (f"pty-chi{' ' + version if version else ''} {self.ptychi_function} "
                 "(torch eager)")
        reason = ptychi_unavailable(case)
        if reason:
            return Row("ptychi_fourier", label, skip=reason)
        return self.ptychi_row(case, label)
