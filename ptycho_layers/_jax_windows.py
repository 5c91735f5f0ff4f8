"""Windowed neighbourhood gather for the JAX backend.

`jax.lax.dynamic_slice` under `vmap` lowers to one XLA gather whose slices
are whole (N+1)x(N+1) windows: a contiguous copy per window row instead of
an index computation per element. dynamic_slice clamps a start that would
run past an edge, which would silently shift the window, so windows that
overlap an edge are read from small zero-padded copies of the object's
border strips instead of from the object: O(N*(H+W)) extra work, never a
padded copy of the whole object.
"""

import jax
import jax.numpy as jnp
from jax import lax


def gather_windows(images, image_index, x_start, y_start, size):
    """Windows of `size` x `size` entries, (B, c, size, size).

    Args:
        images: (Bi, H, W) with H, W >= size.
        image_index: (B,) int32, which image each row of offsets reads.
        x_start, y_start: (B, c) int32, each window's first column and row
            in object coordinates (may lie outside the object).
        size: N+1.

    Entries outside the object come back as zeros.
    """
    _, height, width = images.shape
    # Beyond these bounds a window reads only zeros, so clamping there
    # changes nothing and keeps every start inside one of the sources.
    y = jnp.clip(y_start, -size, height)
    x = jnp.clip(x_start, -size, width)
    pad = size
    # Top and bottom strips, zero-padded on the outer side and both ends:
    # (Bi, 2, size + pad, W + 2 pad).
    top = jnp.pad(images[:, :size, :], ((0, 0), (pad, 0), (pad, pad)))
    bottom = jnp.pad(images[:, height - size:, :], ((0, 0), (0, pad), (pad, pad)))
    rows_strips = jnp.stack([top, bottom], axis=1)
    # Left and right strips: (Bi, 2, H, size + pad).
    left = jnp.pad(images[:, :, :size], ((0, 0), (0, 0), (pad, 0)))
    right = jnp.pad(images[:, :, width - size:], ((0, 0), (0, 0), (0, pad)))
    cols_strips = jnp.stack([left, right], axis=1)

    def one(b, y0, x0):
        above, below = y0 < 0, y0 + size > height
        before, after = x0 < 0, x0 + size > width
        inner = lax.dynamic_slice(images, (b, y0, x0), (1, size, size))[0]
        # In the strips, row `pad` of the top strip is object row 0 and row
        # 0 of the bottom strip is object row H - size.
        row_in_strip = jnp.where(above, y0 + pad, y0 - (height - size))
        from_rows = lax.dynamic_slice(
            rows_strips,
            (b, below.astype(jnp.int32), row_in_strip, x0 + pad),
            (1, 1, size, size),
        )[0, 0]
        col_in_strip = jnp.where(before, x0 + pad, x0 - (width - size))
        from_cols = lax.dynamic_slice(
            cols_strips,
            (b, after.astype(jnp.int32), y0, col_in_strip),
            (1, 1, size, size),
        )[0, 0]
        return jnp.where(
            above | below, from_rows, jnp.where(before | after, from_cols, inner)
        )

    batch, groups = x.shape
    index = jnp.broadcast_to(image_index[:, None], (batch, groups))
    return jax.vmap(jax.vmap(one))(index, y, x)
