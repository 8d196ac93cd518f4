"""The one nnU-Net trainer autoloss trains with: search trials and exported trainers are subclasses of it that
only set class attributes (the LossSpec and the fidelity), so a loss validated in the search behaves
identically after export.

nnU-Net facts this class is built around (DESIGN.md):
- keep the explicit ``__init__(plans, configuration, fold, dataset_json, device)`` signature;
- ``current_epoch`` is 0 inside ``_build_loss``: the schedule is applied in ``on_train_epoch_start`` as a pure
  function of ``current_epoch`` (so ``--c`` resumes with the right weights);
- with deep supervision the target is a list of downsampled maps; the loss derives everything from the target
  it receives, so each scale gets its own distance maps;
- per-sample targets that are costly (tubed skeletons, component labels: ``LossDef.extra_targets``) are made in
  the data-loading workers and travel as extra segmentation channels (``autoloss.nnunet.extra_targets``), added
  to both the training and the validation transforms, so exported trainers get them too.
- a fine-tune (``BASE_CHECKPOINT``) loads the whole base, output heads included, in ``on_train_start`` of a
  training that starts at epoch 0, the same code in the search and in an exported trainer; nnU-Net's own
  ``-pretrained_weights`` would leave the heads fresh (``autoloss.nnunet.finetune`` says why that is not used),
  and a ``--c`` resume continues from the fine-tune's own checkpoint;
- checkpoints are written to a temporary file and renamed: a training killed while saving (kill -9, power) leaves
  the previous checkpoint intact, never a truncated one (nnU-Net writes in place).
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from autoloss.losses import build_loss, get_loss_def
from autoloss.nnunet.checkpoints import load_base_weights, same_body_weights
from autoloss.nnunet.extra_targets import ExtraTargetLoss, split_extra_targets, with_extra_targets
from autoloss.spec import LossSpec


class LossDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class nnUNetTrainer_autoloss(nnUNetTrainer):
    """nnUNetTrainer whose loss (and its schedule) is built from ``LOSS_SPEC``.

    Subclasses set ``LOSS_SPEC`` (a LossSpec as a dict) and optionally ``NUM_EPOCHS``,
    ``NUM_ITERATIONS_PER_EPOCH``, ``NUM_VAL_ITERATIONS_PER_EPOCH`` and ``INITIAL_LR`` (None keeps nnU-Net's
    defaults: 1000, 250, 50, 1e-2; the LR decays by nnU-Net's poly schedule over ``NUM_EPOCHS`` either way).
    ``WARMUP_LOSS_SPEC`` and ``WARMUP_EPOCHS``: train that loss for the first epochs, then ``LOSS_SPEC`` (whose own
    schedule then counts from the switch): the from-scratch form of a fine-tune (``autoloss.nnunet.finetune``).
    ``BASE_CHECKPOINT``: fine-tune from this checkpoint (``{fold}`` is replaced by the fold), loaded whole.
    """

    LOSS_SPEC: dict[str, Any] | None = None
    NUM_EPOCHS: int | None = None
    NUM_ITERATIONS_PER_EPOCH: int | None = None
    NUM_VAL_ITERATIONS_PER_EPOCH: int | None = None
    INITIAL_LR: float | None = None
    WARMUP_LOSS_SPEC: dict[str, Any] | None = None
    WARMUP_EPOCHS: int = 0
    BASE_CHECKPOINT: str | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.LOSS_SPEC is None:
            raise TypeError(f"{type(self).__name__} has no LOSS_SPEC; export a trainer with `autoloss export`")
        self.loss_spec = LossSpec.from_dict(self.LOSS_SPEC)
        if self.NUM_EPOCHS is not None:
            self.num_epochs = int(self.NUM_EPOCHS)
        if self.NUM_ITERATIONS_PER_EPOCH is not None:
            self.num_iterations_per_epoch = int(self.NUM_ITERATIONS_PER_EPOCH)
        if self.NUM_VAL_ITERATIONS_PER_EPOCH is not None:
            self.num_val_iterations_per_epoch = int(self.NUM_VAL_ITERATIONS_PER_EPOCH)
        if self.INITIAL_LR is not None:
            self.initial_lr = float(self.INITIAL_LR)
        self.warmup_epochs = int(self.WARMUP_EPOCHS) if self.WARMUP_LOSS_SPEC else 0
        self.autoloss_loss = None  # the unwrapped loss, whose schedule on_train_epoch_start drives
        # Search hooks (unused by exported trainers): called after each epoch with (epoch, pseudo_dice); may raise.
        self.epoch_callback: Callable[[int, float], None] | None = None
        self.stop_on_divergence = False
        self.step_seconds = 0.0  # time inside train/validation steps, to measure a trial's overhead
        self.term_weight_history: dict[int, dict[str, float]] = {}  # epoch -> scheduled weights
        self.extra_target_names = self._extra_target_names()

    @classmethod
    def _extra_target_names(cls) -> tuple[str, ...]:
        return get_loss_def(cls.LOSS_SPEC["name"]).extra_targets if cls.LOSS_SPEC else ()

    @classmethod
    def get_training_transforms(cls, *args, **kwargs):
        return with_extra_targets(super().get_training_transforms(*args, **kwargs), cls._extra_target_names())

    @classmethod
    def get_validation_transforms(cls, *args, **kwargs):
        return with_extra_targets(super().get_validation_transforms(*args, **kwargs), cls._extra_target_names())

    def _take_extra_targets(self, batch: dict) -> dict:
        """Split the loader's extra target channels off the label and hand them to the loss for this step."""
        if not self.extra_target_names:
            return batch
        target, extras = split_extra_targets(batch["target"], len(self.extra_target_names))
        self.loss.extras = extras
        return {**batch, "target": target}

    def _build_loss(self):
        lm = self.label_manager
        loss = build_loss(
            self.loss_spec,
            region_based=lm.has_regions,
            ignore_label=lm.ignore_label,
            batch_dice=self.configuration_manager.batch_dice,
            ddp=self.is_ddp,
        )
        self.autoloss_loss = loss
        main = self._wrap(loss)
        main = ExtraTargetLoss(main) if self.extra_target_names else main
        if self.warmup_epochs:
            # The warm-up loss ignores the extra targets (set on it each step, never read).
            self.warmup_loss = self._wrap(build_loss(LossSpec.from_dict(self.WARMUP_LOSS_SPEC),
                                                     region_based=lm.has_regions, ignore_label=lm.ignore_label,
                                                     batch_dice=self.configuration_manager.batch_dice,
                                                     ddp=self.is_ddp))
            self.main_loss = main
        return main

    def _wrap(self, loss):
        if not self.enable_deep_supervision:
            return loss
        # nnU-Net's weighting: halve per scale, drop the lowest, normalise to 1.
        scales = self._get_deep_supervision_scales()
        weights = np.array([1 / (2 ** i) for i in range(len(scales))])
        weights[-1] = 1e-6 if self.is_ddp else 0
        weights = weights / weights.sum()
        return DeepSupervisionWrapper(loss, weights)

    def on_train_start(self):
        loaded_before = self.was_initialized and self.current_epoch == 0  # nnUNetv2_train -pretrained_weights
        super().on_train_start()
        if self.BASE_CHECKPOINT and self.current_epoch == 0:  # not on a --c resume: that has its own weights
            path = self.BASE_CHECKPOINT.format(fold=self.fold)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{type(self).__name__} fine-tunes from {path}, which does not exist: "
                                        "train that fold's base first, or re-export with the base's folder")
            if loaded_before and not same_body_weights(self.network, path):
                raise RuntimeError(f"-pretrained_weights is not the base {type(self).__name__} was tested from "
                                   f"({path}); drop -pretrained_weights, or export the search again from that base")
            count = load_base_weights(self.network, path)
            self.print_to_log_file(f"autoloss: fine-tuning from {path} ({count} tensors, output heads included), "
                                   f"initial LR {self.initial_lr:.4g}")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        if self.warmup_epochs:  # a pure function of current_epoch, so `--c` resumes in the right phase
            self.loss = self.warmup_loss if self.current_epoch < self.warmup_epochs else self.main_loss
        epoch, total = self.current_epoch - self.warmup_epochs, self.num_epochs - self.warmup_epochs
        if self.autoloss_loss is not None and self.loss_spec.schedule is not None and epoch >= 0:
            weights = self.autoloss_loss.set_epoch(epoch, total)
            self.print_to_log_file("autoloss term weights: " + ", ".join(f"{k}={v:.4g}" for k, v in weights.items()))
            self.term_weight_history[self.current_epoch] = weights

    def save_checkpoint(self, filename: str) -> None:
        # Write then rename: a kill while saving keeps the previous checkpoint whole (nnU-Net writes in place).
        tmp = f"{filename}.tmp"
        super().save_checkpoint(tmp)
        if os.path.isfile(tmp):
            os.replace(tmp, filename)

    def train_step(self, batch: dict) -> dict:
        start = time.perf_counter()
        out = super().train_step(self._take_extra_targets(batch))
        self.step_seconds += time.perf_counter() - start
        if self.stop_on_divergence and not np.all(np.isfinite(out["loss"])):
            raise LossDiverged(f"loss became {out['loss']} at epoch {self.current_epoch}")
        return out

    def validation_step(self, batch: dict) -> dict:
        start = time.perf_counter()
        out = super().validation_step(self._take_extra_targets(batch))
        self.step_seconds += time.perf_counter() - start
        return out

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        if self.epoch_callback is not None:
            self.epoch_callback(epoch, float(self.logger.get_value("mean_fg_dice", step=-1)))
