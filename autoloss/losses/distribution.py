"""Distribution-based terms: per-voxel losses averaged over the valid voxels.

In softmax mode they score the true class's log-probability; in region mode (sigmoid outputs) each region channel
is a binary problem scored with the numerically stable binary cross-entropy on logits.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from autoloss.losses.base import SegBatch, SegLoss, pow_floor
from autoloss.losses.distance import boundary_penalty


class CrossEntropyLoss(SegLoss):
    """Cross-entropy, nnU-Net's ``RobustCrossEntropyLoss`` (softmax) or ``BCEWithLogitsLoss`` (regions).

    ``L = -1/N sum_v log p_{y_v}(v)`` over the N valid voxels (region mode: mean binary CE over voxels and
    regions). Ignored voxels are left out of the sum and of N, as ``ignore_index`` does.
    """

    term = "ce"

    def compute(self, batch: SegBatch) -> Tensor:
        return batch.masked_mean(batch.voxel_ce)


def _frequency_weights(batch: SegBatch, power: float) -> Tensor:
    """Per-voxel weight ``(N / N_c)^power`` of the voxel's class, from this call's target (no grad).

    Softmax: one weight per label; region mode: per channel, one weight for positives and one for negatives.
    Classes absent from the target get no voxels, so their weight never matters.
    """
    with torch.no_grad():
        g = batch.onehot
        if batch.region_based:
            axes = (0,) + batch.axes
            pos = g.sum(axes, keepdim=True)
            total = batch.num_valid
            neg = total - pos
            w_pos = (total / pos.clamp_min(1.0)) ** power
            w_neg = (total / neg.clamp_min(1.0)) ** power
            return g * w_pos + (1.0 - g) * w_neg
        counts = g.sum((0,) + batch.axes)  # (C,)
        w = (counts.sum() / counts.clamp_min(1.0)) ** power
        return w.take(batch.labels)  # (B, 1, *spatial)


class WeightedCrossEntropyLoss(SegLoss):
    """Class-weighted cross-entropy (Ronneberger et al. 2015; Loss Odyssey "WCE").

    ``L = sum_v w_{y_v} CE_v / sum_v w_{y_v}`` with ``w_c = (N / N_c)^power`` from the class frequencies of the
    target of this call (so it follows each deep-supervision scale and any class count). ``power = 1`` is inverse
    frequency, ``0`` plain CE; the default 0.5 is Wong et al.'s choice. The survey fixed weights per task
    (0.2/0.8 for binary tasks); a frequency rule is what a dataset-agnostic spec can carry.
    """

    term = "wce"

    def __init__(self, power: float = 0.5, **kw):
        super().__init__(**kw)
        self.power = float(power)

    def compute(self, batch: SegBatch) -> Tensor:
        w = _frequency_weights(batch, self.power)
        if batch.maskf is not None:
            w = w * batch.maskf
        return (w * batch.voxel_ce).sum() / w.sum().clamp_min(1e-12)


class TopKLoss(SegLoss):
    """TopK cross-entropy (Wu et al. 2016; nnU-Net's ``TopKLoss``): mean CE of the k % hardest valid voxels.

    ``k`` is a percentage (survey default 10; large organs like the liver needed 90). Unlike nnU-Net, ignored
    voxels are neither candidates nor counted in the k %.
    """

    term = "topk"

    def __init__(self, k: float = 10.0, **kw):
        super().__init__(**kw)
        self.k = float(k)

    def compute(self, batch: SegBatch) -> Tensor:
        ce = batch.voxel_ce
        if batch.mask is None:
            n = ce.numel()
            flat = ce.reshape(-1)
        else:
            n = int(batch.mask.sum()) * ce.shape[1]  # one sync: the count of valid voxels sets k
            flat = ce.masked_fill(~batch.mask, float("-inf")).reshape(-1)
        if n == 0:
            return ce.sum() * 0.0  # everything ignored: no loss, a graph with zero gradients
        keep = max(1, int(n * self.k / 100))
        return flat.topk(keep, sorted=False).values.mean()


class FocalLoss(SegLoss):
    """Focal loss (Lin et al. 2017): ``L = -1/N sum_v (1 - p_t)^gamma log p_t``.

    Softmax mode: ``p_t`` is the probability of the true class; region mode: the sigmoid focal loss of each
    channel. ``gamma = 0`` is CE; the survey used 2. MONAI's ``FocalLoss(use_softmax=True)`` averages over the
    class axis too, so its value is this one divided by C.
    """

    term = "focal"

    def __init__(self, gamma: float = 2.0, **kw):
        super().__init__(**kw)
        self.gamma = float(gamma)

    def compute(self, batch: SegBatch) -> Tensor:
        ce = batch.voxel_ce  # -log p_t
        pt = torch.exp(-ce)
        if self.gamma == 0:
            return batch.masked_mean(ce)
        return batch.masked_mean(pow_floor(1.0 - pt, self.gamma) * ce)


class DistancePenalizedCELoss(SegLoss):
    """Distance-map-penalised cross-entropy (Caliva et al., MIDL 2019; Loss Odyssey "DPCE"/"pCE").

    ``L = 1/N sum_v (1 + Phi_v) CE_v`` where ``Phi`` is the inverted, normalised distance to the boundary of the
    voxel's own ground-truth class: 1 on the boundary, 0 at the deepest voxel of each region, per image
    (:func:`~autoloss.losses.distance.boundary_penalty`). Voxels near boundaries weigh up to twice as much.
    (The survey's released DPCE computed this weight and returned plain CE; here it is applied.)
    Region mode: per channel, the penalty of the region and of its complement.
    """

    term = "dpce"

    def __init__(self, spacing: Sequence[float] | None = None, edt_backend: str = "auto", **kw):
        super().__init__(**kw)
        self.spacing = spacing
        self.edt_backend = edt_backend

    @torch.no_grad()
    def penalty(self, batch: SegBatch) -> Tensor:
        g = batch.fg_onehot_bool  # False at ignored voxels: those act as a boundary for every class
        b, c = g.shape[:2]
        spatial = g.shape[2:]
        if batch.region_based:
            valid = torch.ones_like(g) if batch.mask is None else batch.mask.expand_as(g)
            regions = torch.stack([g, ~g & valid], 2).reshape(b * c * 2, *spatial)
            phi = boundary_penalty(regions, self.spacing, self.edt_backend).view(b, c, 2, *spatial).sum(2)
            return phi
        phi = boundary_penalty(g.reshape(b * c, *spatial), self.spacing, self.edt_backend).view(b, c, *spatial)
        return phi.sum(1, keepdim=True)  # one class per voxel: its own class's penalty

    def compute(self, batch: SegBatch) -> Tensor:
        return batch.masked_mean((1.0 + self.penalty(batch)) * batch.voxel_ce)
