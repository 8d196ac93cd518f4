"""Fine-tuning from a Dice+CE base: how a continuation starts from a base, at which learning rate, and how a base
is trained (resumably) and validated.

How a continuation starts: from the WHOLE base network, output heads included. nnU-Net 2.8's ``nnUNetv2_train
-pretrained_weights`` (``load_pretrained_weights``) copies every weight except the heads (keys with
``.seg_layers.``, one 1x1 convolution per deep-supervision scale), which restart from random; at a fine-tune's
learning rate the network then spends its continuation relearning them: on Hippocampus 2d (nnU-Net's own network,
a base of 300 iterations at validation Dice 0.52) Dice+CE continued 100 iterations at LR 1e-3 reached 0.25 with
fresh heads. A comparison of losses would then measure how fast each loss relearns a 1x1 layer. So
``nnUNetTrainer_autoloss`` loads the whole base itself at the start of a training (``BASE_CHECKPOINT``,
``autoloss.nnunet.checkpoints``): the search's continuations and the exported fine-tune trainer run the same code,
``nnUNetv2_train -pretrained_weights`` still works with an exported trainer (the trainer checks it is the same
base and restores the heads), and ``--c`` resumes an interrupted fine-tune. The optimizer state (SGD momentum) is
not loaded, as in nnU-Net. Every arm (the control included) is seeded alike.

The learning rate of a continuation (one recipe for every arm, recorded in the study identity): nnU-Net's own
tail. A base of N epochs continued for E epochs is trained as the last E epochs of one nnU-Net schedule of N + E
epochs: nnU-Net's poly decay ``lr(e) = 0.01 (1 - e / (N + E))^0.9`` restricted to its last E epochs is exactly a
fresh poly decay over E epochs from ``0.01 (E / (N + E))^0.9`` (:func:`continuation_lr`). So the continuation
neither restarts at nnU-Net's full 0.01 (a warm restart that first undoes part of what the base learned, not a
fine-tune) nor picks an arbitrary small rate, and the from-scratch approximation the exporter offers (Dice+CE,
then the loss, in one nnU-Net schedule) has nnU-Net's rate at the switch.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from autoloss.errors import AutolossError
from autoloss.losses import baseline_spec
from autoloss.nnunet import env
from autoloss.nnunet.checkpoints import read_checkpoint
from autoloss.nnunet.prepare import PreparedDataset

NNUNET_INITIAL_LR = 1e-2
POLY_EXPONENT = 0.9
BASE_TRAINER = "nnUNetTrainer_autoloss_base"  # the class name of autoloss's own Dice+CE bases
CHECKPOINT = "checkpoint_final.pth"
LR_RECIPE = "nnunet-tail"


def continuation_lr(base_epochs: int, finetune_epochs: int) -> float:
    """Initial LR of a continuation: where nnU-Net's poly schedule of base + fine-tune epochs stands at the base's
    end (the continuation then decays from it to 0 over its own epochs, as that schedule would)."""
    if base_epochs < 1 or finetune_epochs < 1:
        raise AutolossError(f"a fine-tune needs at least one base epoch and one fine-tune epoch "
                            f"(got {base_epochs} and {finetune_epochs})")
    return NNUNET_INITIAL_LR * (finetune_epochs / (base_epochs + finetune_epochs)) ** POLY_EXPONENT


def lr_recipe(base_epochs: int, finetune_epochs: int, initial_lr: float | None = None) -> dict:
    """The LR recipe as recorded in a study's identity (``initial_lr`` given: a user's fixed rate instead)."""
    lr = continuation_lr(base_epochs, finetune_epochs) if initial_lr is None else float(initial_lr)
    return {"recipe": LR_RECIPE if initial_lr is None else "fixed", "initial_lr": lr,
            "decay": f"poly {POLY_EXPONENT} to 0 over the {finetune_epochs} fine-tune epochs",
            "optimizer": "nnU-Net's SGD (momentum 0.99, nesterov), fresh state",
            "heads": "loaded from the base (the whole network)"}


@dataclass(frozen=True)
class Continuation:
    """What a fine-tune training needs to start: the base (a folder in nnU-Net's results layout, with
    ``fold_K/checkpoint_final.pth``) and the continuation's initial learning rate. Plain data: travels to Ray."""

    base_dir: str
    initial_lr: float

    @property
    def checkpoint_pattern(self) -> str:
        """The trainer's ``BASE_CHECKPOINT``: the base of fold K is ``pattern.format(fold=K)``."""
        return str(Path(self.base_dir) / "fold_{fold}" / CHECKPOINT)


@dataclass(frozen=True)
class BaseTraining:
    """A base to make ready for one fold (plain data: runs in-process or as a Ray task like any training):
    autoloss's own, trained (or resumed) under ``results_root``, or a user's ``checkpoint``, only validated."""

    results_root: str | None = None
    checkpoint: str | None = None
    seed: int | None = None

    def run(self, prepared: PreparedDataset, fidelity, trial_dir: Path, device: str = "cpu") -> dict:
        from autoloss.nnunet.run import fold_seed, seed_everything

        fold = fidelity.folds[0]
        trial_dir = Path(trial_dir)
        trial_dir.mkdir(parents=True, exist_ok=True)
        with open(trial_dir / "nnunet_stdout.log", "a") as out, contextlib.redirect_stdout(out), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nnunetv2\.")
            if self.seed is not None:
                seed_everything(fold_seed(self.seed, fold))
            if self.checkpoint:
                return validate_checkpoint(prepared, fidelity, fold, Path(self.checkpoint), trial_dir / "scratch",
                                           device)
            result = train_base(prepared, fidelity, fold, Path(self.results_root), device, log=print)
        write_base_record(result, base_folder(Path(self.results_root), prepared))
        return result


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_folder(results_root: Path, prepared: PreparedDataset) -> Path:
    """Where autoloss trains its own bases: nnU-Net's results layout under ``results_root``."""
    return (Path(results_root) / prepared.dataset_name
            / f"{BASE_TRAINER}__{prepared.plans_identifier}__{prepared.configuration}")


def train_base(prepared: PreparedDataset, fidelity, fold: int, results_root: Path, device: str = "cpu",
               log=lambda s: None) -> dict:
    """Train (or resume, or just validate) autoloss's Dice+CE base of ``fold`` under ``results_root``.

    The base saves a checkpoint after every epoch (written atomically), so a killed training resumes from its
    last epoch; an unreadable checkpoint is dropped and the training restarts. ``checkpoint_final.pth`` exists only
    once every epoch ran; then the base is validated on the fold's held-out cases."""
    from autoloss.nnunet.run import _stop_dataloaders, trainer_class, validate

    start = time.perf_counter()
    cls = trainer_class(baseline_spec(), fidelity, name=BASE_TRAINER)
    final = base_folder(results_root, prepared) / f"fold_{fold}" / CHECKPOINT
    resumed_from = None
    with env.overridden(nnUNet_results=str(results_root),
                        nnUNet_preprocessed=str(prepared.preprocessed_dir.parent)):
        trainer = _make_trainer(cls, prepared, fold, device)
        trainer.logger.plot_progress_png = lambda *_: None
        if final.is_file():  # trained before (killed while validating, or its record was lost)
            trainer.logger.load_checkpoint(_load_network(trainer, final)["logging"])
        else:
            latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
            if latest.is_file():
                try:
                    trainer.load_checkpoint(str(latest))
                    resumed_from = trainer.current_epoch
                    log(f"base fold {fold}: resuming at epoch {resumed_from}")
                except Exception as exc:  # noqa: BLE001 - a damaged checkpoint: start this base again
                    log(f"base fold {fold}: {latest.name} unreadable ({type(exc).__name__}); training it again")
                    latest.unlink()
                    _stop_dataloaders(trainer)
                    trainer = _make_trainer(cls, prepared, fold, device)
                    trainer.logger.plot_progress_png = lambda *_: None
            trainer.save_every = 1  # a kill loses at most the epoch in progress
            try:
                trainer.run_training()
            finally:
                _stop_dataloaders(trainer)
        epochs = len(trainer.logger.get_value("mean_fg_dice", step=None))
        t0 = time.perf_counter()
        summary, per_case = validate(trainer, prepared, fidelity)
    curves = {k: [float(v) for v in trainer.logger.get_value(k, step=None)]
              for k in ("mean_fg_dice", "train_losses", "val_losses")}
    return {"fold": fold, "source": "autoloss", "checkpoint": str(final), "sha256": file_sha256(final),
            "epochs": epochs, "iterations_per_epoch": int(trainer.num_iterations_per_epoch),
            "metrics": summary, "per_case": per_case, "curves": curves, "resumed_from": resumed_from,
            "seconds": time.perf_counter() - start, "validation_seconds": time.perf_counter() - t0}


def validate_checkpoint(prepared: PreparedDataset, fidelity, fold: int, checkpoint: Path, scratch: Path,
                        device: str = "cpu") -> dict:
    """Validate a finished base (a user's) on the fold's held-out cases. nnU-Net writes its trainer's log under
    ``scratch``, never beside the checkpoint: the user's results folder is only read."""
    from autoloss.nnunet.run import trainer_class, validate

    start = time.perf_counter()
    cls = trainer_class(baseline_spec(), fidelity, name=BASE_TRAINER)
    with env.overridden(nnUNet_results=str(scratch), nnUNet_preprocessed=str(prepared.preprocessed_dir.parent)):
        trainer = _make_trainer(cls, prepared, fold, device)
        ckpt = _load_network(trainer, checkpoint)
        summary, per_case = validate(trainer, prepared, fidelity)
    shutil.rmtree(scratch, ignore_errors=True)
    logging = ckpt.get("logging") or {}
    curves = {k: [float(v) for v in logging.get(k, [])] for k in ("mean_fg_dice", "train_losses", "val_losses")}
    return {"fold": fold, "source": "user", "checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint),
            "epochs": int(ckpt.get("current_epoch", 0)), "metrics": summary, "per_case": per_case,
            "curves": curves, "resumed_from": None, "seconds": time.perf_counter() - start}


def _make_trainer(cls, prepared: PreparedDataset, fold: int, device: str):
    plans = prepared.load_plans()
    plans["continue_training"] = False
    return cls(plans, prepared.configuration, fold, prepared.load_dataset_json(), torch.device(device))


def _load_network(trainer, checkpoint: Path) -> dict:
    """The whole network of a finished base (heads included: this is the base itself, for its validation)."""
    if not trainer.was_initialized:
        trainer.initialize()
    ckpt = read_checkpoint(checkpoint)
    trainer.network.load_state_dict(ckpt["network_weights"])
    if ckpt.get("inference_allowed_mirroring_axes") is not None:
        trainer.inference_allowed_mirroring_axes = ckpt["inference_allowed_mirroring_axes"]
    return ckpt


def base_record_path(folder: Path, fold: int) -> Path:
    return Path(folder) / f"fold_{fold}" / "autoloss_base.json"


def write_base_record(record: dict, folder: Path) -> None:
    """Beside autoloss's own base: its validation and hash, so a later search reuses it without validating."""
    path = base_record_path(folder, record["fold"])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float))
    tmp.replace(path)
