"""XLA's run gather for the JAX backend (see `windows`)."""

from jax import lax


def take_runs(table, starts, size):
    """Runs of `size` entries of `table` (A, L) at `starts` (..., 2) int32
    [row, first entry], (..., size); XLA moves a run that would leave its
    row (mode "clip": `lax.gather`'s default, "fill", would give a run
    that leaves its row as fill values instead)."""
    last = starts.ndim - 1
    numbers = lax.GatherDimensionNumbers(
        offset_dims=(last,), collapsed_slice_dims=(0,), start_index_map=(0, 1)
    )
    return lax.gather(table, starts, numbers, (1, size), mode="clip")
