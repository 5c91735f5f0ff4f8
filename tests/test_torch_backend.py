"""The PyTorch backend's own kernels (`backends/torch.py`,
`ptycho_layers/torch/`): windows of the zero-padded object in real
pairs, in each of their forms (in pieces, through the custom ops, fused,
whole batch), op by op and under `torch.compile`, and the written-out
gradients tied on by an `autograd.Function`."""

import keras
import numpy as np
import pytest

from oracle import asymmetric_object, oracle_patches, oracle_place
from ptycho_layers import PatchExtraction, extract_patches, place_patches
from ptycho_layers.operators import offsets_gradient

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the PyTorch backend's kernels"
)


def _offsets(height, width, seed):
    """(3, 4, 2) offsets of every kind at once: whole and fractional, near
    and beyond each edge, one NaN and one inf."""
    rng = np.random.default_rng(seed)
    offsets = np.stack(
        [rng.uniform(-9, width + 9, (3, 4)), rng.uniform(-9, height + 9, (3, 4))], -1
    )
    offsets[0, 0] = [0.0, 0.0]
    offsets[0, 1] = [width - 1.0, height - 0.5]
    offsets[1, 0] = [np.nan, 2.0]
    offsets[2, 3] = [3.0, np.inf]
    offsets[1, 2] = [-40.0, 5.25]  # wholly outside
    return offsets


# Each form of the kernels (`torch.windows._form`), forced on the CPU. The
# pieces: as chosen for these small objects (extraction reads every window
# from a padded copy), with every window not wholly inside clipped one by
# one, and that a row of the batch at a time, so that a piece boundary
# falls between every two rows, or two rows at a time, so that the last
# piece (of three rows) is shorter than the others.
FORMS = [
    "pieces", "pieces, clipped", "pieces, clipped, row by row",
    "pieces, clipped, two rows a piece", "pieces_op", "fused", "whole",
]


@pytest.fixture(params=FORMS)
def form(request, monkeypatch):
    from ptycho_layers.torch import pieces as torch_pieces
    from ptycho_layers.torch import windows as torch_windows

    name = request.param.split(",")[0]
    monkeypatch.setattr(torch_windows, "_form", lambda values: name)
    if "clipped" in request.param:
        monkeypatch.setattr(torch_pieces, "EDGE_WINDOW_PIXELS", 0)
    if "row by row" in request.param:
        monkeypatch.setattr(torch_pieces, "PIECE_BYTES", 1)
    if "two rows" in request.param:
        monkeypatch.setattr(torch_pieces, "piece_rows", lambda batch, *_: min(batch, 2))
    return request.param


def _finite_patches(values, offsets):
    """The patches at finite offsets, (K, N, N)."""
    finite = np.isfinite(offsets).all(-1)
    return np.moveaxis(values, -1, 1)[finite]


@pytest.mark.parametrize(
    "dtype,atol",
    [("complex64", 2e-6), ("complex128", 1e-12), ("float64", 1e-12),
     # float16 objects blend in float32, then round to float16.
     ("float16", 2e-3)],
)
@pytest.mark.parametrize("per_row", [False, True])
def test_eager_kernels_match_oracle(dtype, atol, per_row, form):
    import torch

    height, width, n = 11, 13, 6
    offsets = _offsets(height, width, seed=1)
    coord = "float64" if dtype in ("float64", "complex128") else "float32"
    images = np.stack([asymmetric_object(height, width, dtype, seed=s) for s in range(3)])
    images = images if per_row else images[:1]
    patches = extract_patches(torch.tensor(images), torch.tensor(offsets.astype(coord)), n)
    assert tuple(patches.shape) == (3, n, n, 4)
    assert str(patches.dtype).endswith(dtype)
    found = patches.numpy()
    expected = oracle_patches(images.astype("complex128"), offsets.astype(coord), n)
    np.testing.assert_allclose(
        _finite_patches(found, offsets), _finite_patches(expected, offsets),
        rtol=0, atol=atol,
    )
    not_finite = ~np.isfinite(offsets).all(-1)
    assert np.isnan(np.moveaxis(found, -1, 1)[not_finite]).all()

    values = found.copy()
    values[np.isnan(values)] = 7  # must not leak from non-finite offsets
    placed = place_patches(
        torch.tensor(values), torch.tensor(offsets.astype(coord)), (height, width),
        per_row=per_row,
    ).numpy()
    kept = np.where(np.isfinite(offsets).all(-1)[:, None, None, :], values, 0)
    offsets_zeroed = np.where(np.isfinite(offsets), offsets, 0.0).astype(coord)
    expected = oracle_place(kept.astype("complex128"), offsets_zeroed, (height, width), per_row)
    np.testing.assert_allclose(placed, expected, rtol=0, atol=atol * 40)


@pytest.mark.parametrize("dtype", ["complex64", "float32"])
def test_placement_of_patches_laid_out_groups_last(dtype):
    """Patches contiguous as (B, N, N, c), as a network gives them, are
    placed as those laid out groups first, as extraction gives them."""
    import torch

    rng = np.random.default_rng(6)
    values = rng.normal(size=(5, 6, 6, 4))
    if dtype == "complex64":
        values = values + 1j * rng.normal(size=(5, 6, 6, 4))
    offsets = torch.tensor(rng.uniform(-2, 14, (5, 4, 2)).astype("float32"))
    groups_last = torch.tensor(values.astype(dtype))
    groups_first = groups_last.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    assert groups_last.is_contiguous() and not groups_first.is_contiguous()
    placed = place_patches(groups_last, offsets, (12, 12))
    np.testing.assert_array_equal(placed.numpy(), place_patches(groups_first, offsets, (12, 12)).numpy())
    expected = oracle_place(values, offsets.numpy(), (12, 12))
    np.testing.assert_allclose(placed.numpy(), expected, rtol=0, atol=1e-5)


def test_lazily_conjugated_inputs():
    """`x.conj()` (a view with PyTorch's conjugate bit) is extracted and
    placed as its resolved copy is."""
    import torch

    image = torch.tensor(asymmetric_object(9, 8, "complex64")[None])
    offsets = torch.tensor([[[2.5, 3.25], [7.0, 1.0]]])
    patches = extract_patches(image.conj(), offsets, 4)
    expected = extract_patches(image.conj().resolve_conj(), offsets, 4)
    np.testing.assert_array_equal(patches.numpy(), expected.numpy())
    placed = place_patches(patches.conj(), offsets, (9, 8))
    expected = place_patches(patches.conj().resolve_conj(), offsets, (9, 8))
    np.testing.assert_array_equal(placed.numpy(), expected.numpy())


def test_placement_in_pieces_is_reproducible(monkeypatch):
    """The pieces add windows in batch order whatever the piece size: the
    same bits row by row as in one piece, call after call."""
    import torch

    from ptycho_layers.torch import pieces as torch_pieces

    rng = np.random.default_rng(5)
    patches = torch.tensor(rng.normal(size=(6, 7, 7, 4)).astype("float32"))
    # Crowded: every window overlaps many others.
    offsets = torch.tensor(rng.uniform(5, 9, (6, 4, 2)).astype("float32"))
    once = place_patches(patches, offsets, (14, 14))
    assert torch.equal(place_patches(patches, offsets, (14, 14)), once)
    monkeypatch.setattr(torch_pieces, "PIECE_BYTES", 1)
    assert torch.equal(place_patches(patches, offsets, (14, 14)), once)
    expected = oracle_place(patches.numpy().astype("float64"), offsets.numpy(), (14, 14))
    np.testing.assert_allclose(once.numpy(), expected, rtol=0, atol=1e-5)


def test_objects_smaller_than_a_patch(form):
    """Every window sticks out of a 3x4 object: nothing is read or written
    outside it."""
    import torch

    image = asymmetric_object(3, 4, "complex64")[None]
    offsets = np.array([[[1.5, 1.25], [-2.0, 0.0]]], "float32")
    found = extract_patches(torch.tensor(image), torch.tensor(offsets), 7).numpy()
    np.testing.assert_allclose(found, oracle_patches(image, offsets, 7), rtol=0, atol=2e-6)
    placed = place_patches(torch.tensor(found), torch.tensor(offsets), (3, 4)).numpy()
    expected = oracle_place(found.astype("complex128"), offsets, (3, 4))
    np.testing.assert_allclose(placed, expected, rtol=0, atol=1e-5)


def test_gradients_are_the_written_out_ones():
    """Through the `autograd.Function`: the object's gradient is placement
    of the upstream (the oracle's), the offsets' is `offsets_gradient`,
    and integer offsets get none."""
    import torch

    height, width, n = 12, 10, 5
    rng = np.random.default_rng(3)
    image = asymmetric_object(height, width, "complex128")[None]
    offsets = rng.uniform(-3, 13, (2, 4, 2))
    upstream = rng.normal(size=(2, n, n, 4)) + 1j * rng.normal(size=(2, n, n, 4))
    x = torch.tensor(image, requires_grad=True)
    o = torch.tensor(offsets, requires_grad=True)
    patches = extract_patches(x, o, n)
    patches.backward(torch.tensor(upstream))
    np.testing.assert_allclose(
        x.grad.numpy(), oracle_place(upstream, offsets, (height, width)), rtol=0, atol=1e-12
    )
    expected = offsets_gradient(torch.tensor(image), torch.tensor(offsets), torch.tensor(upstream))
    np.testing.assert_allclose(o.grad.numpy(), expected.numpy(), rtol=0, atol=1e-12)

    x.grad = None
    whole = torch.tensor(np.round(offsets).astype("int32"))
    extract_patches(x, whole, n).backward(torch.tensor(upstream))
    expected = oracle_place(upstream, np.round(offsets), (height, width))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=0, atol=1e-12)


def test_gradient_of_contiguous_patches_is_contiguous():
    """Placement's gradient with respect to contiguous (B, N, N, c)
    patches (extraction of the upstream, computed groups first) comes out
    contiguous, as autograd would otherwise copy it itself into a fresh
    buffer, with the oracle's values."""
    import torch

    rng = np.random.default_rng(4)
    values = rng.normal(size=(3, 6, 6, 4)) + 1j * rng.normal(size=(3, 6, 6, 4))
    patches = torch.tensor(values.astype("complex64"), requires_grad=True)
    offsets = rng.uniform(-2, 14, (3, 4, 2)).astype("float32")
    weights = asymmetric_object(12, 12, "complex64")[None]
    placed = place_patches(patches, torch.tensor(offsets), (12, 12))
    loss = torch.sum(torch.real(torch.conj(torch.tensor(weights)) * placed))
    (gradient,) = torch.autograd.grad(loss, patches)
    assert gradient.is_contiguous()
    expected = oracle_patches(weights, offsets, 6)
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=0, atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["complex128", "float32"])
def test_compiled_kernels_match_oracle(dtype):
    """Under `torch.compile` on the CPU the kernels run through the custom
    ops (`ptycho_layers::*_in_pieces`): the same bits as op by op, on
    edges, per-row objects and non-finite offsets, and the oracle's
    values."""
    import torch

    height, width, n = 11, 13, 6
    offsets = _offsets(height, width, seed=2)
    coord = "float64" if dtype == "complex128" else "float32"
    atol = 1e-12 if dtype == "complex128" else 2e-6
    images = np.stack([asymmetric_object(height, width, dtype, seed=s) for s in range(3)])
    extract = torch.compile(lambda im, off: extract_patches(im, off, n), fullgraph=True)
    found = extract(torch.tensor(images), torch.tensor(offsets.astype(coord))).numpy()
    eager = extract_patches(torch.tensor(images), torch.tensor(offsets.astype(coord)), n)
    np.testing.assert_array_equal(found, eager.numpy())
    expected = oracle_patches(images.astype("complex128"), offsets.astype(coord), n)
    np.testing.assert_allclose(
        _finite_patches(found, offsets), _finite_patches(expected, offsets),
        rtol=0, atol=atol,
    )
    assert np.isnan(np.moveaxis(found, -1, 1)[~np.isfinite(offsets).all(-1)]).all()

    place = torch.compile(
        lambda p, off: place_patches(p, off, (height, width), per_row=True), fullgraph=True
    )
    values = np.where(np.isnan(found), 7, found)
    placed = place(torch.tensor(values), torch.tensor(offsets.astype(coord))).numpy()
    eager = place_patches(
        torch.tensor(values), torch.tensor(offsets.astype(coord)), (height, width), per_row=True
    )
    np.testing.assert_array_equal(placed, eager.numpy())
    kept = np.where(np.isfinite(offsets).all(-1)[:, None, None, :], values, 0)
    offsets_zeroed = np.where(np.isfinite(offsets), offsets, 0.0).astype(coord)
    expected = oracle_place(kept.astype("complex128"), offsets_zeroed, (height, width), True)
    np.testing.assert_allclose(placed, expected, rtol=0, atol=atol * 40)


@pytest.mark.slow
def test_torch_export_of_both_operators_and_the_layer(tmp_path):
    """No data-dependent branch: `torch.export` captures both operators,
    and Keras exports a model holding the layer."""
    import torch

    image = asymmetric_object(30, 33, "complex64")
    offsets = torch.tensor(np.random.default_rng(4).uniform(-3, 30, (3, 4, 2)).astype("float32"))

    class Both(torch.nn.Module):
        def forward(self, im, off):
            patches = extract_patches(im, off, 8)
            return patches, place_patches(patches, off, (30, 33))

    images = torch.tensor(image[None])
    exported = torch.export.export(Both(), (images, offsets)).module()
    for found, expected in zip(exported(images, offsets), Both()(images, offsets)):
        np.testing.assert_allclose(found.numpy(), expected.numpy(), rtol=0, atol=1e-6)

    model = keras.Sequential([keras.Input((4, 2)), PatchExtraction(8, image=image)])
    path = str(tmp_path / "model.pt2")
    model.export(path, format="torch", verbose=False)
    loaded = torch.export.load(path).module()
    # Keras exports for the batch it traced with (1), on every kernel.
    np.testing.assert_allclose(
        loaded(offsets[:1]).numpy(), model(offsets[:1]).numpy(), rtol=0, atol=1e-6
    )


def test_output_buffers_are_reused_once_freed(monkeypatch):
    """`torch_buffers`: an output's memory returns to the pool only when no
    tensor views it any more, serves the next output of its shape, and the
    pool stays within its bound."""
    import torch

    from ptycho_layers.torch import buffers as torch_buffers

    torch_buffers.clear()
    first = torch_buffers.new_output((4, 5, 2), torch.float32)
    address = first.data_ptr()
    view = first.permute(1, 0, 2)
    del first
    assert torch_buffers.pooled_bytes() == 0  # the view still holds it
    held = torch_buffers.new_output((4, 5, 2), torch.float32)
    assert held.data_ptr() != address
    del view
    assert torch_buffers.pooled_bytes() == 160
    again = torch_buffers.new_output((4, 5, 2), torch.float32)
    assert again.data_ptr() == address and torch_buffers.pooled_bytes() == 0
    assert torch_buffers.new_output((4, 5, 2), torch.complex64).dtype == torch.complex64

    monkeypatch.setattr(torch_buffers, "POOL_BYTES", 200)
    del held, again  # 320 bytes freed: the first one back is let go
    assert torch_buffers.pooled_bytes() == 160
    torch_buffers.new_output((100,), torch.float32)  # 400 bytes: never kept
    assert torch_buffers.pooled_bytes() == 160
    torch_buffers.clear()
    assert torch_buffers.pooled_bytes() == 0


def test_results_keep_their_values_when_buffers_are_reused():
    import torch

    image = torch.tensor(asymmetric_object(20, 20, "complex64")[None])
    offsets = torch.tensor(np.random.default_rng(7).uniform(0, 20, (6, 4, 2)).astype("float32"))
    kept = [extract_patches(image * k, offsets, 5) for k in range(1, 4)]
    for _ in range(3):  # freed outputs, reused
        extract_patches(image, offsets, 5)
    for k, patches in enumerate(kept, start=1):
        expected = oracle_patches(image.numpy() * k, offsets.numpy(), 5)
        np.testing.assert_allclose(patches.numpy(), expected, rtol=0, atol=1e-5)
