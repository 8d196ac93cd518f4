"""Each loss against an independent reference on random inputs, 2D and 3D, several class counts.

References: nnU-Net v2's own losses where they exist, MONAI where the semantics match (differences are written
next to each test), and direct per-class re-implementations of the papers' formulas (loops, scipy) for the rest.
Region-style terms here return ``1 - score`` where nnU-Net returns ``-score``: the constant 1 is added.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss, DC_and_topk_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss, SoftDiceLoss
from nnunetv2.training.loss.robust_ce_loss import TopKLoss as NNTopK
from nnunetv2.utilities.helpers import softmax_helper_dim1
from scipy import ndimage

from autoloss.losses import build_loss
from autoloss.spec import LossSpec

SHAPES = [(2, 3, 13, 11), (2, 2, 7, 9, 8), (3, 5, 6, 7, 5)]  # 2D, 3D binary, 3D five classes
IDS = ["2d-c3", "3d-c2", "3d-c5"]


def data(shape, seed=0, ignore: int | None = None, absent: int | None = None):
    g = torch.Generator().manual_seed(seed)
    b, c, *sp = shape
    logits = torch.randn(shape, generator=g) * 2
    target = torch.randint(0, c, (b, 1, *sp), generator=g)
    if absent is not None:
        target[target == absent] = 0
    if ignore is not None:
        target[torch.rand(target.shape, generator=g) < 0.2] = ignore
    return logits, target.float()


def loss_of(name, params=None, **kw):
    return build_loss(LossSpec(name, params or {}), **kw)


def close(a, b, tol=1e-5):
    a, b = float(a), float(b)
    assert math.isclose(a, b, rel_tol=tol, abs_tol=tol), (a, b)


def onehot(target, c):
    return F.one_hot(target[:, 0].long(), c).movedim(-1, 1).float()


# ---- nnU-Net -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("dice_class", [SoftDiceLoss, MemoryEfficientSoftDiceLoss])
def test_dice_ce_equals_nnunet(shape, batch_dice, dice_class):
    logits, target = data(shape)
    ref = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                         dice_class=dice_class)
    close(loss_of("DiceCE", batch_dice=batch_dice)(logits, target), ref(logits, target) + 1)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_dice_ce_with_ignore_label_equals_nnunet(shape):
    c = shape[1]
    logits, target = data(shape, ignore=c)
    ref = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, ignore_label=c,
                         dice_class=MemoryEfficientSoftDiceLoss)
    close(loss_of("DiceCE", ignore_label=c)(logits, target), ref(logits, target) + 1)


@pytest.mark.parametrize("do_bg", [False, True])
@pytest.mark.parametrize("smooth", [0.0, 1e-5, 1.0])
def test_dice_equals_nnunet_soft_dice(do_bg, smooth):
    logits, target = data((2, 4, 9, 10, 6), seed=3)
    for batch_dice in (True, False):
        ref = SoftDiceLoss(softmax_helper_dim1, batch_dice=batch_dice, do_bg=do_bg, smooth=smooth, ddp=False)
        ours = loss_of("Dice", {"dice.do_bg": do_bg, "dice.smooth": smooth, "dice.batch_dice": batch_dice})
        close(ours(logits, target), ref(logits, target) + 1)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("k", [10, 50, 100])
def test_topk_equals_nnunet(shape, k):
    logits, target = data(shape, seed=1)
    close(loss_of("TopK", {"topk.k": k})(logits, target), NNTopK(k=k)(logits, target))


def test_dice_topk_equals_nnunet():
    # nnU-Net's DC_and_topk uses SoftDiceLoss; same values as the memory-efficient one.
    logits, target = data((2, 3, 8, 9, 7), seed=2)
    ref = DC_and_topk_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {"k": 10})
    close(loss_of("DiceTopK")(logits, target), ref(logits, target) + 1)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_region_dice_ce_equals_nnunet_dc_and_bce(batch_dice):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 8, 7, 6, generator=g)
    regions = (torch.rand(2, 3, 8, 7, 6, generator=g) < 0.3).float()
    kw = {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False}
    ref = DC_and_BCE_loss({}, kw, dice_class=MemoryEfficientSoftDiceLoss)
    ours = loss_of("DiceCE", region_based=True, batch_dice=batch_dice)
    close(ours(logits, regions), ref(logits, regions) + 1)


def test_region_ignore_channel_matches_nnunet():
    # nnU-Net divides the masked BCE sum over all regions by the number of valid voxels only, i.e. it returns
    # R times the mean over voxels and regions; ours is that mean (the same as its unmasked BCE).
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 9, 8, generator=g)
    regions = (torch.rand(2, 3, 9, 8, generator=g) < 0.4).float()
    ignore = (torch.rand(2, 1, 9, 8, generator=g) < 0.25).float()
    target = torch.cat([regions, ignore], 1)
    kw = {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False}
    dice_ref = DC_and_BCE_loss({}, dict(kw), weight_ce=0, use_ignore_label=True)(logits, target)
    bce_ref = DC_and_BCE_loss({}, dict(kw), weight_dice=0, use_ignore_label=True)(logits, target)
    ours = loss_of("DiceCE", region_based=True, ignore_label=3)
    assert ours.terms["dice"].region_based
    close(ours(logits, target), dice_ref + 1 + bce_ref / 3)


def test_ce_equals_torch():
    logits, target = data((2, 4, 10, 12), seed=6, ignore=4)
    ref = F.cross_entropy(logits, target[:, 0].long(), ignore_index=4)
    close(loss_of("CE", ignore_label=4)(logits, target), ref)


# ---- MONAI ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("batch", [True, False])
def test_dice_equals_monai(shape, batch):
    from monai.losses import DiceLoss

    logits, target = data(shape, seed=7)
    ref = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5,
                   batch=batch)
    close(loss_of("Dice", {"dice.batch_dice": batch})(logits, target), ref(logits, target.long()))


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("alpha,beta", [(0.3, 0.7), (0.8, 0.1)])
def test_tversky_equals_monai(shape, batch, alpha, beta):
    from monai.losses import TverskyLoss

    logits, target = data(shape, seed=8)
    ref = TverskyLoss(include_background=False, to_onehot_y=True, softmax=True, alpha=alpha, beta=beta,
                      smooth_nr=1e-5, smooth_dr=1e-5, batch=batch)
    ours = loss_of("Tversky", {"tversky.alpha": alpha, "tversky.beta": beta, "tversky.batch_dice": batch})
    close(ours(logits, target), ref(logits, target.long()))


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5])
def test_focal_equals_monai_softmax(shape, gamma):
    # MONAI's softmax focal loss averages over the class axis as well (its target is one-hot): x C.
    from monai.losses import FocalLoss

    logits, target = data(shape, seed=9)
    ref = FocalLoss(include_background=True, to_onehot_y=True, gamma=gamma, use_softmax=True)
    close(loss_of("Focal", {"focal.gamma": gamma})(logits, target), ref(logits, target.long()) * shape[1], 1e-4)


def test_focal_region_equals_monai_sigmoid():
    from monai.losses import FocalLoss

    g = torch.Generator().manual_seed(10)
    logits = torch.randn(2, 3, 6, 7, 5, generator=g) * 2
    regions = (torch.rand(2, 3, 6, 7, 5, generator=g) < 0.3).float()
    close(loss_of("Focal", region_based=True)(logits, regions), FocalLoss(gamma=2.0)(logits, regions), 1e-4)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("absent", [None, 1])
def test_gdice_equals_monai(shape, batch, absent):
    # Both give an absent class the largest finite weight of the others.
    from monai.losses import GeneralizedDiceLoss

    logits, target = data(shape, seed=11, absent=absent)
    ref = GeneralizedDiceLoss(include_background=True, to_onehot_y=True, softmax=True, smooth_nr=1e-5,
                              smooth_dr=1e-5, batch=batch)
    close(loss_of("GDice", {"gdice.batch_dice": batch})(logits, target), ref(logits, target.long()), 1e-4)


def blobs(shape, seed):
    """Smooth random objects (so distance maps are not all 1) as labels (B, 1, *spatial)."""
    g = torch.Generator().manual_seed(seed)
    b, c, *sp = shape
    field = torch.randn(b, c, *[max(2, n // 3) for n in sp], generator=g)
    field = F.interpolate(field, size=sp, mode="bilinear" if len(sp) == 2 else "trilinear", align_corners=False)
    target = field.argmax(1, keepdim=True).float()
    logits = 3 * field + torch.randn(shape, generator=g)
    return logits, target


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_hd_equals_monai(shape):
    # MONAI: distance fields of GT and of p > 0.5 per image and channel, 0 for empty or full channels; mean.
    from monai.losses import HausdorffDTLoss

    logits, target = blobs(shape, 12)
    target[0, 0, : shape[2] // 2] = 0  # make some classes absent in some images
    ref = HausdorffDTLoss(alpha=2.0, include_background=False, to_onehot_y=True, softmax=True)
    close(loss_of("HD")(logits, target), ref(logits, target.long()), 1e-4)


# ---- the papers' formulas, written out per class -----------------------------------------------------------------
def kervadec_one_hot2dist(seg: np.ndarray, sampling=None) -> np.ndarray:
    """Kervadec et al.'s released one_hot2dist for one image: (C, *spatial) one-hot -> signed maps."""
    res = np.zeros(seg.shape, dtype=np.float64)
    for k in range(seg.shape[0]):
        pos = seg[k].astype(bool)
        if pos.any():
            neg = ~pos
            res[k] = ndimage.distance_transform_edt(neg, sampling) * neg \
                - (ndimage.distance_transform_edt(pos, sampling) - 1) * pos
    return res


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_bd_equals_kervadec(shape):
    logits, target = blobs(shape, 13)
    c = shape[1]
    oh = onehot(target, c).numpy()
    dist = torch.from_numpy(np.stack([kervadec_one_hot2dist(o) for o in oh])).float()
    probs = torch.softmax(logits, 1)
    ref = (probs[:, 1:] * dist[:, 1:]).mean()  # foreground classes, mean over batch, classes, voxels
    close(loss_of("BD")(logits, target), ref, 1e-4)
    # Anisotropic voxels: build_loss(spacing=...) reaches the distance maps.
    spacing = (2.5, 0.5, 1.0)[-(len(shape) - 2):]
    dist = torch.from_numpy(np.stack([kervadec_one_hot2dist(o, spacing) for o in oh])).float()
    ref = (probs[:, 1:] * dist[:, 1:]).mean()
    for backend in ("torch", "scipy"):
        close(loss_of("BD", spacing=spacing, edt_backend=backend)(logits, target), ref, 1e-4)


def survey_dpce_weights(gt: np.ndarray) -> np.ndarray:
    """The Loss Odyssey code's compute_edts_forPenalizedLoss (binary), for one image, + 1."""
    pos = gt.astype(bool)
    neg = ~pos
    pos_edt = ndimage.distance_transform_edt(pos)
    pos_edt = (np.max(pos_edt) - pos_edt) * pos
    neg_edt = ndimage.distance_transform_edt(neg)
    neg_edt = (np.max(neg_edt) - neg_edt) * neg
    return pos_edt / np.max(pos_edt) + neg_edt / np.max(neg_edt) + 1.0


def test_dpce_equals_survey_formula_with_the_weight_applied():
    logits, target = blobs((2, 2, 14, 12, 9), 14)
    w = torch.from_numpy(np.stack([survey_dpce_weights(t[0]) for t in target.numpy()])).float()
    ce = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
    close(loss_of("DPCE")(logits, target), (w * ce).mean(), 1e-5)
    assert float(loss_of("DPCE")(logits, target)) > float(ce.mean()) * 1.05  # it really penalises


def lovasz_reference(probs, target, c, per_image, do_bg=True):
    """Berman et al.'s lovasz_softmax_flat with classes='present', class by class (float sort)."""
    def flat(p, t):
        losses = []
        for k in range(0 if do_bg else 1, c):
            fg = (t == k).float()
            if fg.sum() == 0:
                continue
            errors = (fg - p[:, k]).abs()
            errors_sorted, perm = torch.sort(errors, descending=True)
            gts = fg[perm]
            inter = gts.sum() - gts.cumsum(0)
            union = gts.sum() + (1 - gts).cumsum(0)
            jac = 1 - inter / union
            jac[1:] = jac[1:] - jac[:-1]
            losses.append(torch.dot(errors_sorted, jac))
        return torch.stack(losses).mean() if losses else torch.tensor(0.0)

    def rows(p, t):
        return p.movedim(0, -1).reshape(-1, c), t.reshape(-1)

    if per_image:
        return torch.stack([flat(*rows(probs[i], target[i, 0])) for i in range(probs.shape[0])]).mean()
    return flat(probs.movedim(1, -1).reshape(-1, c), target[:, 0].reshape(-1))


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("do_bg", [True, False])
def test_lovasz_equals_berman(shape, per_image, do_bg):
    logits, target = data(shape, seed=15, absent=shape[1] - 1)
    ref = lovasz_reference(torch.softmax(logits, 1), target, shape[1], per_image, do_bg)
    ours = loss_of("Lovasz", {"lovasz.per_image": per_image, "lovasz.do_bg": do_bg})
    close(ours(logits, target), ref, 1e-5)


def test_lovasz_ignore_equals_berman_on_valid_voxels():
    logits, target = data((1, 3, 12, 10), seed=16, ignore=3)
    valid = target[0, 0] != 3
    probs = torch.softmax(logits, 1)[0].movedim(0, -1)[valid]  # (N_valid, C)
    ref = lovasz_reference(probs.T.reshape(1, 3, -1, 1), target[0, 0][valid].reshape(1, 1, -1, 1), 3, False)
    close(loss_of("Lovasz", ignore_label=3)(logits, target), ref, 1e-5)


def per_class_stats(logits, target, c, do_bg=False):
    p = torch.softmax(logits, 1)
    g = onehot(target, c)
    k0 = 0 if do_bg else 1
    tp = torch.stack([(p[:, k] * g[:, k]).sum() for k in range(k0, c)])
    fp = torch.stack([(p[:, k] * (1 - g[:, k])).sum() for k in range(k0, c)])
    fn = torch.stack([((1 - p[:, k]) * g[:, k]).sum() for k in range(k0, c)])
    return p, g, tp, fp, fn


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_iou_asym_focaltversky_pgdice_by_formula(shape):
    s = 1e-5
    logits, target = data(shape, seed=17)
    c = shape[1]
    p, g, tp, fp, fn = per_class_stats(logits, target, c)
    close(loss_of("IoU")(logits, target), 1 - ((tp + s) / (tp + fp + fn + s)).mean())
    b2 = 1.5 ** 2
    f_beta = ((1 + b2) * tp + s * (1 + b2)) / ((1 + b2) * tp + b2 * fn + fp + s * (1 + b2))
    close(loss_of("Asym")(logits, target), 1 - f_beta.mean())
    ti = (tp + s) / (tp + 0.3 * fp + 0.7 * fn + s)
    close(loss_of("FocalTversky")(logits, target), ((1 - ti) ** 0.75).mean())
    # pGDice from GDice (all classes, Sudre weights 1/G^2).
    _, _, tpa, fpa, fna = per_class_stats(logits, target, c, do_bg=True)
    gsum = tpa + fna
    w = 1 / gsum ** 2
    gd = 1 - (2 * (w * tpa).sum() + s) / ((w * (2 * tpa + fpa + fna)).sum() + s)
    close(loss_of("GDice")(logits, target), gd, 1e-4)
    close(loss_of("pGDice")(logits, target), gd / (1 + 2.5 * (1 - gd)), 1e-4)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_ss_by_formula(shape):
    s, r = 1e-5, 0.05
    logits, target = data(shape, seed=18)
    c = shape[1]
    p, g = torch.softmax(logits, 1), onehot(target, c)
    terms = []
    for k in range(1, c):
        err = (g[:, k] - p[:, k]) ** 2
        sens = (err * g[:, k]).sum() / (g[:, k].sum() + s)
        spec = (err * (1 - g[:, k])).sum() / ((1 - g[:, k]).sum() + s)
        terms.append(r * sens + (1 - r) * spec)
    close(loss_of("SS")(logits, target), torch.stack(terms).mean())


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_wce_and_ell_by_formula(shape):
    logits, target = data(shape, seed=19)
    c = shape[1]
    labels = target[:, 0].long()
    freq = torch.stack([(labels == k).sum() for k in range(c)]).float()
    for power in (0.5, 1.0):
        w = (freq.sum() / freq) ** power
        ref = F.cross_entropy(logits, labels, weight=w)
        close(loss_of("WCE", {"wce.power": power})(logits, target), ref)
    # ELL: 0.8 mean_c (-ln Dice_c)^0.3 + 0.2 mean_v w_l (-ln p_l)^0.3 with w_l = (sum f / f_l)^0.5.
    p, g, tp, fp, fn = per_class_stats(logits, target, c)
    dice = (2 * tp + 1e-5) / (2 * tp + fp + fn + 1e-5)
    ce = F.cross_entropy(logits, labels, reduction="none")
    wl = ((freq.sum() / freq) ** 0.5)[labels]
    ref = 0.8 * ((-torch.log(dice)) ** 0.3).mean() + 0.2 * (wl * ce ** 0.3).mean()
    close(loss_of("ELL")(logits, target), ref, 1e-5)


def test_hand_computed_two_voxel_case():
    # One image, two classes, two voxels; foreground probabilities 0.8 (on the object) and 0.3 (background).
    p_fg = torch.tensor([0.8, 0.3])
    logits = torch.stack([torch.zeros(2), torch.log(p_fg / (1 - p_fg))]).view(1, 2, 1, 2)
    target = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    # tp 0.8, fp 0.3, fn 0.2
    close(loss_of("Dice", {"dice.smooth": 0.0})(logits, target), 1 - 1.6 / 2.1)
    close(loss_of("IoU", {"iou.smooth": 0.0})(logits, target), 1 - 0.8 / 1.3)
    close(loss_of("Tversky", {"tversky.smooth": 0.0})(logits, target), 1 - 0.8 / (0.8 + 0.3 * 0.3 + 0.7 * 0.2))
    close(loss_of("CE")(logits, target), -(math.log(0.8) + math.log(0.7)) / 2)
    close(loss_of("Focal")(logits, target), -(0.2 ** 2 * math.log(0.8) + 0.3 ** 2 * math.log(0.7)) / 2)
    close(loss_of("TopK", {"topk.k": 50})(logits, target), -math.log(0.7))
    # Lovasz, errors sorted decreasingly with Jaccard-extension gradients (Alg. 1):
    # foreground row: 0.3 (gt 0): J = 1 - 1/2 = 0.5; 0.2 (gt 1): J = 1 - 0/2 = 1, grad 0.5 -> 0.15 + 0.1 = 0.25;
    # background row: 0.3 (gt 1): J = 1 - 0/1 = 1; 0.2 (gt 0): J = 1 - 0/2 = 1, grad 0 -> 0.3. Mean 0.275.
    close(loss_of("Lovasz")(logits, target), 0.275)
    # BD: the object voxel has phi = -(1 - 1) = 0, the background voxel phi = 1 -> mean over 2 voxels = 0.3 / 2.
    close(loss_of("BD")(logits, target), 0.15)
