"""Region-based (overlap) terms: functions of the soft per-class tp / fp / fn of a batch.

All share nnU-Net's reduction (:class:`~autoloss.losses.base.DiceStyleLoss`): ``batch_dice`` sums tp/fp/fn over
the batch (and DDP ranks) before the ratio, otherwise one ratio per image and class; ``do_bg`` keeps the softmax
background channel (region outputs have none); ``smooth`` is added to numerator and denominator. Each returns
``1 - mean score`` (0 is perfect), so a compound such as DiceCE is non-negative; nnU-Net's own Dice returns
``-mean score``, which differs by the constant 1 only.
"""
from __future__ import annotations

import torch
from torch import Tensor

from autoloss.losses.base import DiceStyleLoss, SegBatch, ddp_active, gather_batch, pow_floor, soft_dice


class DiceLoss(DiceStyleLoss):
    """Soft Dice (Milletari et al. 2016), exactly nnU-Net's ``SoftDiceLoss`` / ``MemoryEfficientSoftDiceLoss``.

    ``L = 1 - mean_c (2 tp_c + s) / (2 tp_c + fp_c + fn_c + s)``.
    """

    term = "dice"

    def compute(self, batch: SegBatch) -> Tensor:
        tp, fp, fn, _ = self.stats(batch)
        return 1.0 - soft_dice(tp, fp, fn, self.smooth).mean()


class IoULoss(DiceStyleLoss):
    """Soft Jaccard / IoU (Rahman & Wang 2016): ``L = 1 - mean_c (tp_c + s) / (tp_c + fp_c + fn_c + s)``."""

    term = "iou"

    def compute(self, batch: SegBatch) -> Tensor:
        tp, fp, fn, _ = self.stats(batch)
        return 1.0 - ((tp + self.smooth) / (tp + fp + fn + self.smooth).clamp_min(1e-8)).mean()


class TverskyLoss(DiceStyleLoss):
    """Tversky loss (Salehi et al. 2017): ``L = 1 - mean_c (tp + s) / (tp + alpha fp + beta fn + s)``.

    ``alpha`` weighs false positives, ``beta`` false negatives (survey 0.3 / 0.7: recall over precision);
    alpha = beta = 0.5 is Dice. Same convention as MONAI's ``TverskyLoss``.
    """

    term = "tversky"

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, **kw):
        super().__init__(**kw)
        self.alpha, self.beta = float(alpha), float(beta)

    def index(self, batch: SegBatch) -> Tensor:
        tp, fp, fn, _ = self.stats(batch)
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(1e-8)

    def compute(self, batch: SegBatch) -> Tensor:
        return 1.0 - self.index(batch).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan 2019): ``L = mean_c (1 - TI_c)^gamma``, TI the Tversky index.

    ``gamma`` is the paper's 1/gamma: the survey's 0.75 (= 1/(4/3), the paper's best) sharpens the loss for hard
    classes whose TI is low. The power is applied per class, as in the paper (the survey's code applied it
    after averaging the classes).
    """

    term = "focaltversky"

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, **kw):
        super().__init__(alpha=alpha, beta=beta, **kw)
        self.gamma = float(gamma)

    def compute(self, batch: SegBatch) -> Tensor:
        # Floored: x^0.75 has an infinite slope at a perfect class (TI = 1).
        return pow_floor(1.0 - self.index(batch), self.gamma).mean()


class AsymmetricLoss(DiceStyleLoss):
    """Asymmetric similarity loss (Hashemi et al. 2018), the F-beta score of the soft prediction.

    ``L = 1 - mean_c (tp + s) / (tp + s + w fn + (1 - w) fp)`` with ``w = beta^2 / (1 + beta^2)``
    (= ``(1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)`` without smoothing); ``beta`` 1.5 favours recall.
    """

    term = "asym"

    def __init__(self, beta: float = 1.5, **kw):
        super().__init__(**kw)
        self.beta = float(beta)

    def compute(self, batch: SegBatch) -> Tensor:
        tp, fp, fn, _ = self.stats(batch)
        w = self.beta ** 2 / (1.0 + self.beta ** 2)
        score = (tp + self.smooth) / (tp + self.smooth + w * fn + (1.0 - w) * fp).clamp_min(1e-8)
        return 1.0 - score.mean()


class GeneralizedDiceLoss(DiceStyleLoss):
    """Generalized Dice loss (Sudre et al. 2017): ``L = 1 - (2 sum_c w_c tp_c + s) / (sum_c w_c (P_c + G_c) + s)``.

    ``w_c = 1 / G_c^2`` with ``G_c`` the ground-truth volume of class c. A class absent from the target would get
    an infinite weight (the survey's code used ``1/(G+1e-10)^2``, which swamps every other class and explains
    its GDice collapse on multi-organ); as in MONAI's ``GeneralizedDiceLoss``, it gets the largest finite weight.
    The background is included by default, as in the paper.
    """

    term = "gdice"

    def __init__(self, do_bg: bool = True, **kw):
        super().__init__(do_bg=do_bg, **kw)

    def compute(self, batch: SegBatch) -> Tensor:
        tp, fp, fn, sum_g = self.stats(batch)
        with torch.no_grad():
            w = 1.0 / sum_g.square()
            infs = torch.isinf(w)
            w = torch.where(infs, 0.0, w)
            w = w + infs * w.amax(-1, keepdim=True)
        numer = 2 * (w * tp).sum(-1) + self.smooth
        denom = (w * (2 * tp + fp + fn)).sum(-1) + self.smooth
        return (1.0 - numer / denom.clamp_min(1e-30)).mean()


class PenaltyGDiceLoss(GeneralizedDiceLoss):
    """Penalty Generalized Dice loss (Yang et al., MIDL 2019): ``L = L_GD / (1 + k (1 - L_GD))``.

    ``k`` (survey 2.5) shrinks the loss of already good predictions relative to poor ones, i.e. penalises false
    positives and negatives more strongly than GDice.
    """

    term = "pgdice"

    def __init__(self, k: float = 2.5, **kw):
        super().__init__(**kw)
        self.k = float(k)

    def compute(self, batch: SegBatch) -> Tensor:
        gd = super().compute(batch)
        return gd / (1.0 + self.k * (1.0 - gd))


class SensitivitySpecificityLoss(DiceStyleLoss):
    """Sensitivity-specificity loss (Brosch et al. 2015).

    ``L = mean_c [ r sum (g - p)^2 g / (sum g + s) + (1 - r) sum (g - p)^2 (1 - g) / (sum (1 - g) + s) ]``: the
    squared error inside the object (sensitivity) and outside it (specificity), each normalised by its volume.
    The specificity term is normalised by the large background, so a small ``r`` (paper 0.05) balances them.
    """

    term = "ss"

    def __init__(self, r: float = 0.05, **kw):
        super().__init__(**kw)
        self.r = float(r)

    def compute(self, batch: SegBatch) -> Tensor:
        start = batch.first_channel(self.do_bg)
        p, g = batch.probs[:, start:], batch.onehot[:, start:]
        err = (p - g).square()
        if batch.maskf is not None:
            err = err * batch.maskf
        fg_err = (err * g).sum(batch.axes)
        bg_err = err.sum(batch.axes) - fg_err
        with torch.no_grad():
            n_fg = g.sum(batch.axes)
            if batch.mask is None:
                n_all = torch.full_like(n_fg, float(p[0, 0].numel()))
            else:
                n_all = batch.maskf.sum(batch.axes).expand_as(n_fg)
        if self.batch_dice:
            if self.ddp and ddp_active():
                fg_err, bg_err = gather_batch(fg_err), gather_batch(bg_err)
                n_fg, n_all = gather_batch(n_fg), gather_batch(n_all)
            fg_err, bg_err, n_fg, n_all = fg_err.sum(0), bg_err.sum(0), n_fg.sum(0), n_all.sum(0)
        n_bg = n_all - n_fg
        loss = self.r * fg_err / (n_fg + self.smooth).clamp_min(1e-8) \
            + (1.0 - self.r) * bg_err / (n_bg + self.smooth).clamp_min(1e-8)
        return loss.mean()
