"""A probe corpus: tiny generated datasets and search work directories, each with ONE defect a user meets (a file
cut short, NaN voxels, a damaged journal, ...), and what a command must do with it (``test_probes.py``).

Every dataset probe starts from the same tiny synthetic dataset (5 cases, 32x32, made by autoloss.synthetic) and
breaks one thing; ``culprit`` is what the one error line must name (a file, a case or the dataset folder).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from autoloss.synthetic import make_synthetic_dataset, write_labels_dataset

NAME = "Dataset990_Synthetic"


@dataclass(frozen=True)
class Probe:
    make: Callable[[Path], tuple[Path, str]]  # folder -> (dataset, the name the error line must hold)
    commands: tuple[str, ...]  # which of verify / fingerprint / recommend / search must refuse it


def base(folder: Path, ending: str = ".nii.gz") -> Path:
    """The healthy dataset every probe breaks (5 cases, 32x32, two objects per case)."""
    return make_synthetic_dataset(folder, num_cases=5, shape=(32, 32), file_ending=ending, seed=3)


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def convert(root: Path, ending: str, compress: bool = True) -> Path:
    """Re-save every file of a .nii.gz dataset as ``ending`` (SimpleITK; PIL for .tif)."""
    import SimpleITK as sitk

    for f in sorted(root.glob("*/*.nii.gz")):
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
        target = f.with_name(f.name[: -len(".nii.gz")] + ending)
        if ending == ".tif":
            from PIL import Image

            arr = arr if "labelsTr" in f.parts else np.clip(arr * 40 + 60, 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(target)
        else:
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(target), compress)
        f.unlink()
    dj = json.loads((root / "dataset.json").read_text())
    dj["file_ending"] = ending
    (root / "dataset.json").write_text(json.dumps(dj))
    return root


def write_image(path: Path, arr: np.ndarray) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(arr.astype(np.float32)), str(path), True)


def _cut_file(ending: str, which: str, compress: bool = True, keep: float = 0.5):
    def make(folder: Path) -> tuple[Path, str]:
        if ending == ".nii":  # nnU-Net reads .nii with NibabelIO, which takes 3D images only
            root = make_synthetic_dataset(folder, dim=3, num_cases=5, shape=(16, 24, 24), seed=3)
            convert(root, ending, compress)
        elif ending in (".nii.gz", ".png") or (compress and ending in (".mha", ".nrrd")):
            root = base(folder, ending)
        else:
            root = convert(base(folder), ending, compress)
        f = root / ("labelsTr/case_001" if which == "label" else "imagesTr/case_002_0000")
        f = f.with_name(f.name + ending)
        cut(f, keep)
        return root, f.name
    return make


def _bad_voxels(ending: str, value: float):
    def make(folder: Path) -> tuple[Path, str]:
        root = base(folder, ending)
        import SimpleITK as sitk

        f = root / "imagesTr" / f"case_003_0000{ending}"
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
        arr[5:7, 5:9] = value
        write_image(f, arr)
        return root, f.name
    return make


def _random_png(folder: Path) -> tuple[Path, str]:
    root = base(folder, ".png")
    f = root / "imagesTr" / "case_001_0000.png"
    f.write_bytes(np.random.default_rng(0).bytes(3000))
    return root, f.name


def _all_background(folder: Path) -> tuple[Path, str]:
    import SimpleITK as sitk

    root = base(folder)
    for f in (root / "labelsTr").iterdir():
        img = sitk.ReadImage(str(f))
        blank = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(img)))
        blank.CopyInformation(img)
        sitk.WriteImage(blank, str(f), True)
    return root, str(root)


def _one_voxel(folder: Path) -> tuple[Path, str]:
    root = write_labels_dataset(folder, [np.ones((1, 1), np.uint8)] * 4, dataset_id=990, name="Synthetic")
    return root, str(root)


def _hippocampus_label_cut(folder: Path) -> tuple[Path, str]:
    from conftest import HIPPO, need_shared

    need_shared(HIPPO)
    root = folder / "Dataset103_Hippocampus"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    dj = json.loads((HIPPO / "dataset.json").read_text())
    ids = sorted(f.name[: -len(".nii.gz")] for f in (HIPPO / "labelsTr").glob("*.nii.gz"))[:3]
    for cid in ids:
        shutil.copy(HIPPO / "labelsTr" / f"{cid}.nii.gz", root / "labelsTr")
        shutil.copy(HIPPO / "imagesTr" / f"{cid}_0000.nii.gz", root / "imagesTr")
    (root / "dataset.json").write_text(json.dumps(dj | {"numTraining": 3}))
    label = root / "labelsTr" / f"{ids[1]}.nii.gz"
    cut(label)
    return root, label.name


ALL = ("verify", "fingerprint", "recommend", "search")
DECODED = ("verify", "search")  # found only by decoding every voxel: fingerprint reads image headers only

DATASET_PROBES: dict[str, Probe] = {
    # 1. SimpleITK zero-fills a .nii/.nii.gz cut short
    "nii.gz label cut short, header intact": Probe(_cut_file(".nii.gz", "label", keep=0.9), ALL),
    "nii.gz image cut in half": Probe(_cut_file(".nii.gz", "image"), ALL),
    "nii.gz image cut by 40 bytes": Probe(_cut_file(".nii.gz", "image", keep=0.98), ALL),
    "Hippocampus label cut in half": Probe(_hippocampus_label_cut, ALL),
    "uncompressed nii image cut short": Probe(_cut_file(".nii", "image", compress=False), ALL),
    "uncompressed mha image cut short": Probe(_cut_file(".mha", "image", compress=False), ALL),
    "compressed mha image cut short": Probe(_cut_file(".mha", "image"), ALL),
    "uncompressed nrrd image cut short": Probe(_cut_file(".nrrd", "image", compress=False), ALL),
    # 2. NaN / Inf voxels (SimpleITK reads them as 0 in NIfTI)
    "NaN in an mha image": Probe(_bad_voxels(".mha", np.nan), DECODED),
    "Inf in an mha image": Probe(_bad_voxels(".mha", np.inf), DECODED),
    "NaN in a nii.gz image": Probe(_bad_voxels(".nii.gz", np.nan), DECODED),
    "Inf in a nii.gz image": Probe(_bad_voxels(".nii.gz", -np.inf), DECODED),
    # 3. natural images cut short or not images at all
    "png image cut in half": Probe(_cut_file(".png", "image"), ALL),
    "png image of random bytes": Probe(_random_png, ALL),
    "tif image cut in half": Probe(_cut_file(".tif", "image"), DECODED),
    # 4. and 5. nothing to learn
    "every label background": Probe(_all_background, ALL),
    "1x1 images": Probe(_one_voxel, DECODED),
}


# ---------------------------------------------------------------- damaged work directories

def finished_work_dir(work: Path, dataset: Path) -> Path:
    """A finished search's work directory, written by the search's own code (study in a real Optuna journal,
    results.csv, verdict.json, best_loss.json, summary.txt, report.html) from recorded trainings: screening Dice+CE
    and DiceFocal, then both confirmed on folds 1 and 2 (12 paired cases each: the verdict is INCONCLUSIVE because
    the trainings learned nothing above 0.1)."""
    import optuna

    from autoloss.losses import baseline_spec
    from autoloss.reporting.html import write_report
    from autoloss.searching import records as rec
    from autoloss.searching import study as studies
    from autoloss.searching.results import save_results
    from autoloss.spec import LossSpec

    work.mkdir(parents=True)
    settings = {"dataset": dataset.name, "cases": [], "fidelity": {"configuration": "2d", "epochs": 2,
                "iterations_per_epoch": 4, "folds": [0]}, "objective": "dice", "losses": ["DiceCE", "DiceFocal"],
                "spaces": ["compound.yaml"]}
    storage = studies.make_storage(None, work)
    study = studies.open_study(storage, "probe", settings, 0, 2, 2, "none")
    rng = np.random.default_rng(0)
    specs = [baseline_spec(), LossSpec("DiceFocal", {})]

    def metrics(value):
        return {"1": {"dice": value, "nsd": value}, "mean": {"dice": value, "nsd": value}}

    for i, spec in enumerate(specs):
        study.add_trial(optuna.trial.create_trial(
            state=rec.COMPLETE, value=0.05 + 0.01 * i, user_attrs={rec.SPEC: spec.to_dict(), rec.SOURCE: "prior",
                                                                   rec.METRICS: metrics(0.05 + 0.01 * i)}))
    for spec in specs:
        for fold in (1, 2):
            per_case = {f"case_{fold}{k:02d}": {"1": {"dice": float(rng.uniform(0, 0.1)), "nsd": 0.0}}
                        for k in range(6)}
            study.add_trial(optuna.trial.create_trial(
                state=rec.COMPLETE, value=0.05, user_attrs={
                    rec.SPEC: spec.to_dict(), rec.SOURCE: "confirm", rec.PHASE: "confirm", rec.FOLD: fold,
                    rec.EPOCHS: 2, rec.METRICS: metrics(0.05), rec.PER_CASE: {str(fold): per_case}}))
    study.set_user_attr(rec.CONFIRM_PLAN, {"candidates": [specs[1].to_dict()], "baseline": specs[0].to_dict(),
                                           "folds": [1, 2], "epochs": 2})
    (work / "study.json").write_text(json.dumps({"study_name": "probe", "storage": None, "prepared": {},
                                                 "device": "cpu"}))
    save_results(study, work)
    write_report(work)
    return work


def _cut_journal_half(work: Path) -> None:
    cut(work / "study.journal")


def _cut_journal_lines(work: Path) -> None:
    journal = work / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[: len(lines) * 2 // 3]))  # at a line boundary: a shorter, valid journal


def _garbled_journal_line(work: Path) -> None:
    journal = work / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[len(lines) // 2] = b'{"op_code": 5, "trial_id"\n'
    journal.write_bytes(b"".join(lines))


WORK_DIR_PROBES: dict[str, Callable[[Path], None]] = {
    "journal cut in half": _cut_journal_half,
    "journal cut at a line boundary": _cut_journal_lines,
    "journal with a garbled line": _garbled_journal_line,
}


def snapshot(*roots: Path) -> dict[Path, str]:
    """Every file under ``roots`` -> the hash of its bytes (to prove nothing that existed was changed)."""
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for r in roots if r.exists()
            for f in sorted([r] if r.is_file() else r.rglob("*")) if f.is_file() and not f.is_symlink()}
