"""Properties every registered loss must have: finite values and gradients in the corner cases of segmentation
patches, under autocast, a lower loss for a better prediction, the ignore label respected (softmax and region
form), and correct behaviour inside nnU-Net's DeepSupervisionWrapper."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from autoloss.errors import AutolossError
from autoloss.losses import LOSS_NAMES, build_loss, get_loss_def
from autoloss.spec import LossSpec

C = 3
SHAPES = {"2d": (2, C, 10, 12), "3d": (2, C, 5, 6, 7)}


def make(name, **kw):
    return build_loss(LossSpec(name), **kw)


def smooth_labels(shape, seed=0):
    """Blob-shaped labels with every class present, as (B, 1, *spatial) float (nnU-Net's dtype)."""
    g = torch.Generator().manual_seed(seed)
    b, c, *sp = shape
    field = torch.randn(b, c, *[max(2, n // 2) for n in sp], generator=g)
    field = F.interpolate(field, size=sp, mode="bilinear" if len(sp) == 2 else "trilinear", align_corners=False)
    return field.argmax(1, keepdim=True).float()


def corner_target(case, shape, seed=0):
    b, c, *sp = shape
    t = torch.zeros(b, 1, *sp)
    if case == "empty":
        pass
    elif case == "full":
        t[:] = 1
    elif case == "single":  # one voxel of class 1 and one of class 2 in the first image only
        t[(0, 0) + tuple(n // 2 for n in sp)] = 1
        t[(0, 0) + tuple(0 for _ in sp)] = 2
    elif case == "absent":  # class 2 absent from the whole batch
        t = smooth_labels(shape, seed).clamp_max(1)
    elif case == "random":
        t = smooth_labels(shape, seed)
    return t


def grad_of(loss, logits, target, dtype=None, amp=None):
    x = logits.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        inp = x if dtype is None else x.to(dtype)
        value = loss(inp, target)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("case", ["empty", "full", "single", "absent", "random"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_finite_in_corner_cases(name, case, dim):
    shape = SHAPES[dim]
    target = corner_target(case, shape)
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3
    for batch_dice in (True, False):
        value, grad = grad_of(make(name, batch_dice=batch_dice), logits, target)
        assert value.ndim == 0 and value.dtype == torch.float32
        assert torch.isfinite(value), (name, case, batch_dice, value)
        assert torch.isfinite(grad).all(), (name, case, batch_dice)


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_autocast_cpu(name, amp):
    shape = SHAPES["3d"]
    target = corner_target("random", shape)
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 2
    loss = make(name)
    ref, _ = grad_of(loss, logits, target)
    value, grad = grad_of(loss, logits, target, dtype=amp, amp=amp)
    assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(grad).all()
    if not get_loss_def(name).uses_distance_maps:  # thresholded predictions may flip a voxel under rounding
        assert abs(float(value) - float(ref)) <= 0.03 * abs(float(ref)) + 0.02, (float(value), float(ref))


def predictions(target, c, seed=3):
    """A poor (noise) and a good (target-shaped) set of logits for the same target."""
    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(target[:, 0].long(), c).movedim(-1, 1).float()
    noise = torch.randn(onehot.shape, generator=g)
    return noise * 2, 6 * (onehot - 0.5) + 0.5 * noise


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_better_prediction_lower_loss(name, dim):
    shape = SHAPES[dim]
    target = corner_target("random", shape, seed=4)
    poor, good = predictions(target, C)
    loss = make(name)
    assert float(loss(good, target)) < float(loss(poor, target)), name


def with_ignore(shape, seed=5):
    target = corner_target("random", shape, seed)
    ignored = torch.rand(target.shape, generator=torch.Generator().manual_seed(seed)) < 0.25
    return target.masked_fill(ignored, C), ignored


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignore_label_respected(name, dim):
    shape = SHAPES[dim]
    if not get_loss_def(name).supports_regions_and_ignore:  # loader-made targets need a plain label map
        with pytest.raises(AutolossError, match="ignore label"):
            make(name, ignore_label=C)
        return
    target, ignored = with_ignore(shape)
    logits, _ = predictions(target.clamp_max(C - 1), C)
    other = torch.where(ignored, torch.randn(shape) * 5, logits)  # change the logits at ignored voxels only
    loss = make(name, ignore_label=C)
    v1, g1 = grad_of(loss, logits, target)
    v2, g2 = grad_of(loss, other, target)
    assert torch.isfinite(v1) and torch.allclose(v1, v2, atol=1e-6), (float(v1), float(v2))
    assert torch.allclose(g1, g2, atol=1e-7)
    assert float(g1.masked_select(ignored.expand_as(g1)).abs().max()) == 0.0
    # Everything ignored: a finite zero-ish loss, zero gradients.
    v3, g3 = grad_of(loss, logits, torch.full_like(target, C))
    assert torch.isfinite(v3) and torch.isfinite(g3).all()


def region_target(shape, ignore: bool, seed=6):
    labels = corner_target("random", shape, seed)
    # nnU-Net regions are nested label sets, e.g. (1, 2) and (2,): here "any foreground" and "class 2".
    regions = torch.cat([labels >= 1, labels == 2, labels == 1], 1).float()[:, : shape[1]]
    if not ignore:
        return regions, None
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(seed)) < 0.25
    return torch.cat([regions * ~ignored, ignored.float()], 1), ignored


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_region_based_mode(name):
    shape = SHAPES["3d"]
    if not get_loss_def(name).supports_regions_and_ignore:
        with pytest.raises(AutolossError, match="region-based"):
            make(name, region_based=True)
        return
    target, _ = region_target(shape, ignore=False)
    g = torch.Generator().manual_seed(7)
    poor = torch.randn(shape, generator=g) * 2
    good = 6 * (target - 0.5) + 0.5 * torch.randn(shape, generator=g)
    loss = make(name, region_based=True)
    for case in ("empty", "full"):
        value, grad = grad_of(loss, poor, torch.full(shape, 0.0 if case == "empty" else 1.0))
        assert torch.isfinite(value) and torch.isfinite(grad).all(), (name, case)
    assert float(loss(good, target)) < float(loss(poor, target))

    # Ignore: nnU-Net appends the ignore mask as the last target channel.
    target, ignored = region_target(shape, ignore=True)
    loss = make(name, region_based=True, ignore_label=C)
    other = torch.where(ignored, torch.randn(shape) * 5, poor)
    v1, g1 = grad_of(loss, poor, target)
    v2, g2 = grad_of(loss, other, target)
    assert torch.isfinite(v1) and torch.allclose(v1, v2, atol=1e-6)
    assert torch.allclose(g1, g2, atol=1e-7)
    assert float(g1.masked_select(ignored.expand_as(g1)).abs().max()) == 0.0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_inside_deep_supervision_wrapper(name):
    # nnU-Net calls the loss once per scale with that scale's (nearest-downsampled) target.
    shape = (2, C, 16, 12)
    target = corner_target("random", shape, seed=8)
    targets = [target, target[..., ::2, ::2], target[..., ::4, ::4]]
    g = torch.Generator().manual_seed(9)
    logits = [torch.randn(t.shape[0], C, *t.shape[2:], generator=g, requires_grad=True) for t in targets]
    weights = [4 / 7, 2 / 7, 1 / 7]
    loss = make(name)
    wrapped = DeepSupervisionWrapper(loss, weights)
    value = wrapped(logits, targets)
    value.backward()
    assert torch.isfinite(value) and all(torch.isfinite(x.grad).all() for x in logits)
    expected = sum(w * loss(x.detach(), t) for w, x, t in zip(weights, logits, targets))
    assert torch.allclose(value.detach(), expected, rtol=1e-5, atol=1e-6)
