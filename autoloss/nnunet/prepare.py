"""Plan and preprocess once per study, with nnU-Net's own planner and preprocessor, and write a split that works.

Two layouts:
- the user's: DATASET already lives in ``$nnUNet_raw`` and all cases are used -> plans and preprocessed data go to
  (and are reused from) the user's ``$nnUNet_preprocessed``, exactly where ``nnUNetv2_plan_and_preprocess`` puts
  them;
- the study's: a dataset outside ``$nnUNet_raw``, or a ``--max-cases`` subset -> the cases are linked into
  ``WORK/nnunet/raw`` and preprocessed into ``WORK/nnunet/preprocessed``, so a subset never overwrites the user's
  preprocessed data.
Every trial and every resumed run reuses what is there; a marker file records a finished preprocessing.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from autoloss.errors import AutolossError

MARKER = ".autoloss_preprocessed_{configuration}.json"
PLANS = "nnUNetPlans"


@dataclass(frozen=True)
class PreparedDataset:
    """Where a study's preprocessed data lives; everything a trial needs to build its trainer."""

    dataset_id: int
    dataset_name: str
    raw_dir: Path
    preprocessed_dir: Path
    configuration: str
    plans_identifier: str
    case_ids: tuple[str, ...]

    @property
    def plans_file(self) -> Path:
        return self.preprocessed_dir / f"{self.plans_identifier}.json"

    def load_plans(self) -> dict:
        return json.loads(self.plans_file.read_text())

    def load_dataset_json(self) -> dict:
        return json.loads((self.preprocessed_dir / "dataset.json").read_text())

    def num_folds(self) -> int:
        return len(json.loads((self.preprocessed_dir / "splits_final.json").read_text()))

    def split(self, fold: int) -> tuple[list[str], list[str]]:
        splits = json.loads((self.preprocessed_dir / "splits_final.json").read_text())
        if fold >= len(splits):
            raise AutolossError(f"fold {fold} does not exist: {self.preprocessed_dir / 'splits_final.json'} "
                                f"has {len(splits)} folds (use --folds 0..{len(splits) - 1})")
        return list(splits[fold]["train"]), list(splits[fold]["val"])

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()} | {
            "case_ids": list(self.case_ids)}


def _link_subset(dataset, raw_root: Path, case_ids: list[str]) -> Path:
    """Link the chosen cases into ``raw_root/DatasetXXX_Name`` (files, not copies)."""
    target = raw_root / dataset.root.name
    if target.exists():
        existing = json.loads((target / "dataset.json").read_text()) if (target / "dataset.json").exists() else {}
        if existing.get("autoloss_cases") == case_ids:
            return target
        shutil.rmtree(target)  # a stale link farm from another subset of this study's own making
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    by_id = {c.identifier: c for c in dataset.cases}
    for cid in case_ids:
        case = by_id[cid]
        os.symlink(case.label.resolve(), target / "labelsTr" / case.label.name)
        for img in case.images:
            os.symlink(img.resolve(), target / "imagesTr" / img.name)
    dj = dict(dataset.dataset_json)
    dj["numTraining"] = len(case_ids)
    dj["autoloss_cases"] = case_ids
    dj.pop("dataFile", None)
    (target / "dataset.json").write_text(json.dumps(dj, indent=2))
    return target


def _write_split(preprocessed: Path, case_ids: list[str]) -> None:
    """nnU-Net's own 5-fold split when there are >= 5 cases; leave-one-out below that (nnU-Net's KFold raises)."""
    path = preprocessed / "splits_final.json"
    if path.exists():
        return
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    if len(case_ids) < 2:
        raise AutolossError(f"{len(case_ids)} case(s) cannot be split into training and validation: "
                            "a search needs at least 2 cases (raise --max-cases or add cases)")
    splits = generate_crossval_split(sorted(case_ids), seed=12345, n_splits=min(5, len(case_ids)))
    path.write_text(json.dumps(splits, indent=2))


def prepare(dataset, configuration: str, work_dir: Path, *, max_cases: int | None = None,
            num_processes: int = 2, log=print, plans: dict | None = None) -> PreparedDataset:
    """Plan and preprocess ``dataset`` (an ``autoloss.dataset.Dataset``) for ``configuration`` unless done.
    ``plans``: use these nnU-Net plans (a fine-tune base's) instead of planning; they are written under their own
    ``plans_name`` (an existing different file of that name is refused, never overwritten)."""
    if dataset.id is None:
        raise AutolossError(f"{dataset.root}: nnU-Net needs the folder named DatasetXXX_Name (XXX a 3-digit id); "
                            "rename it or copy it under such a name")
    dataset_name = dataset.root.name
    case_ids = sorted(c.identifier for c in dataset.cases)
    raw_root, pre_root, users = _roots(dataset, work_dir, max_cases)
    if not users:
        raw_root.mkdir(parents=True, exist_ok=True)
        pre_root.mkdir(parents=True, exist_ok=True)
        _link_subset(dataset, raw_root, case_ids)
    os.environ["nnUNet_raw"], os.environ["nnUNet_preprocessed"] = str(raw_root), str(pre_root)

    preprocessed = pre_root / dataset_name
    plans_name = plans["plans_name"] if plans else PLANS
    if plans:
        from autoloss.nnunet.adopted_plans import adopt_plans

        adopt_plans(preprocessed, plans)
    marker = preprocessed / MARKER.format(configuration=configuration if plans_name == PLANS
                                          else f"{plans_name}_{configuration}")
    if not marker.exists() and _already_preprocessed(preprocessed, configuration, case_ids, plans_name):
        marker.write_text(json.dumps({"case_ids": case_ids}))  # done earlier by nnUNetv2_plan_and_preprocess
    if not marker.exists() or json.loads(marker.read_text()).get("case_ids") != case_ids:
        _plan_and_preprocess(dataset.id, dataset_name, preprocessed, configuration, num_processes, log, plans_name)
        marker.write_text(json.dumps({"case_ids": case_ids}))
    else:
        log(f"reusing nnU-Net preprocessing in {preprocessed}")
    _write_split(preprocessed, case_ids)
    return PreparedDataset(dataset.id, dataset_name, raw_root / dataset_name, preprocessed, configuration,
                           plans_name, tuple(case_ids))


def _roots(dataset, work_dir: Path, max_cases: int | None) -> tuple[Path, Path, bool]:
    """(nnUNet_raw, nnUNet_preprocessed, whether they are the user's) for a study of ``dataset``."""
    user_raw = os.environ.get("nnUNet_raw")
    if user_raw and max_cases is None and dataset.root.resolve().parent == Path(user_raw).resolve():
        return Path(user_raw), Path(os.environ["nnUNet_preprocessed"]), True
    return work_dir / "nnunet" / "raw", work_dir / "nnunet" / "preprocessed", False


def fold_count(dataset, work_dir: Path, max_cases: int | None = None) -> int:
    """Folds of the split a study of ``dataset`` will use, known before planning: an existing splits_final.json,
    else what ``_write_split`` writes (nnU-Net's 5 folds, or one per case below 5 cases)."""
    splits = _roots(dataset, Path(work_dir), max_cases)[1] / dataset.root.name / "splits_final.json"
    if splits.is_file():
        try:
            return len(json.loads(splits.read_text()))
        except ValueError:
            pass
    return min(5, len(dataset.cases))


def _already_preprocessed(preprocessed: Path, configuration: str, case_ids: list[str],
                          plans_name: str = PLANS) -> bool:
    """True when nnU-Net's own plan-and-preprocess already produced every case for ``configuration``."""
    plans_file = preprocessed / f"{plans_name}.json"
    if not plans_file.exists():
        return False
    config = json.loads(plans_file.read_text())["configurations"].get(configuration)
    if config is None or "data_identifier" not in config:
        return False
    folder = preprocessed / config["data_identifier"]
    if not folder.is_dir():
        return False
    stems = {p.name.split(".")[0] for p in folder.iterdir()}
    return all(cid in stems for cid in case_ids)


def _plan_and_preprocess(dataset_id: int, dataset_name: str, preprocessed: Path, configuration: str,
                         num_processes: int, log, plans_name: str = PLANS) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)

    from autoloss.nnunet.env import overridden

    plans_file = preprocessed / f"{plans_name}.json"
    if not plans_file.exists() or not (preprocessed / "dataset_fingerprint.json").exists():
        # a training copies the fingerprint beside its checkpoints, so adopted plans need it too
        log(f"nnU-Net: extracting its fingerprint and planning {dataset_name} ...")
        extract_fingerprints([dataset_id], num_processes=num_processes, clean=True, verbose=False,
                             show_progress_bar=False)
    if not plans_file.exists():
        # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for the valid value 0
        with overridden(nnUNet_n_proc_DA=str(max(1, int(os.environ.get("nnUNet_n_proc_DA", "1") or 1)))):
            plan_experiments([dataset_id])
    elif not (preprocessed / "dataset.json").exists():  # adopted plans: the planner that copies it did not run
        shutil.copy(Path(os.environ["nnUNet_raw"]) / dataset_name / "dataset.json", preprocessed / "dataset.json")
    configs = json.loads(plans_file.read_text())["configurations"]
    if configuration not in configs:
        raise AutolossError(f"nnU-Net planned no {configuration!r} configuration for {dataset_name} "
                            f"(available: {', '.join(configs)}); pick one with --config")
    log(f"nnU-Net: preprocessing {dataset_name} for {configuration} ...")
    preprocess([dataset_id], plans_identifier=plans_name, configurations=(configuration,),
               num_processes=(num_processes,), show_progress_bar=False)
