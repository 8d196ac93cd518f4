"""Exact Euclidean distance transforms against scipy.ndimage.distance_transform_edt, and the distance maps of the
boundary losses against their authors' definitions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from autoloss.losses import distance
from autoloss.losses.distance import boundary_field, boundary_penalty, edt, resolve_backend, signed_distance

BACKENDS = ["torch", "scipy"]


def scipy_stack(mask: torch.Tensor, spacing=None) -> np.ndarray:
    out = []
    for vol in mask.numpy():
        out.append(np.full(vol.shape, np.inf) if vol.all() else ndimage.distance_transform_edt(vol, sampling=spacing))
    return np.stack(out)


def random_masks(shape, seed, density):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < density


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,spacing", [
    ((3, 31, 17), None), ((2, 24, 24), (0.7, 2.3)), ((2, 1, 19), (1.0, 1.0)),            # 2D
    ((2, 13, 9, 11), None), ((2, 7, 16, 12), (3.0, 0.8, 0.8)), ((1, 1, 5, 9), (1, 2, 3)),  # 3D, anisotropic
])
@pytest.mark.parametrize("density", [0.02, 0.5, 0.97])
def test_edt_matches_scipy(backend, shape, spacing, density):
    mask = ~random_masks(shape, hash((shape, density)) % 1000, density)  # True = distance computed
    ours = edt(mask, spacing, backend).numpy()
    ref = scipy_stack(mask, spacing)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edt_far_objects_and_edge_volumes(backend):
    # One background voxel in a corner: distances up to the far corner (the early exit must not stop short).
    vol = torch.ones(3, 20, 15, 9, dtype=torch.bool)
    vol[0, 0, 0, 0] = False
    vol[1] = False  # all background -> 0
    # vol[2] all foreground -> inf (scipy has no defined answer)
    ours = edt(vol, (1.0, 0.5, 2.0), backend)
    np.testing.assert_allclose(ours[0].numpy(), ndimage.distance_transform_edt(vol[0].numpy(), (1.0, 0.5, 2.0)),
                               rtol=1e-6)
    assert float(ours[1].abs().max()) == 0.0 and bool(torch.isinf(ours[2]).all())


def test_backend_choice_and_errors():
    assert resolve_backend(torch.device("cpu")) == "scipy"
    assert resolve_backend(torch.device("cpu"), "torch") == "torch"
    with pytest.raises(ValueError, match="unknown EDT backend"):
        resolve_backend(torch.device("cpu"), "opencv")
    with pytest.raises(ValueError, match="spacing"):
        edt(torch.ones(1, 4, 4, dtype=torch.bool), (1.0,))
    if not distance._cupy_available():
        assert resolve_backend(torch.device("cuda")) == "torch"  # CUDA without CuPy: the exact torch EDT


def test_edt_is_no_grad_and_keeps_device():
    mask = random_masks((2, 8, 8), 1, 0.5)
    out = edt(mask, backend="torch")
    assert out.device == mask.device and not out.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_signed_distance_is_kervadec_one_hot2dist(backend):
    fg = random_masks((4, 12, 10, 7), 2, 0.3)
    fg[2] = False
    fg[3] = True
    ours = signed_distance(fg, backend=backend).numpy()
    for v in range(2):
        pos = fg[v].numpy()
        neg = ~pos
        ref = ndimage.distance_transform_edt(neg) * neg - (ndimage.distance_transform_edt(pos) - 1) * pos
        np.testing.assert_allclose(ours[v], ref, atol=1e-4)
    assert np.all(ours[2] == 0) and np.all(ours[3] == 0)  # no boundary: no map, no NaN


@pytest.mark.parametrize("backend", BACKENDS)
def test_boundary_field_is_monai_distance_field(backend):
    from monai.losses import HausdorffDTLoss

    fg = random_masks((4, 11, 9), 3, 0.4)
    fg[1] = False
    fg[2] = True
    ref = HausdorffDTLoss().distance_field(fg.float().unsqueeze(1)).squeeze(1).numpy()
    np.testing.assert_allclose(boundary_field(fg, backend=backend).numpy(), ref, atol=1e-4)


def test_ignored_voxels_count_as_background():
    fg = random_masks((2, 10, 10), 4, 0.5)
    valid = random_masks((2, 10, 10), 5, 0.8)
    np.testing.assert_allclose(signed_distance(fg, valid=valid).numpy(), signed_distance(fg & valid).numpy())


def test_boundary_penalty_is_the_survey_normalisation():
    fg = torch.zeros(1, 15, 15, dtype=torch.bool)
    fg[0, 3:12, 2:13] = True
    d = ndimage.distance_transform_edt(fg[0].numpy())
    ref = np.where(fg[0].numpy(), (d.max() - d) / (d.max() - 1), 0)
    phi = boundary_penalty(fg)[0].numpy()
    np.testing.assert_allclose(phi, ref, atol=1e-6)
    assert phi.max() == pytest.approx(1.0) and phi[fg[0].numpy()].min() == pytest.approx(0.0)
    # A one-voxel-thin region is all boundary; a region filling the image has none.
    thin = torch.zeros(2, 6, 6, dtype=torch.bool)
    thin[0, 2] = True
    thin[1] = True
    phi = boundary_penalty(thin)
    assert torch.all(phi[0][thin[0]] == 1) and torch.all(phi[0][~thin[0]] == 0) and torch.all(phi[1] == 0)
