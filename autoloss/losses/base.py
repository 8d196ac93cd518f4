"""Shared machinery of the loss terms: nnU-Net inputs -> probabilities, one-hot targets, the ignore mask and the
per-class sums that every Dice-style term reduces.

Conventions (those of nnU-Net v2's ``DC_and_CE_loss`` / ``DC_and_BCE_loss``):

- logits are ``(B, C, *spatial)`` (2D or 3D), never passed through a non-linearity by the network;
- softmax mode: the target is ``(B, 1, *spatial)`` (or ``(B, *spatial)``) integer labels, possibly stored as float;
  voxels equal to ``ignore_label`` are removed from every term;
- region mode (``region_based=True``, nnU-Net's ``has_regions``): sigmoid outputs, the target is ``(B, R, *spatial)``
  binary and, when an ignore label is used, nnU-Net appends the ignore mask as the LAST target channel
  (valid voxels: ``1 - target[:, -1:]``);
- all arithmetic runs in float32 whatever the autocast dtype of the logits (sums of millions of bf16 values are
  not exact enough for Dice).

A :class:`SegBatch` is built once per call and shared by the terms of a compound loss, so a DiceCE computes the
softmax, the one-hot target and the mask once.
"""
from __future__ import annotations

from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Floor for bases raised to powers < 1 ((1 - TI)^0.75, (-ln Dice)^0.3): their derivative is infinite at 0.
POW_EPS = 1e-6


def pow_floor(x: Tensor, gamma: float) -> Tensor:
    """``max(x, POW_EPS) ** gamma`` with finite gradients, as ``exp(gamma * log x)`` for non-integer powers
    (torch's ``pow`` backward costs another ``pow``: 2.5x slower on a CPU)."""
    x = x.clamp_min(POW_EPS)
    if gamma == 0:
        return torch.ones_like(x)
    if gamma == 1:
        return x
    if gamma == 2:
        return x.square()
    return torch.exp(gamma * torch.log(x))


class SegBatch:
    """One call's inputs, prepared once: float32 logits, target as labels or regions, valid-voxel mask.

    Heavier derived tensors (probabilities, log-probabilities, one-hot target, per-class sums) are computed on
    first use and cached, so terms of a compound share them.
    """

    def __init__(self, logits: Tensor, target: Tensor, *, region_based: bool = False,
                 ignore_label: int | None = None):
        if logits.ndim not in (4, 5):
            raise ValueError(f"logits must be (B, C, X, Y[, Z]); got shape {tuple(logits.shape)}")
        self.logits = logits.float()
        self.region_based = region_based
        self.ignore_label = ignore_label
        self.axes = tuple(range(2, logits.ndim))
        self._sums: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        with torch.no_grad():
            if target.ndim == logits.ndim - 1:
                target = target.unsqueeze(1)
            if target.shape[0] != logits.shape[0] or target.shape[2:] != logits.shape[2:]:
                raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
            mask = None
            if region_based:
                if ignore_label is not None:
                    # nnU-Net appends the ignore mask as the last channel of region targets.
                    last = target[:, -1:]
                    mask = ~last if last.dtype == torch.bool else last == 0
                    target = target[:, :-1]
                if target.shape[1] != logits.shape[1]:
                    raise ValueError(f"region target has {target.shape[1]} channels for {logits.shape[1]} outputs"
                                     + (" (after removing the ignore channel)" if ignore_label is not None else ""))
                self.labels = None
                self._regions = target
            else:
                if target.shape[1] != 1:
                    raise ValueError(f"softmax targets are label maps (B, 1, ...); got {tuple(target.shape)} "
                                     "(region targets need region_based=True)")
                labels = target.long()
                if ignore_label is not None:
                    mask = labels != ignore_label
                    labels = torch.where(mask, labels, 0)
                self.labels = labels
                self._regions = None
            self.mask = mask  # bool (B, 1, *spatial), True = voxel counts; None = every voxel counts
        # Per-sample targets made in the data loader (name -> (B, 1, *spatial)); see :meth:`extra`.
        self.extras: dict[str, Tensor] = {}

    def extra(self, name: str) -> Tensor:
        """The loader-made extra target ``name`` (``autoloss.losses.targets``), or, when the caller gave none,
        the same target derived here from the labels on the CPU (correct, but slow inside a training loop)."""
        if name not in self.extras:
            if self.labels is None:
                raise ValueError(f"the {name} target is made from a label map; region targets have none")
            from autoloss.losses.targets import extra_target_from_batch

            self.extras[name] = extra_target_from_batch(name, self.labels)
        return self.extras[name]

    # ---- shapes and counts -------------------------------------------------------------------------------------
    @property
    def num_channels(self) -> int:
        return self.logits.shape[1]

    @cached_property
    def maskf(self) -> Tensor | None:
        return None if self.mask is None else self.mask.float()

    @cached_property
    def num_valid(self) -> Tensor:
        """Number of voxels that count (a float32 scalar tensor, at least 1 to keep means finite)."""
        if self.mask is None:
            n = self.logits[:, 0].numel()
            return torch.tensor(float(n), device=self.logits.device)
        return self.mask.sum(dtype=torch.float32).clamp_min(1.0)

    # ---- probabilities -----------------------------------------------------------------------------------------
    @cached_property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits) if self.region_based else torch.softmax(self.logits, 1)

    @cached_property
    def log_probs(self) -> Tensor:
        """log p (softmax mode only; region terms use the numerically stable BCE forms)."""
        assert not self.region_based
        return torch.log_softmax(self.logits, 1)

    @cached_property
    def onehot(self) -> Tensor:
        """float32 (B, C, *spatial) target, zero at ignored voxels (so masked sums need no extra multiply)."""
        with torch.no_grad():
            if self.region_based:
                g = self._regions.float()
            else:
                g = torch.zeros_like(self.logits)
                g.scatter_(1, self.labels, 1.0)
            if self.mask is not None:
                g = g * self.maskf
        return g

    @cached_property
    def fg_onehot_bool(self) -> Tensor:
        """bool one-hot (B, C, *spatial), False at ignored voxels: input of the distance transforms."""
        return self.onehot > 0.5

    # ---- per-voxel losses --------------------------------------------------------------------------------------
    @cached_property
    def voxel_ce(self) -> Tensor:
        """Per-voxel cross-entropy: (B, 1, *spatial) softmax CE, or (B, R, *spatial) binary CE in region mode."""
        if self.region_based:
            return F.binary_cross_entropy_with_logits(self.logits, self._regions.float(), reduction="none")
        return -self.log_probs.gather(1, self.labels)

    def masked_mean(self, values: Tensor) -> Tensor:
        """Mean of a per-voxel (B, 1|C, *spatial) map over the valid voxels (and its channels)."""
        if self.mask is None:
            return values.mean()
        return (values * self.maskf).sum() / (self.num_valid * values.shape[1])

    # ---- per-class sums for Dice-style terms -------------------------------------------------------------------
    def first_channel(self, do_bg: bool) -> int:
        """Index of the first channel a region term scores: region outputs have no background channel."""
        return 0 if (do_bg or self.region_based) else 1

    def class_sums(self, start: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(tp, sum_p, sum_g), each (B, C - start), over the valid voxels of channels ``start:``."""
        if start not in self._sums:
            p = self.probs[:, start:]
            g = self.onehot[:, start:]
            pm = p if self.maskf is None else p * self.maskf
            tp = (p * g).sum(self.axes, dtype=torch.float32)
            sum_p = pm.sum(self.axes, dtype=torch.float32)
            with torch.no_grad():
                sum_g = g.sum(self.axes, dtype=torch.float32)
            self._sums[start] = (tp, sum_p, sum_g)
        return self._sums[start]


def gather_batch(x: Tensor) -> Tensor:
    """Concatenate a (B, ...) tensor over DDP ranks, keeping gradients (nnU-Net's AllGatherGrad)."""
    from nnunetv2.utilities.ddp_allgather import AllGatherGrad

    return AllGatherGrad.apply(x).flatten(0, 1)


def ddp_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def tp_fp_fn(batch: SegBatch, *, do_bg: bool, batch_dice: bool, ddp: bool = False
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft tp, fp, fn and the ground-truth volume per class, reduced like nnU-Net's SoftDiceLoss.

    Shapes are ``(C',)`` with ``batch_dice`` (sums over the batch, and over DDP ranks when ``ddp``) and
    ``(B, C')`` without; ``C'`` drops the background channel unless ``do_bg`` (softmax mode only).
    """
    tp, sum_p, sum_g = batch.class_sums(batch.first_channel(do_bg))
    if batch_dice:
        if ddp and ddp_active():
            tp, sum_p, sum_g = gather_batch(tp), gather_batch(sum_p), gather_batch(sum_g)
        tp, sum_p, sum_g = tp.sum(0), sum_p.sum(0), sum_g.sum(0)
    return tp, sum_p - tp, sum_g - tp, sum_g


class SegLoss(nn.Module):
    """Base of every loss term: ``forward(logits, target)`` builds a :class:`SegBatch` and calls ``compute``.

    Subclasses implement ``compute(batch) -> scalar``; a compound loss calls ``compute`` of each term on one
    shared batch.
    """

    term: str = ""

    def __init__(self, *, region_based: bool = False, ignore_label: int | None = None):
        super().__init__()
        self.region_based = region_based
        self.ignore_label = ignore_label

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.compute(SegBatch(logits, target, region_based=self.region_based, ignore_label=self.ignore_label))

    def compute(self, batch: SegBatch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class DiceStyleLoss(SegLoss):
    """A term computed from per-class soft tp/fp/fn, with nnU-Net's ``smooth``, ``do_bg`` and ``batch_dice``."""

    def __init__(self, *, smooth: float = 1e-5, do_bg: bool = False, batch_dice: bool = True, ddp: bool = False,
                 region_based: bool = False, ignore_label: int | None = None):
        super().__init__(region_based=region_based, ignore_label=ignore_label)
        self.smooth = float(smooth)
        self.do_bg = bool(do_bg)
        self.batch_dice = bool(batch_dice)
        self.ddp = ddp

    def stats(self, batch: SegBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tp_fp_fn(batch, do_bg=self.do_bg, batch_dice=self.batch_dice, ddp=self.ddp)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, do_bg={self.do_bg}, batch_dice={self.batch_dice}"


def soft_dice(tp: Tensor, fp: Tensor, fn: Tensor, smooth: float) -> Tensor:
    """nnU-Net's soft Dice per class: (2 tp + s) / max(2 tp + fp + fn + s, 1e-8)."""
    return (2 * tp + smooth) / (2 * tp + fp + fn + smooth).clamp_min(1e-8)
