"""Boundary-based terms: losses weighted by distance maps of the target (and prediction).

Distance maps are computed inside the loss, from the target of this call, on the device of the logits
(:mod:`autoloss.losses.distance`): under nnU-Net's deep supervision every scale gets its own maps, and no map is
copied to the CPU per step on a GPU. Both terms need a schedule in practice (the survey: start from Dice, then
bring the boundary term in); see ``Schedule.ramp_in``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from autoloss.losses.base import SegBatch, SegLoss
from autoloss.losses.distance import boundary_field, signed_distance


class _DistanceTerm(SegLoss):
    def __init__(self, do_bg: bool = False, spacing: Sequence[float] | None = None, edt_backend: str = "auto", **kw):
        super().__init__(**kw)
        self.do_bg = bool(do_bg)
        self.spacing = spacing
        self.edt_backend = edt_backend

    def _volumes(self, batch: SegBatch, x: Tensor) -> Tensor:
        """(B, C', *spatial) -> (B * C', *spatial): one volume per image and class for the transforms."""
        return x.reshape(-1, *x.shape[2:])

    def _valid(self, batch: SegBatch, like: Tensor) -> Tensor | None:
        if batch.mask is None:
            return None
        return self._volumes(batch, batch.mask.expand_as(like))

    def _mean(self, batch: SegBatch, values: Tensor) -> Tensor:
        return batch.masked_mean(values)


class BoundaryLoss(_DistanceTerm):
    """Boundary loss (Kervadec et al., MIDL 2019 / MedIA 2021): ``L = 1/|Omega| sum_v sum_c phi_c(v) p_c(v)``.

    ``phi_c`` is the signed distance map of ground-truth class c (positive outside, ``-(d - 1)`` inside, as in
    the authors' ``one_hot2dist``), 0 for a class absent from (or filling) the image. Foreground classes only by
    default; the mean runs over valid voxels and classes. The loss is negative for good predictions and
    minimal when p equals the ground truth.
    """

    term = "bd"

    def compute(self, batch: SegBatch) -> Tensor:
        start = batch.first_channel(self.do_bg)
        g = batch.fg_onehot_bool[:, start:]
        phi = signed_distance(self._volumes(batch, g), self.spacing, self.edt_backend,
                              valid=self._valid(batch, g)).view(g.shape)
        return self._mean(batch, phi * batch.probs[:, start:])


class HausdorffDTLoss(_DistanceTerm):
    """Distance-transform Hausdorff loss (Karimi & Salcudean, IEEE TMI 2019):
    ``L = 1/|Omega| sum_v sum_c (p_c - g_c)^2 (d_{G,c}^alpha + d_{P,c}^alpha)``.

    ``d_G`` / ``d_P`` are the unsigned distances to the boundary of the ground truth and of the thresholded
    prediction (p > 0.5), 0 for a class absent from or filling the image, as in MONAI's ``HausdorffDTLoss``
    (``include_background=False`` by default here too). Ignored voxels count as background in both maps.
    """

    term = "hd"

    def __init__(self, alpha: float = 2.0, **kw):
        super().__init__(**kw)
        self.alpha = float(alpha)

    def compute(self, batch: SegBatch) -> Tensor:
        start = batch.first_channel(self.do_bg)
        p, g = batch.probs[:, start:], batch.onehot[:, start:]
        with torch.no_grad():
            gt = batch.fg_onehot_bool[:, start:]
            pred = p.detach() > 0.5
            valid = self._valid(batch, gt)
            both = torch.cat([self._volumes(batch, gt), self._volumes(batch, pred)])
            fields = boundary_field(both, self.spacing, self.edt_backend,
                                    valid=None if valid is None else torch.cat([valid, valid]))
            d_g, d_p = fields[: both.shape[0] // 2].view(g.shape), fields[both.shape[0] // 2:].view(g.shape)
            dist = d_g.pow(self.alpha) + d_p.pow(self.alpha)
        return self._mean(batch, (p - g).square() * dist)
