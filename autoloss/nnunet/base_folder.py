"""A user's nnU-Net results folder as the base of a fine-tune search: read, checked against the study, never written.

The folder is what ``nnUNetv2_train`` made: ``$nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION`` with
``plans.json``, ``dataset.json`` and ``fold_K/checkpoint_final.pth`` (plus ``fold_K/validation/`` once nnU-Net
validated the fold). The study adopts the base's plans and configuration (so the continuations train the base's
network), and every check fails with one line naming what differs: the dataset, the plans, the configuration,
and per fold the cases the base was validated on (a continuation must be judged on cases its base never trained
on, so the study's split must be the base's).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from autoloss.errors import AutolossError
from autoloss.nnunet.checkpoints import read_checkpoint
from autoloss.nnunet.finetune import CHECKPOINT
from autoloss.nnunet.adopted_plans import first_difference
from autoloss.nnunet.prepare import PreparedDataset

# dataset.json entries the network and its labels depend on (numTraining and names may differ: a subset, a copy)
DATASET_KEYS = ("labels", "channel_names", "file_ending", "regions_class_order")


@dataclass(frozen=True)
class UserBase:
    """The parts of a results folder a fine-tune search uses."""

    path: Path
    trainer: str
    plans_name: str
    configuration: str
    plans: dict
    dataset_json: dict
    checkpoints: dict[int, Path]  # fold -> checkpoint_final.pth
    unfinished: tuple[int, ...] = ()  # fold_K folders without checkpoint_final.pth
    debug: dict = field(default_factory=dict)  # fold_K/debug.json of the first fold (nnU-Net's trainer settings)

    @property
    def dataset_name(self) -> str:
        return self.plans.get("dataset_name", "?")

    def describe(self) -> str:
        return f"{self.trainer} / {self.plans_name} / {self.configuration} on {self.dataset_name}"


def open_base(path: str | Path) -> UserBase:
    """Read a results folder; one line naming what is missing when it is not one."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise AutolossError(f"--base {path}: no such folder (give nnU-Net's results folder of a trained model, "
                            "e.g. $nnUNet_results/Dataset103_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres)")
    parts = root.name.split("__")
    if len(parts) != 3:
        raise AutolossError(f"--base {root}: not an nnU-Net results folder (its name must be TRAINER__PLANS__CONFIG, "
                            "as nnUNetv2_train names it)")
    trainer, plans_name, configuration = parts
    for name in ("plans.json", "dataset.json"):
        if not (root / name).is_file():
            raise AutolossError(f"--base {root}: {name} is missing (nnUNetv2_train writes it when a training starts)")
    plans = json.loads((root / "plans.json").read_text())
    if plans.get("plans_name") != plans_name:
        raise AutolossError(f"--base {root}: its plans.json is named {plans.get('plans_name')!r}, the folder says "
                            f"{plans_name!r}")
    if configuration not in plans.get("configurations", {}):
        raise AutolossError(f"--base {root}: plans.json has no configuration {configuration!r}")
    folds, unfinished = {}, []
    for d in sorted(root.glob("fold_*")):
        suffix = d.name[len("fold_"):]
        if not (d.is_dir() and suffix.isdigit()):
            continue  # fold_all trains on every case: nothing is left to judge it on
        if (d / CHECKPOINT).is_file():
            folds[int(suffix)] = d / CHECKPOINT
        else:
            unfinished.append(int(suffix))
    if not folds:
        raise AutolossError(f"--base {root}: no fold_K/{CHECKPOINT} (folds without one: "
                            f"{', '.join(map(str, unfinished)) or 'none'}); finish a training with nnUNetv2_train first")
    first = root / f"fold_{min(folds)}" / "debug.json"
    debug = json.loads(first.read_text()) if first.is_file() else {}
    return UserBase(root, trainer, plans_name, configuration, plans, json.loads((root / "dataset.json").read_text()),
                    dict(sorted(folds.items())), tuple(unfinished), debug)


def check_base(base: UserBase, prepared: PreparedDataset, folds: list[int]) -> None:
    """The base fits the study on ``folds``: one line naming the first thing that differs."""
    where = f"--base {base.path}"
    if base.dataset_name != prepared.dataset_name:
        raise AutolossError(f"{where}: trained on {base.dataset_name}, but this search is on {prepared.dataset_name}")
    study_json = prepared.load_dataset_json()
    for key in DATASET_KEYS:
        if base.dataset_json.get(key) != study_json.get(key):
            raise AutolossError(f"{where}: its dataset.json {key} is {base.dataset_json.get(key)!r}, this dataset's "
                                f"is {study_json.get(key)!r}")
    if prepared.configuration != base.configuration:
        raise AutolossError(f"{where}: a {base.configuration} model, but this search trains {prepared.configuration}")
    diff = first_difference(prepared.load_plans(), base.plans)
    if diff:
        raise AutolossError(f"{where}: its plans.json differs from the study's plans ({prepared.plans_file}) at {diff}")
    missing = [f for f in folds if f not in base.checkpoints]
    if missing:
        have = ", ".join(map(str, base.checkpoints))
        raise AutolossError(f"{where}: fold(s) {', '.join(map(str, missing))} have no {CHECKPOINT} (folds with one: "
                            f"{have}); choose among those with --folds / --confirm-folds")
    for fold in folds:
        _check_fold(base, prepared, fold, where)


def _check_fold(base: UserBase, prepared: PreparedDataset, fold: int, where: str) -> None:
    init = read_checkpoint(base.checkpoints[fold]).get("init_args") or {}
    if init.get("configuration", base.configuration) != base.configuration or init.get("fold", fold) != fold:
        raise AutolossError(f"{where}: fold_{fold}/{CHECKPOINT} was trained as configuration "
                            f"{init.get('configuration')!r}, fold {init.get('fold')!r}")
    if isinstance(init.get("plans"), dict):
        diff = first_difference(init["plans"], base.plans)
        if diff:
            raise AutolossError(f"{where}: fold_{fold}/{CHECKPOINT} was trained with plans that differ from its "
                                f"plans.json at {diff}")
    validated = base_validation_cases(base, fold)
    _, study_val = prepared.split(fold)
    if validated is None:
        raise AutolossError(f"{where}: fold_{fold} has no validation/summary.json, so the cases it was not trained "
                            "on are unknown; run `nnUNetv2_train ... --val` for that fold first")
    if set(validated) != set(study_val):
        only_base = sorted(set(validated) - set(study_val))[:3]
        only_study = sorted(set(study_val) - set(validated))[:3]
        raise AutolossError(f"{where}: fold {fold} of the base was validated on other cases than this study's fold "
                            f"{fold} (base only: {', '.join(only_base) or '-'}; study only: "
                            f"{', '.join(only_study) or '-'}): the split differs (all cases, nnU-Net's split, no "
                            "--max-cases)")


def base_validation_cases(base: UserBase, fold: int) -> list[str] | None:
    """The cases nnU-Net validated fold ``fold`` of the base on (from ``validation/summary.json``)."""
    summary = base.path / f"fold_{fold}" / "validation" / "summary.json"
    if not summary.is_file():
        return None
    ending = base.dataset_json.get("file_ending", "")
    cases = []
    for entry in json.loads(summary.read_text()).get("metric_per_case", []):
        name = Path(entry.get("reference_file") or entry.get("prediction_file") or "").name
        cases.append(name[: -len(ending)] if ending and name.endswith(ending) else name)
    return cases


def seconds_per_iteration(base: UserBase) -> float | None:
    """How fast the base trained (its own log: epoch time / iterations per epoch), to price the continuations."""
    ckpt = read_checkpoint(next(iter(base.checkpoints.values())))
    log = ckpt.get("logging") or {}
    starts, ends = log.get("epoch_start_timestamps") or [], log.get("epoch_end_timestamps") or []
    iters = base.debug.get("num_iterations_per_epoch")
    if not starts or not ends or not str(iters or "").isdigit():
        return None
    durations = sorted(e - s for s, e in zip(starts, ends))
    return durations[len(durations) // 2] / int(iters)
