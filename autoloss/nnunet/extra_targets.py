"""Loader-made extra targets (tubed skeletons, component labels) for nnU-Net v2 training.

nnU-Net's data loader collates only ``image`` and ``segmentation``, so the extra targets ride along as extra
channels of the segmentation: :class:`AppendExtraTargetsTransform` (a batchgeneratorsv2 transform, run per sample
in the augmentation workers after every spatial augmentation) appends one channel per target, the
deep-supervision downsampling that follows shrinks them per scale exactly like the label (nearest), and the
trainer splits them off again before nnU-Net's ``train_step`` / ``validation_step`` see the target
(:func:`split_extra_targets`), handing them to the loss through :class:`ExtraTargetLoss`. nnU-Net's own code
(pseudo-Dice, ignore-label handling) thus sees the usual label map.
"""
from __future__ import annotations

import time

import torch
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from torch import Tensor, nn

from autoloss.losses.targets import make_extra_target


class AppendExtraTargetsTransform(SegOnlyTransform):
    """Append one channel per named extra target, made from channel 0 (the label map) of one sample."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.names = tuple(names)
        self.seconds = 0.0  # time spent making targets in this worker (per-process; for the benchmarks)
        self.samples = 0

    def _apply_to_segmentation(self, segmentation: Tensor, **params) -> Tensor:
        start = time.perf_counter()
        labels = segmentation[0].numpy()
        extra = [torch.from_numpy(make_extra_target(n, labels)).to(segmentation.dtype)[None] for n in self.names]
        self.seconds += time.perf_counter() - start
        self.samples += 1
        return torch.cat([segmentation, *extra], 0)


def with_extra_targets(transforms: ComposeTransforms, names: tuple[str, ...]) -> ComposeTransforms:
    """nnU-Net's transform pipeline with :class:`AppendExtraTargetsTransform` before its deep-supervision
    downsampling (or last, without deep supervision)."""
    if not names:
        return transforms
    steps = list(transforms.transforms)
    at = next((i for i, t in enumerate(steps) if isinstance(t, DownsampleSegForDSTransform)), len(steps))
    steps.insert(at, AppendExtraTargetsTransform(names))
    return ComposeTransforms(steps)


def split_extra_targets(target: Tensor | list[Tensor], count: int):
    """(label target, extra targets) from a loader target whose last ``count`` channels are extra targets;
    both are lists per deep-supervision scale when the target is."""
    if isinstance(target, (list, tuple)):
        return [t[:, :-count] for t in target], [t[:, -count:] for t in target]
    return target[:, :-count], target[:, -count:]


class ExtraTargetLoss(nn.Module):
    """Calls ``loss(output, target, extras)`` with the extra targets the trainer set for this step.

    ``loss`` is the autoloss loss or nnU-Net's ``DeepSupervisionWrapper`` around it (which passes the per-scale
    extra list through). The extras are used once: a step without them is an error, never a silent fallback
    to computing skeletons inside the training loop.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss
        self.extras = None

    def forward(self, output, target):
        extras, self.extras = self.extras, None
        if extras is None:
            raise RuntimeError("this loss needs extra targets from the autoloss data loader; none were given "
                               "for this step (use nnUNetTrainer_autoloss's train_step/validation_step)")
        if isinstance(extras, list):
            extras = [e.to(o.device, non_blocking=True) for e, o in zip(extras, output)]
        else:
            extras = extras.to(output.device, non_blocking=True)
        return self.loss(output, target, extras)
