"""One trial = one LossSpec trained by nnU-Net at the study's fidelity, then validated on the fold's held-out cases.

The trainer is ``nnUNetTrainer_autoloss`` with the spec and fidelity as class attributes: the same class
`autoloss export` writes. Validation runs in-process (no export process pool: on small machines starting it
costs more than predicting a few cases) and yields per-class Dice and NSD on the original-resolution labels.
"""
from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from autoloss import metrics
from autoloss.nnunet import env
from autoloss.nnunet.prepare import PreparedDataset
from autoloss.spec import LossSpec

# "auto" is resolved per dataset (autoloss.objectives.auto_objective) into a class-wise objective string.
OBJECTIVES = ("dice", "nsd", "dice+nsd", "auto")


@dataclass(frozen=True)
class Fidelity:
    """How long and on what a trial trains; part of a study's identity."""

    configuration: str = "3d_fullres"
    epochs: int = 50
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    folds: tuple[int, ...] = (0,)
    tta: bool = False  # mirroring at validation: 4-8x the prediction cost, rarely changes a loss ranking
    nsd_tolerance_mm: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self) | {"folds": list(self.folds)}


def trainer_class(spec: LossSpec, fidelity: Fidelity | None = None, name: str | None = None,
                  continuation=None) -> type:
    """A ``nnUNetTrainer_autoloss`` subclass that trains ``spec`` (at ``fidelity``, else nnU-Net's defaults);
    ``continuation`` (``autoloss.nnunet.finetune.Continuation``): from its fold's base, at its LR."""
    from autoloss.nnunet.trainer import nnUNetTrainer_autoloss

    attrs = {"LOSS_SPEC": spec.to_dict(), "__module__": __name__}
    if continuation is not None:
        attrs.update(INITIAL_LR=continuation.initial_lr, BASE_CHECKPOINT=continuation.checkpoint_pattern)
    if fidelity is not None:
        attrs.update(NUM_EPOCHS=fidelity.epochs, NUM_ITERATIONS_PER_EPOCH=fidelity.iterations_per_epoch,
                     NUM_VAL_ITERATIONS_PER_EPOCH=fidelity.val_iterations_per_epoch)
    return type(name or f"nnUNetTrainer_autoloss_{spec.key()}", (nnUNetTrainer_autoloss,), attrs)


def objective_value(summary: dict, objective: str) -> float:
    """The search objective from a summary ({class: {metric: mean}, "mean": {metric: mean over classes}})."""
    from autoloss import objectives

    if objectives.is_classwise(objective):
        return objectives.classwise_value(summary, objective)
    return _combine(summary["mean"], objective)


def case_objective(case: dict[str, dict[str, float]], objective: str) -> float:
    """The objective of ONE validation case ({class: {metric: value}}): metrics averaged over the classes that
    are present (NaN: absent from reference and prediction), then combined like :func:`objective_value`."""
    from autoloss import objectives

    if objectives.is_classwise(objective):
        return objectives.classwise_value(case, objective)
    means = {m: _nanmean([v.get(m, float("nan")) for v in case.values()]) for m in ("dice", "nsd")}
    return _combine(means, objective)


def _combine(mean: dict[str, float], objective: str) -> float:
    if objective == "dice":
        return mean["dice"]
    if objective == "nsd":
        return mean["nsd"]
    return (mean["dice"] + mean["nsd"]) / 2.0


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def fold_seed(seed: int, fold: int) -> int:
    """The seed of one training: a pure function of (seed, fold), so a re-run of a spec on a fold starts alike."""
    return (int(seed) * 1_000_003 + int(fold) * 7_919) % (2 ** 31)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) before a training. What stays nondeterministic: nnU-Net's
    multi-process data augmentation (its workers draw their own seeds unless nnUNet_n_proc_DA=0), cuDNN's
    autotuned kernels on GPU, and float reductions in threaded kernels."""
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def run_trial(spec: LossSpec, prepared: PreparedDataset, fidelity: Fidelity, trial_dir: Path,
              device: str = "cpu", epoch_callback: Callable[[int, float], None] | None = None,
              log: Callable[[str], None] = lambda s: None, seed: int | None = None,
              cldice_classes: frozenset[str] | None = None, continuation=None) -> dict:
    """Train and validate ``spec`` on every fold of ``fidelity``; return metrics and timings (JSON-able).

    ``epoch_callback(step, pseudo_dice)`` is called after every epoch (step counts across folds); it may raise
    (e.g. optuna.TrialPruned) to stop the trial. A NaN/inf loss raises ``LossDiverged``. ``seed``: each fold's
    training is seeded with ``fold_seed(seed, fold)`` (None: not seeded). ``cldice_classes``: in 3D, the classes
    whose clDice is computed (skeletonising a large volume takes seconds); None = every class. 2D: always all.
    ``continuation`` (``autoloss.nnunet.finetune.Continuation``): start each fold from its base, at its LR.
    """
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cls = trainer_class(spec, fidelity, continuation=continuation)
    per_fold, steps, validation_s, epochs_run = [], 0.0, 0.0, 0
    # nnU-Net prints a lot per epoch; it goes to the trial's log instead of over the search's progress display.
    with open(trial_dir / "nnunet_stdout.log", "a") as out, contextlib.redirect_stdout(out), \
            warnings.catch_warnings():
        # nnU-Net divides by zero in its pseudo-Dice while a class has no voxel yet: expected, not worth a warning
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nnunetv2\.")
        for i, fold in enumerate(fidelity.folds):
            if seed is not None:
                seed_everything(fold_seed(seed, fold))
            fold_result = _train_and_validate(cls, i, fold, prepared, fidelity, trial_dir, device, epoch_callback,
                                              cldice_classes)
            per_fold.append(fold_result)
            steps += fold_result.pop("step_seconds")
            validation_s += fold_result.pop("validation_seconds")
            epochs_run += fold_result.pop("epochs_run")
    summary = per_fold[0]["summary"] if len(per_fold) == 1 else _average([f["summary"] for f in per_fold])
    total = time.perf_counter() - start
    result = {
        "spec": spec.to_dict(),
        "seed": seed,
        "metrics": summary,
        "folds": per_fold,
        "epochs_run": epochs_run,
        "seconds": total,
        "step_seconds": steps,
        "validation_seconds": validation_s,
        "overhead_seconds": max(0.0, total - steps - validation_s),
    }
    (trial_dir / "result.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def _train_and_validate(cls, index, fold, prepared, fidelity, trial_dir, device, epoch_callback,
                        cldice_classes=None) -> dict:
    """Train one fold in nnU-Net (outputs under the trial folder), then validate it."""
    with env.overridden(nnUNet_results=str(trial_dir), nnUNet_preprocessed=str(prepared.preprocessed_dir.parent)):
        plans = prepared.load_plans()
        plans["continue_training"] = False
        # the prepared configuration: nnU-Net's own, or the scaled one derived from it (autoloss.nnunet.scaled)
        trainer = cls(plans, prepared.configuration, fold, prepared.load_dataset_json(), torch.device(device))
        trainer.disable_checkpointing = True  # trials are compared, not kept; the winner is re-trained
        trainer.stop_on_divergence = True
        trainer.logger.plot_progress_png = lambda *_: None  # a matplotlib figure per epoch is pure overhead
        if epoch_callback is not None:
            offset = index * fidelity.epochs
            trainer.epoch_callback = lambda epoch, dice: epoch_callback(offset + epoch, dice)
        try:
            trainer.run_training()
        finally:
            _stop_dataloaders(trainer)
        t0 = time.perf_counter()
        summary, per_case = validate(trainer, prepared, fidelity, cldice_classes)
        curves = {k: [float(v) for v in trainer.logger.get_value(k, step=None)]
                  for k in ("mean_fg_dice", "train_losses", "val_losses")}
        starts, ends = (trainer.logger.get_value(k, step=None) for k in ("epoch_start_timestamps",
                                                                        "epoch_end_timestamps"))
        curves["epoch_seconds"] = [float(e - s) for s, e in zip(starts, ends)]  # data waits included
        return {"fold": fold, "summary": summary, "per_case": per_case, "curves": curves,
                "term_weights": {str(k): v for k, v in trainer.term_weight_history.items()},
                "step_seconds": trainer.step_seconds, "validation_seconds": time.perf_counter() - t0,
                "epochs_run": trainer.current_epoch}


def _stop_dataloaders(trainer) -> None:
    # nnU-Net stops its augmentation workers only in on_train_end; after an exception they would linger.
    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        finish = getattr(loader, "_finish", None)
        if finish is not None:
            try:
                finish()
            except Exception:  # noqa: BLE001 - best effort clean-up on an already failing path
                pass


def _average(summaries: list[dict]) -> dict:
    keys = summaries[0].keys()
    return {k: {m: float(np.nanmean([s[k][m] for s in summaries])) for m in summaries[0][k]} for k in keys}


def validate(trainer, prepared: PreparedDataset, fidelity: Fidelity,
             cldice_classes: frozenset[str] | None = None) -> tuple[dict, dict]:
    """Predict the fold's validation cases with the trained network; Dice and NSD against the original labels."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=fidelity.tta,
                                perform_everything_on_device=trainer.device.type == "cuda", device=trainer.device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, type(trainer).__name__,
                                    trainer.inference_allowed_mirroring_axes)
    lm = trainer.label_manager
    labels = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    reader = trainer.plans_manager.image_reader_writer_class()
    _, val_keys = trainer.do_split()
    dataset_val = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys)
    ending = trainer.dataset_json["file_ending"]
    per_case = {}
    with torch.no_grad():
        for key in val_keys:
            data, _, _, props = dataset_val.load_case(key)
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.asarray(data[:]))).cpu()
            seg = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, trainer.plans_manager, trainer.configuration_manager, lm, props,
                num_threads_torch=torch.get_num_threads())
            ref, ref_props = reader.read_seg(str(prepared.preprocessed_dir / "gt_segmentations" / (key + ending)))
            ref = ref[0]
            spacing = tuple(float(s) for s in ref_props["spacing"])
            seg, ref, spacing = _drop_flat_axes(np.asarray(seg), ref, spacing)
            per_case[key] = metrics.case_metrics(seg, ref, labels, spacing, fidelity.nsd_tolerance_mm,
                                                 lm.ignore_label,
                                                 cldice_classes=None if seg.ndim == 2 else cldice_classes)
    trainer.set_deep_supervision_enabled(True)
    return metrics.summarise(per_case), per_case


def _drop_flat_axes(seg: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]):
    # 2D images come as (1, H, W) with a dummy spacing of 999 on the first axis: measure them in 2D.
    while seg.ndim > 2 and seg.shape[0] == 1:
        seg, ref, spacing = seg[0], ref[0], spacing[1:]
    return seg, ref, spacing
