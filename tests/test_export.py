"""`autoloss export`: the exported trainer runs under the real nnUNetv2_train / nnUNetv2_predict."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from autoloss.cli import main
from autoloss.errors import AutolossError
from autoloss.exporting import export_trainer, resolve_source
from autoloss.losses import build_loss
from autoloss.spec import LossSpec, Schedule
from conftest import HIPPO

SPEC = LossSpec("DiceHD", {"hd.weight": 0.5}, Schedule.ramp_in("hd", 0.2, 0.5))


def load_class(path: Path):
    mod_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return getattr(module, path.stem)


def bin_of(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.mark.slow
def test_exported_trainer_trains_and_predicts_with_nnunet(hippo_prepared, tmp_path):
    trainers = tmp_path / "trainers"
    path = export_trainer(SPEC, trainers, name="TestHD", epochs=3, iterations_per_epoch=3)
    assert path.name == "nnUNetTrainer_autoloss_TestHD.py"
    assert "from autoloss.nnunet.trainer import nnUNetTrainer_autoloss" in path.read_text()
    env = dict(os.environ, nnUNet_raw=str(hippo_prepared / "nnunet" / "raw"),
               nnUNet_preprocessed=str(hippo_prepared / "nnunet" / "preprocessed"),
               nnUNet_results=str(tmp_path / "results"), nnUNet_extTrainer=str(trainers), nnUNet_n_proc_DA="1")
    train = subprocess.run([bin_of("nnUNetv2_train"), "103", "2d", "0", "-tr", "nnUNetTrainer_autoloss_TestHD",
                            "-device", "cpu"], env=env, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    fold = tmp_path / "results" / "Dataset103_Hippocampus" / "nnUNetTrainer_autoloss_TestHD__nnUNetPlans__2d" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == "nnUNetTrainer_autoloss_TestHD"
    assert ckpt["current_epoch"] == 3

    # The schedule ran: hd weight 0 at epoch 0, then the ramp (fractions 1/3 and 2/3 of 3 epochs).
    log = next(fold.glob("training_log_*.txt")).read_text()
    weights = [line.split("autoloss term weights: ")[1].strip() for line in log.splitlines()
               if "autoloss term weights" in line]
    expected = [SPEC.schedule.weights_at(e, 3)["hd"] for e in range(3)]
    assert weights == [f"hd={w:.4g}" for w in expected] and expected[0] == 0.0 and expected[2] == 1.0

    # The loss inside the trainer is build_loss(spec) on the same inputs.
    cls = load_class(path)
    os.environ.update({k: env[k] for k in ("nnUNet_preprocessed", "nnUNet_results")})
    pre = hippo_prepared / "nnunet" / "preprocessed" / "Dataset103_Hippocampus"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    trainer = cls(plans, "2d", 0, json.loads((pre / "dataset.json").read_text()), torch.device("cpu"))
    trainer.initialize()
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 32, 24)
    target = torch.randint(0, 3, (2, 1, 32, 24)).float()
    reference = build_loss(SPEC, batch_dice=trainer.configuration_manager.batch_dice)
    for epoch in (0, 2):
        trainer.autoloss_loss.set_epoch(epoch, 3)
        reference.set_epoch(epoch, 3)
        assert torch.allclose(trainer.autoloss_loss(logits, target), reference(logits, target))

    # nnUNetv2_predict with the exported trainer produces segmentations.
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    case = sorted((HIPPO / "imagesTr").iterdir())[0]
    (inp / case.name).symlink_to(case)
    pred = subprocess.run([bin_of("nnUNetv2_predict"), "-i", str(inp), "-o", str(out), "-d", "103", "-c", "2d",
                           "-f", "0", "-tr", "nnUNetTrainer_autoloss_TestHD", "-device", "cpu", "--disable_tta"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert pred.returncode == 0, pred.stdout[-3000:] + pred.stderr[-3000:]
    assert list(out.glob("*.nii.gz"))


def test_overwrite_needs_force_and_same_spec_is_idempotent(tmp_path):
    first = export_trainer(SPEC, tmp_path, name="X")
    assert export_trainer(SPEC, tmp_path, name="X") == first
    other = LossSpec("DiceFocal", {"focal.gamma": 3.0})
    with pytest.raises(AutolossError, match="--force"):
        export_trainer(other, tmp_path, name="X")
    export_trainer(other, tmp_path, name="X", force=True)
    assert "DiceFocal" in first.read_text()


@pytest.mark.parametrize("name", ["1abc", "a-b", "with space", ""])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(AutolossError, match="identifier"):
        export_trainer(SPEC, tmp_path, name=name or "")


def test_unknown_loss_is_refused(tmp_path, capsys):
    assert main(["export", "NoSuchLoss", "-o", str(tmp_path)]) == 2
    assert "NoSuchLoss" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_study_without_completed_trial_is_refused(tmp_path):
    from autoloss.searching.study import make_storage

    optuna.create_study(study_name="empty", storage=make_storage(None, tmp_path))
    (tmp_path / "study.json").write_text(json.dumps({"study_name": "empty", "storage": None}))
    with pytest.raises(AutolossError, match="no completed trial"):
        resolve_source(str(tmp_path))


def test_cli_export_from_loss_name_prints_the_commands(tmp_path, capsys):
    assert main(["export", "DiceFocal", "--param", "focal.gamma=3", "-o", str(tmp_path), "--dataset", "103"]) == 0
    out = capsys.readouterr().out
    assert f"export nnUNet_extTrainer={tmp_path}" in out
    assert "nnUNetv2_train 103 CONFIG FOLD -tr nnUNetTrainer_autoloss_DiceFocal" in out
    cls = load_class(tmp_path / "nnUNetTrainer_autoloss_DiceFocal.py")
    assert LossSpec.from_dict(cls.LOSS_SPEC) == LossSpec("DiceFocal", {"focal.gamma": 3})


def test_site_packages_is_refused():
    import site

    with pytest.raises(AutolossError, match="site-packages"):
        export_trainer(SPEC, Path(site.getsitepackages()[0]) / "trainers")
