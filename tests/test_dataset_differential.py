"""Differential test: autoloss's reader against nnU-Net's own ``verify_dataset_integrity`` on small generated
datasets, good and bad. Both must accept or both refuse, except where autoloss deviates on purpose (DEVIATIONS,
each with its reason).

nnU-Net's check runs in this process. It fans work out to process pools (a fork Pool(12) to list files, a spawn
pool for the checks); here those pools are replaced by an in-process pool running the very same functions one
after another, so the test needs no 12 processes and no spawned interpreters re-importing torch. Nothing in the
checks themselves is replaced. nnU-Net refuses by AssertionError, RuntimeError, FileNotFoundError or sys.exit;
all count as refusal.

Not covered: NaN image voxels. nnU-Net's check refuses them; autoloss reads image headers only (most of its
speed over nnU-Net's extractor) and leaves that to nnU-Net's own check before training (dataset.py says so).
ITK's NIfTI writer did not keep NaN values here, so the case could not be generated as a file anyway.
"""
from __future__ import annotations

import json
from itertools import starmap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from autoloss.dataset import read_case, read_dataset
from autoloss.errors import AutolossError

SHAPE = (24, 32)


class _SerialPool:
    """multiprocessing.Pool's starmap/map, run in this process."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap(self, fn, args):
        return list(starmap(fn, args))

    def map(self, fn, args):
        return list(map(fn, args))


class _SerialContext:
    Pool = _SerialPool


@pytest.fixture
def nnunet_verify(monkeypatch):
    import nnunetv2.experiment_planning.verify_dataset_integrity as vdi
    import nnunetv2.utilities.utils as utils

    monkeypatch.setattr(utils, "Pool", _SerialPool)
    monkeypatch.setattr(vdi.multiprocessing, "get_context", lambda method=None: _SerialContext())

    def verify(root: Path) -> bool:
        try:
            vdi.verify_dataset_integrity(str(root), num_processes=1)
        except (AssertionError, RuntimeError, FileNotFoundError, ValueError, SystemExit):
            return False
        return True
    return verify


def autoloss_accepts(root: Path) -> bool:
    """What `autoloss fingerprint` checks: the dataset, then every case (label values, channels, geometry)."""
    try:
        ds = read_dataset(root)
        for case in ds.cases:
            read_case(case, ds)
    except AutolossError:
        return False
    return True


# ---------------------------------------------------------------- dataset builders

def _label(i: int) -> np.ndarray:
    arr = np.zeros(SHAPE, np.uint8)
    arr[4 + i:10 + i, 5:12] = 1
    return arr


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)


def _grey(i: int) -> np.ndarray:
    return (_label(i) * 120 + 40 + i).astype(np.uint8)


def _rgb(i: int, bands: int = 3) -> np.ndarray:
    g = _grey(i)
    return np.stack([g, 255 - g, g // 2, np.full_like(g, 255)][:bands], -1)


def make(tmp_path: Path, variant: str, cases: int = 3) -> Path:
    root = tmp_path / f"Dataset900_{variant.replace('-', '')}"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    channels = {"0": "grey"}
    labels = {"background": 0, "object": 1}
    ending = ".nii.gz" if variant.startswith("nifti") else ".png"
    for i in range(cases):
        cid, img_dir = f"case_{i:03d}", root / "imagesTr"
        label = _label(i)
        if variant == "undeclared-label" and i == 1:
            label[0, 0] = 5
        if ending == ".nii.gz":
            if variant == "nifti-non-integer-label" and i == 0:
                label = label.astype(np.float32) * 0.5
            if variant in ("nifti-4d-two-channels", "nifti-4d-declared-one"):  # one 4D file, channels first
                arr = np.stack([np.stack([_grey(i)] * 4)] * 2).astype(np.float32)
                img = sitk.GetImageFromArray(arr, isVector=False)
                img.SetSpacing((0.8, 0.8, 2.0, 1.0))
                sitk.WriteImage(img, str(img_dir / f"{cid}_0000{ending}"))
            for c in range(2 if variant == "nifti-two-channels" else 0 if "4d" in variant else 1):
                img = sitk.GetImageFromArray(np.stack([_grey(i)] * 4).astype(np.float32))
                img.SetSpacing((0.8, 0.8, 2.0))
                sitk.WriteImage(img, str(img_dir / f"{cid}_{c:04d}{ending}"))
            lab = sitk.GetImageFromArray(np.stack([label] * 4))
            lab.SetSpacing((0.8, 0.8, 2.5) if variant == "nifti-spacing-mismatch" and i == 2 else (0.8, 0.8, 2.0))
            sitk.WriteImage(lab, str(root / "labelsTr" / f"{cid}{ending}"))
            continue
        if variant in ("rgb-one-file", "rgb-declared-one", "rgba-one-file"):
            _png(img_dir / f"{cid}_0000.png", _rgb(i, 4 if variant == "rgba-one-file" else 3))
        elif variant in ("rgb-split", "rgb-gap-in-names"):
            for c, name in enumerate((0, 2, 5) if variant == "rgb-gap-in-names" else (0, 1, 2)):
                _png(img_dir / f"{cid}_{name:04d}.png", _rgb(i)[..., c])
        elif variant == "rgb-plus-grey":
            _png(img_dir / f"{cid}_0000.png", _rgb(i))
            _png(img_dir / f"{cid}_0001.png", _grey(i))
        elif variant == "grey-alpha":
            _png(img_dir / f"{cid}_0000.png", _rgb(i, 4)[..., [0, 3]], "LA")
        elif variant == "shape-mismatch" and i == 1:
            _png(img_dir / f"{cid}_0000.png", np.zeros((SHAPE[0], SHAPE[1] + 2), np.uint8))
        else:
            _png(img_dir / f"{cid}_0000.png", _grey(i))
        if variant == "rgb-label":
            _png(root / "labelsTr" / f"{cid}.png", np.stack([label] * 3, -1))
        elif not (variant == "image-without-label" and i == 2):
            _png(root / "labelsTr" / f"{cid}.png", label)
        if variant == "label-without-image" and i == 2:
            (img_dir / f"{cid}_0000.png").unlink()
    if variant in ("rgb-one-file", "rgb-split", "rgb-gap-in-names", "grey-declared-three"):
        channels = {"0": "R", "1": "G", "2": "B"}
    elif variant == "rgba-one-file":
        channels = {"0": "R", "1": "G", "2": "B", "3": "A"}
    elif variant in ("rgb-plus-grey", "nifti-two-channels", "nifti-4d-two-channels", "nifti-4d-declared-one"):
        channels = {str(c): f"c{c}" for c in range(4 if variant == "rgb-plus-grey" else
                                                   1 if variant == "nifti-4d-declared-one" else 2)}
    elif variant == "grey-alpha":
        channels = {"0": "grey", "1": "alpha"}
    if variant == "labels-not-consecutive":
        labels = {"background": 0, "object": 1, "other": 3}
    num_training = cases + 1 if variant == "num-training-wrong" else cases - 1 if variant == "label-without-image" \
        else cases
    dj = {"channel_names": channels, "labels": labels, "numTraining": num_training, "file_ending": ending}
    if variant == "dataset-key":  # explicit file lists instead of the imagesTr/labelsTr convention
        dj["dataset"] = {f"case_{i:03d}": {"images": [f"imagesTr/case_{i:03d}_0000.png"],
                                           "label": f"labelsTr/case_{i:03d}.png"} for i in range(cases)}
    (root / "dataset.json").write_text(json.dumps(dj))
    return root


GOOD = ["grey", "dataset-key", "rgb-one-file", "rgba-one-file", "rgb-split", "rgb-gap-in-names", "nifti",
        "nifti-two-channels"]
BAD = ["grey-declared-three", "rgb-declared-one", "rgb-plus-grey", "grey-alpha", "shape-mismatch",
       "undeclared-label", "labels-not-consecutive", "image-without-label", "nifti-spacing-mismatch",
       "nifti-4d-declared-one", "nifti-non-integer-label",
       # nnU-Net's SimpleITKIO reads a 4D file as channels, but its integrity check compares the 4D image's origin
       # with the 3D label's and fails on every such file, so a 4D multi-channel dataset never passes it.
       "nifti-4d-two-channels"]
# Where autoloss decides differently on purpose: variant -> (autoloss accepts, nnU-Net accepts, why).
DEVIATIONS = {
    "rgb-label": (False, True, "nnU-Net's check reads an RGB label as 3 label channels and only checks their "
                  "values; training then uses one channel. A colour label file is almost always an export "
                  "mistake, so autoloss refuses it with a one-line reason instead of fingerprinting channel 0."),
    "num-training-wrong": (True, False, "nnU-Net's check asserts numTraining == cases found; its own fingerprint "
                           "and planning use the cases on disk, and --max-cases subsets are deliberate, so "
                           "autoloss warns (Dataset.warnings) and goes on."),
    "label-without-image": (False, True, "nnU-Net finds cases from imagesTr and silently drops a label whose "
                            "images are missing; autoloss finds cases from labelsTr and names the missing image, "
                            "since an annotated case left out of training is almost always a mistake."),
}


@pytest.mark.parametrize("variant", GOOD + BAD + sorted(DEVIATIONS))
def test_autoloss_and_nnunet_agree(tmp_path, nnunet_verify, variant):
    root = make(tmp_path, variant)
    ours, theirs = autoloss_accepts(root), nnunet_verify(root)
    if variant in DEVIATIONS:
        expected_ours, expected_theirs, _why = DEVIATIONS[variant]
        assert (ours, theirs) == (expected_ours, expected_theirs)
        return
    assert ours == theirs, f"{variant}: autoloss {'accepts' if ours else 'refuses'}, nnU-Net " \
                           f"{'accepts' if theirs else 'refuses'}"
    assert ours == (variant in GOOD)
