"""Synthetic datasets: the requested properties, determinism, and nnU-Net accepting them."""
from __future__ import annotations

import hashlib
import json
import os

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk

from autoloss.dataset import read_case, read_dataset
from autoloss.errors import AutolossError
from autoloss.synthetic import make_synthetic_dataset


def labels_of(root):
    ds = read_dataset(root)
    return ds, [read_case(c, ds)[0] for c in ds.cases]


@pytest.mark.parametrize("dim, shape", [(2, (64, 64)), (3, (32, 40, 40))])
def test_requested_ratio_objects_and_shape(tmp_path, dim, shape):
    root = make_synthetic_dataset(tmp_path, dim=dim, num_cases=5, shape=shape, num_classes=2,
                                  foreground_ratio=(0.08, 0.02), objects_per_case=(1, 3))
    ds, labels = labels_of(root)
    assert root.name == "Dataset990_Synthetic" and ds.id == 990 and len(ds.cases) == ds.num_training == 5
    assert ds.labels == {"background": 0, "class1": 1, "class2": 2}
    for arr in labels:
        assert arr.shape == shape
        assert (arr == 1).mean() == pytest.approx(0.08, rel=0.1)
        assert (arr == 2).mean() == pytest.approx(0.02, rel=0.2)
        conn = 26 if dim == 3 else 8
        assert cc3d.connected_components(arr == 1, connectivity=conn).max() == 1
        assert cc3d.connected_components(arr == 2, connectivity=conn).max() == 3


def test_images_hold_learnable_contrast(tmp_path):
    root = make_synthetic_dataset(tmp_path, dim=2, num_cases=2, num_classes=2, foreground_ratio=0.1)
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / "case_000_0000.nii.gz")))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / "case_000.nii.gz")))
    means = [img[label == k].mean() for k in range(3)]
    assert means[0] + 0.5 < means[1] < means[2] - 0.5  # class k sits about k units above the background
    assert img[label == 0].std() > 0.2  # noise: not trivially separable by a single threshold on a clean image


def test_spacing_object_size_and_absent_cases(tmp_path):
    root = make_synthetic_dataset(tmp_path, dim=3, num_cases=4, shape=(20, 32, 32), spacing=(2.5, 0.7, 0.7),
                                  object_size=150, objects_per_case=2, absent_fraction=0.5)
    img = sitk.ReadImage(str(root / "labelsTr" / "case_000.nii.gz"))
    assert img.GetSpacing() == pytest.approx((0.7, 0.7, 2.5))
    ds, labels = labels_of(root)
    present = [arr.any() for arr in labels]
    assert sum(present) == 2
    for arr in (a for a in labels if a.any()):
        sizes = np.bincount(cc3d.connected_components(arr).ravel())[1:]
        assert len(sizes) == 2 and all(abs(s - 150) <= 15 for s in sizes)


def test_deterministic_under_seed(tmp_path):
    def digest(seed, out):
        root = make_synthetic_dataset(tmp_path / out, dim=2, num_cases=3, seed=seed)
        arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
                  for p in sorted(root.glob("*Tr/*.nii.gz"))]
        return hashlib.sha1(b"".join(a.tobytes() for a in arrays)).hexdigest()

    assert digest(0, "a") == digest(0, "b")
    assert digest(0, "c") != digest(1, "d")


def test_png_and_regeneration(tmp_path):
    root = make_synthetic_dataset(tmp_path, dim=2, num_cases=2, file_ending=".png")
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["case_000_0000.png", "case_001_0000.png"]
    again = make_synthetic_dataset(tmp_path, dim=2, num_cases=3, file_ending=".png")  # replaces its own output
    assert again == root and len(list((root / "labelsTr").iterdir())) == 3
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 3


def test_errors(tmp_path):
    foreign = tmp_path / "Dataset990_Synthetic"
    foreign.mkdir()
    (foreign / "dataset.json").write_text("{}")
    with pytest.raises(AutolossError, match="not made by make_synthetic_dataset"):
        make_synthetic_dataset(tmp_path)
    with pytest.raises(AutolossError, match="could not place|does not fit"):
        make_synthetic_dataset(tmp_path / "x", shape=(16, 16), foreground_ratio=0.5, objects_per_case=3)
    with pytest.raises(AutolossError, match="file_ending"):
        make_synthetic_dataset(tmp_path / "y", dim=3, file_ending=".png")
    with pytest.raises(AutolossError, match="2 class"):
        make_synthetic_dataset(tmp_path / "z", num_classes=2, foreground_ratio=(0.1, 0.1, 0.1))


def test_nnunet_plans_and_preprocesses_it(tmp_path, monkeypatch):
    """nnU-Net's own integrity check, fingerprint, planner and 3d preprocessing accept an anisotropic dataset."""
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    root = make_synthetic_dataset(raw, dim=3, num_cases=3, shape=(16, 32, 32), spacing=(3.0, 1.0, 1.0),
                                  num_classes=2, dataset_id=987)
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(root), num_processes=1)
    extract_fingerprints([987], num_processes=1, check_dataset_integrity=False, clean=True, verbose=False)
    plan_experiments([987])
    plans = json.loads((pre / root.name / "nnUNetPlans.json").read_text())
    assert plans["original_median_spacing_after_transp"] == pytest.approx([3.0, 1.0, 1.0])
    preprocess([987], configurations=("3d_fullres",), num_processes=(1,), verbose=False)
    produced = os.listdir(pre / root.name / plans["configurations"]["3d_fullres"]["data_identifier"])
    assert sum(f.startswith("case_") for f in produced) >= 3
