"""The one loss module autoloss trains with (a weighted, schedulable sum of terms) and the ELL term.

Every registry loss, single or compound, is an :class:`AutolossLoss`: ``Focal`` is the term ``focal`` with weight
1, ``DiceFocal`` is ``dice + focal``. The terms share one :class:`~autoloss.losses.base.SegBatch` per call, so
the softmax, one-hot target and ignore mask are computed once.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from autoloss.losses.base import DiceStyleLoss, SegBatch, SegLoss, pow_floor, soft_dice
from autoloss.losses.distribution import _frequency_weights


class ExpLogLoss(DiceStyleLoss):
    """Exponential logarithmic loss (Wong et al., MICCAI 2018):
    ``L = w_dice * mean_c (-ln Dice_c)^gamma + w_ce * mean_v w_l (-ln p_l(v))^gamma``.

    ``Dice_c`` is nnU-Net's soft Dice of class c, ``w_l = (sum_k f_k / f_l)^0.5`` the label-frequency weight of
    the voxel's label (computed from this call's target). Survey defaults: w_dice 0.8, w_ce 0.2, gamma 0.3; the
    small exponent boosts the loss of classes that are already well segmented less than of poor ones. Bases are
    floored at 1e-6 because ``x^0.3`` has an infinite slope at 0 (a perfect class).
    """

    term = "ell"

    def __init__(self, w_dice: float = 0.8, w_ce: float = 0.2, gamma: float = 0.3, **kw):
        super().__init__(**kw)
        self.w_dice, self.w_ce, self.gamma = float(w_dice), float(w_ce), float(gamma)

    def compute(self, batch: SegBatch) -> Tensor:
        tp, fp, fn, _ = self.stats(batch)
        dice = soft_dice(tp, fp, fn, self.smooth).clamp_min(1e-12)
        l_dice = pow_floor(-torch.log(dice), self.gamma).mean()
        weights = _frequency_weights(batch, 0.5)
        l_ce = batch.masked_mean(weights * pow_floor(batch.voxel_ce, self.gamma))
        return self.w_dice * l_dice + self.w_ce * l_ce


class AutolossLoss(nn.Module):
    """Weighted sum of loss terms with an optional epoch schedule of the weights.

    ``forward(logits, target) = sum_t weight_t * term_t(logits, target)``, skipping terms whose current weight is
    0 (as nnU-Net skips a zero-weighted Dice or CE; a boundary term that is not ramped in yet costs no distance
    transform). The current weight of a term is its base weight (the ``<term>.weight`` parameter) times its
    schedule factor (``spec.schedule.weights_at``, 1 for unscheduled terms).

    Attributes: ``spec`` (the LossSpec it was built from, or None), ``terms`` (name -> term module).
    """

    def __init__(self, terms: Mapping[str, SegLoss], weights: Mapping[str, float] | None = None, *, spec=None,
                 region_based: bool = False, ignore_label: int | None = None, extra_targets: tuple[str, ...] = ()):
        super().__init__()
        # Names of the loader-made targets (autoloss.losses.targets) that arrive, in this order, as the channels
        # of forward's ``extra``; without it the terms derive them from the label (slow CPU path).
        self.extra_targets = tuple(extra_targets)
        self.terms = nn.ModuleDict(dict(terms))
        self.base_weights = {t: float((weights or {}).get(t, 1.0)) for t in self.terms}
        self.spec = spec
        self.region_based = region_based
        self.ignore_label = ignore_label
        self.schedule = getattr(spec, "schedule", None)
        if self.schedule is not None:
            unknown = sorted(set(self.schedule.knots) - set(self.terms))
            if unknown:
                raise ValueError(f"schedule names terms {unknown} that {getattr(spec, 'name', 'this loss')} does not "
                                 f"have (terms: {', '.join(self.terms)})")
        self._factors: dict[str, float] = {}
        self.set_epoch(0, 1)  # the weights of the first epoch (a knot at 0 means the same for any unit)

    def set_epoch(self, epoch: int, num_epochs: int) -> dict[str, float]:
        """Apply the schedule at ``epoch`` (a pure function of it, so resuming gives the same weights).

        Returns the schedule factors of the scheduled terms (``spec.schedule.weights_at(epoch, num_epochs)``;
        empty without a schedule); :attr:`weights` gives every term's resulting weight.
        """
        self._factors = self.schedule.weights_at(epoch, num_epochs) if self.schedule is not None else {}
        return dict(self._factors)

    @property
    def weights(self) -> dict[str, float]:
        """Current weight of every term: base weight times schedule factor."""
        return {t: w * self._factors.get(t, 1.0) for t, w in self.base_weights.items()}

    def prepare(self, logits: Tensor, target: Tensor, extra: Tensor | None = None) -> SegBatch:
        batch = SegBatch(logits, target, region_based=self.region_based, ignore_label=self.ignore_label)
        if extra is not None:
            if extra.shape[1] != len(self.extra_targets) or extra.shape[2:] != logits.shape[2:]:
                raise ValueError(f"extra targets {tuple(extra.shape)} do not match {self.extra_targets} for logits "
                                 f"{tuple(logits.shape)}")
            batch.extras = {name: extra[:, i:i + 1] for i, name in enumerate(self.extra_targets)}
        return batch

    def forward(self, logits: Tensor, target: Tensor, extra: Tensor | None = None) -> Tensor:
        batch = self.prepare(logits, target, extra)
        total = None
        for name, w in self.weights.items():
            if w == 0.0:
                continue
            value = w * self.terms[name].compute(batch)
            total = value if total is None else total + value
        if total is None:  # every term switched off: a zero that still backpropagates
            total = batch.logits.sum() * 0.0
        return total

    @torch.no_grad()
    def term_values(self, logits: Tensor, target: Tensor) -> dict[str, float]:
        """Unweighted value of every term (for logging and tests)."""
        batch = self.prepare(logits, target)
        return {name: float(term.compute(batch)) for name, term in self.terms.items()}

    def extra_repr(self) -> str:
        return ", ".join(f"{t}={w:.4g}" for t, w in self.weights.items())


CompoundLoss = AutolossLoss
