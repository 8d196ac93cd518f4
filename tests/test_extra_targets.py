"""Loader-made extra targets in real nnU-Net trainings: the transform sits before the deep-supervision
downsampling in the training and validation pipelines, the trainer hands the targets to the loss, and the
Skeleton Recall and blob losses train end to end (in a trial and through an exported trainer with
nnUNetv2_train -tr / nnUNetv2_predict -tr)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from autoloss.losses.targets import component_labels, tubed_skeleton
from autoloss.nnunet.extra_targets import AppendExtraTargetsTransform, ExtraTargetLoss
from autoloss.nnunet.run import Fidelity, trainer_class
from autoloss.spec import LossSpec
from conftest import HIPPO, TINY, hippo_trial_dataset

SCALES = [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]


def sample():
    seg = torch.zeros(1, 32, 32, dtype=torch.int16)
    seg[0, 10:14, 2:30] = 1
    seg[0, 20:26, 20:26] = 2
    seg[0, 2:4, 2:4] = 2
    return torch.randn(1, 32, 32), seg


@pytest.mark.parametrize("name,make", [("DiceCE+SkelRecall", tubed_skeleton), ("DiceCE+Blob", component_labels)])
def test_pipelines_append_the_target_before_deep_supervision_downsampling(name, make):
    cls = trainer_class(LossSpec(name))
    train = cls.get_training_transforms((32, 32), (-0.5, 0.5), SCALES, (0, 1), False)
    val = cls.get_validation_transforms(SCALES)
    for pipeline in (train, val):
        kinds = [type(t).__name__ for t in pipeline.transforms]
        assert kinds.index("AppendExtraTargetsTransform") == kinds.index("DownsampleSegForDSTransform") - 1
    for pipeline in (train, val):
        image, seg = sample()
        out = pipeline(image=image, segmentation=seg)["segmentation"]
        assert [tuple(s.shape) for s in out] == [(2, 32, 32), (2, 16, 16), (2, 8, 8)]
        label = out[0][0].numpy()
        assert np.array_equal(out[0][1].numpy(), make(label))  # made from the AUGMENTED label
        half = interpolate(out[0][None].float(), (16, 16), mode="nearest-exact")[0]
        assert torch.equal(out[1].float(), half)  # downsampled per scale exactly like the label
    base = trainer_class(LossSpec("DiceCE")).get_validation_transforms(SCALES)
    assert not any(isinstance(t, AppendExtraTargetsTransform) for t in base.transforms)


def test_a_step_without_loader_targets_is_an_error():
    loss = ExtraTargetLoss(torch.nn.Identity())
    with pytest.raises(RuntimeError, match="extra targets"):
        loss(torch.zeros(1), torch.zeros(1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["DiceCE+SkelRecall", "DiceCE+Blob", "DiceCE+clDice"])
def test_topology_and_instance_losses_train_in_a_trial(name, hippo_prepared, tmp_path):
    from autoloss.nnunet.run import run_trial

    result = run_trial(LossSpec(name), hippo_trial_dataset(hippo_prepared), Fidelity(**(TINY | {"epochs": 1})), tmp_path)
    assert result["epochs_run"] == 1
    curves = result["folds"][0]["curves"]
    assert all(np.isfinite(curves["train_losses"])) and all(np.isfinite(curves["val_losses"]))
    for metric in ("dice", "cldice", "betti0_error", "lesion_f1", "hd95"):
        assert metric in result["metrics"]["mean"], metric


def bin_of(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.mark.slow
def test_exported_skeleton_recall_trainer_runs_under_nnunetv2_train_and_predict(hippo_prepared, tmp_path):
    from autoloss.exporting import export_trainer

    trainers = tmp_path / "trainers"
    path = export_trainer(LossSpec("DiceCE+SkelRecall"), trainers, epochs=1, iterations_per_epoch=2)
    assert path.name == "nnUNetTrainer_autoloss_DiceCE_SkelRecall.py"
    env = dict(os.environ, nnUNet_raw=str(hippo_prepared / "nnunet" / "raw"),
               nnUNet_preprocessed=str(hippo_prepared / "nnunet" / "preprocessed"),
               nnUNet_results=str(tmp_path / "results"), nnUNet_extTrainer=str(trainers), nnUNet_n_proc_DA="1")
    train = subprocess.run([bin_of("nnUNetv2_train"), "103", "2d", "0", "-tr", path.stem, "-device", "cpu"],
                           env=env, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    fold = tmp_path / "results" / "Dataset103_Hippocampus" / f"{path.stem}__nnUNetPlans__2d" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == path.stem and ckpt["current_epoch"] == 1
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "train_loss" in log and "nan" not in log.split("train_loss")[-1].split("\n")[0]

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    case = sorted((HIPPO / "imagesTr").iterdir())[0]
    (inp / case.name).symlink_to(case)
    pred = subprocess.run([bin_of("nnUNetv2_predict"), "-i", str(inp), "-o", str(out), "-d", "103", "-c", "2d",
                           "-f", "0", "-tr", path.stem, "-device", "cpu", "--disable_tta"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert pred.returncode == 0, pred.stdout[-3000:] + pred.stderr[-3000:]
    assert list(out.glob("*.nii.gz"))
