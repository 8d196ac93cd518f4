"""clDice, Skeleton Recall and blob loss against references: MONAI's clDice (skipped without MONAI), the papers'
formulas written as plain per-class / per-instance loops, and known-answer targets (skeleton, components)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from autoloss.errors import AutolossError
from autoloss.losses import build_loss, get_loss_def
from autoloss.losses.skeleton import soft_skeleton
from autoloss.losses.targets import component_labels, extra_target_from_batch, tubed_skeleton
from autoloss.spec import LossSpec


def close(a, b, tol=1e-5):
    a, b = float(a), float(b)
    assert math.isclose(a, b, rel_tol=tol, abs_tol=tol), (a, b)


def tubes(shape, seed=0):
    """Labels with thin lines of class 1 and small blobs of class 2, (B, 1, *spatial) float."""
    g = torch.Generator().manual_seed(seed)
    b, _, *sp = shape
    t = torch.zeros(b, 1, *sp)
    for i in range(b):
        for _ in range(3):
            row = int(torch.randint(2, sp[0] - 3, (1,), generator=g))
            t[(i, 0, slice(row, row + 2))] = 1
        for _ in range(3):
            c = [int(torch.randint(1, n - 3, (1,), generator=g)) for n in sp]
            t[(i, 0) + tuple(slice(x, x + 2) for x in c)] = 2
    return t


# ---- soft skeleton and clDice vs MONAI ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 20, 17), (2, 2, 12, 11, 10)], ids=["2d", "3d"])
def test_soft_skeleton_equals_monai(shape):
    cldice = pytest.importorskip("monai.losses.cldice")
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    for iters in (1, 3, 5):
        assert torch.allclose(soft_skeleton(x, iters), cldice.soft_skel(x, iters), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 24, 20), (2, 3, 12, 11, 10)], ids=["2d", "3d"])
def test_cldice_equals_monai_per_class(shape):
    pytest.importorskip("monai", minversion="1.5")  # 1.5 changed the API to forward(input, target), per image
    from monai.losses.cldice import SoftclDiceLoss

    target = tubes(shape)
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 2
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(target[:, 0].long(), shape[1]).movedim(-1, 1).float()
    # MONAI reduces channels and space per image into one ratio: per class c feed it [background, class c].
    ref = SoftclDiceLoss(iter_=3, smooth_nr=1.0, smooth_dr=1.0, smooth=1e-12, include_background=False)
    expected = np.mean([float(ref(probs[:, [0, c]], onehot[:, [0, c]])) for c in range(1, shape[1])])
    loss = build_loss(LossSpec("DiceCE+clDice", {"cldice.batch_dice": False}))
    close(loss.term_values(logits, target)["cldice"], expected)
    # With batch_dice the sums run over the batch too (MONAI's skeletons, the formula written out).
    from monai.losses.cldice import soft_skel

    sp, sg = soft_skel(probs, 3), soft_skel(onehot, 3)
    axes = [0] + list(range(2, probs.ndim))
    tprec = ((sp * onehot).sum(axes) + 1) / (sp.sum(axes) + 1)
    tsens = ((sg * probs).sum(axes) + 1) / (sg.sum(axes) + 1)
    expected = 1 - (2 * tprec * tsens / (tprec + tsens))[1:].mean()
    close(build_loss(LossSpec("DiceCE+clDice"), batch_dice=True).term_values(logits, target)["cldice"], expected)


def test_cldice_rewards_connected_centre_lines():
    target = torch.zeros(1, 1, 32, 32)
    target[0, 0, 14:18, 2:30] = 1
    good = torch.zeros(1, 2, 32, 32)
    good[:, 1] = (target[:, 0] * 2 - 1) * 6
    broken = good.clone()
    broken[0, 1, :, 14:18] = -6  # a gap through the line: same Dice loss scale, broken topology
    loss = build_loss(LossSpec("DiceCE+clDice")).terms["cldice"]
    assert float(loss(good, target)) < 0.01 < float(loss(broken, target))


# ---- Skeleton Recall ---------------------------------------------------------------------------------------------
def test_tubed_skeleton_known_answer():
    lab = np.zeros((21, 40), dtype=np.int16)
    lab[5:16, 3:37] = 1  # an 11-pixel thick bar: centre line on row 10, tube rows 8..12
    lab[5:16, 20:37] = 2  # its right half is class 2
    skel = tubed_skeleton(lab)
    assert set(np.unique(skel)) == {0, 1, 2}
    rows = np.nonzero(skel[:, 10])[0]
    assert rows.tolist() == [8, 9, 10, 11, 12]
    assert (skel[8:13, 10] == 1).all() and (skel[8:13, 30] == 2).all()
    assert not skel[lab == 0].any()
    assert not tubed_skeleton(np.zeros((5, 6, 7))).any()
    assert tubed_skeleton(np.pad(np.ones((3, 3, 20)), 2)).any()  # 3D (Lee's thinning)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_skeleton_recall_equals_formula(batch_dice):
    shape = (2, 3, 24, 20)
    target = tubes(shape, seed=3)
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    probs = torch.softmax(logits, 1).numpy()
    skel = np.stack([tubed_skeleton(target[b, 0].numpy().astype(int)) for b in range(2)])
    s = 1e-5
    recalls = []
    for c in (1, 2):
        if batch_dice:
            recalls.append(((probs[:, c] * (skel == c)).sum() + s) / ((skel == c).sum() + s))
        else:
            recalls += [((probs[b, c] * (skel[b] == c)).sum() + s) / ((skel[b] == c).sum() + s) for b in range(2)]
    loss = build_loss(LossSpec("DiceCE+SkelRecall"), batch_dice=batch_dice)
    close(loss.term_values(logits, target)["skelrecall"], 1 - np.mean(recalls))


# ---- blob loss ---------------------------------------------------------------------------------------------------
def blob_reference(logits, target, smooth=1e-5):
    """The paper's definition as a loop: each component scored alone, the other components of its class masked."""
    probs = torch.softmax(logits, 1)
    ce = -torch.log_softmax(logits, 1).gather(1, target.long())[:, 0]
    per_image = []
    for b in range(target.shape[0]):
        lab = target[b, 0].long().numpy()
        comps = component_labels(lab)
        terms = []
        for n in range(1, int(comps.max()) + 1):
            inst = torch.from_numpy(comps == n)
            c = int(lab[comps == n][0])
            mask = ~torch.from_numpy((lab == c) & (comps != n))
            p = probs[b, c] * mask
            dice = (2 * (p * inst).sum() + smooth) / (p.sum() + inst.sum() + smooth)
            terms.append(1 - dice + ce[b][mask].mean())
        if terms:
            per_image.append(torch.stack(terms).mean())
    return torch.stack(per_image).mean()


@pytest.mark.parametrize("shape", [(3, 3, 24, 20), (2, 3, 10, 12, 9)], ids=["2d", "3d"])
def test_blob_equals_per_instance_loop(shape):
    target = tubes(shape, seed=5)
    target[-1] = 0  # an image without components adds nothing
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(6)) * 2
    loss = build_loss(LossSpec("DiceCE+Blob"))
    assert loss.weights["blob"] == 0.5
    close(loss.term_values(logits, target)["blob"], blob_reference(logits, target))


def test_blob_counts_a_missed_small_lesion():
    target = torch.zeros(1, 1, 40, 40)
    target[0, 0, 2:30, 2:30] = 1  # one big lesion
    target[0, 0, 35:37, 35:37] = 1  # one tiny lesion
    hit_all = (F.one_hot(target[:, 0].long(), 2).movedim(-1, 1).float() - 0.5) * 12
    miss_small = hit_all.clone()
    miss_small[0, :, 35:37, 35:37] = hit_all[0, :, 0:2, 0:2]  # predict background on the tiny lesion
    loss = build_loss(LossSpec("DiceCE+Blob"))
    dice_gap = loss.term_values(miss_small, target)["dice"] - loss.term_values(hit_all, target)["dice"]
    blob_gap = loss.term_values(miss_small, target)["blob"] - loss.term_values(hit_all, target)["blob"]
    assert dice_gap < 0.01 and blob_gap > 0.4  # Dice barely sees the missed lesion; blob loss does


# ---- loader targets, deep supervision, refusals ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DiceCE+SkelRecall", "DiceCE+Blob"])
def test_loader_targets_equal_the_fallback_and_pass_through_deep_supervision(name):
    shape = (2, 3, 24, 20)
    target = tubes(shape, seed=7)
    loss = build_loss(LossSpec(name))
    (extra_name,) = get_loss_def(name).extra_targets
    extra = extra_target_from_batch(extra_name, target)
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(8))
    close(loss(logits, target, extra), loss(logits, target))
    # Per deep-supervision scale the loader gives nearest-downsampled label and extra target.
    targets = [target, target[..., ::2, ::2]]
    extras = [extra, extra[..., ::2, ::2]]
    outs = [logits, logits[..., ::2, ::2]]
    wrapped = DeepSupervisionWrapper(loss, [2 / 3, 1 / 3])
    expected = 2 / 3 * loss(outs[0], targets[0], extras[0]) + 1 / 3 * loss(outs[1], targets[1], extras[1])
    close(wrapped(outs, targets, extras), expected)
    with pytest.raises(ValueError, match="extra targets"):
        loss(logits, target, torch.cat([extra, extra], 1))


@pytest.mark.parametrize("name", ["DiceCE+SkelRecall", "DiceCE+Blob"])
def test_region_and_ignore_are_refused_in_one_line(name):
    for kw in ({"region_based": True}, {"ignore_label": 3}):
        with pytest.raises(AutolossError) as err:
            build_loss(LossSpec(name), **kw)
        assert "\n" not in str(err.value) and name in str(err.value)
    build_loss(LossSpec("DiceCE+clDice"), region_based=True, ignore_label=3)  # clDice works on any target


def test_new_losses_have_search_ranges():
    for name, params in {"DiceCE+clDice": ("cldice.iters", "cldice.weight"),
                         "DiceCE+SkelRecall": ("skelrecall.weight",), "DiceCE+Blob": ("blob.weight",)}.items():
        d = get_loss_def(name)
        for p in params:
            assert d.param(p).low is not None, (name, p)
