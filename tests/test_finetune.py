"""Fine-tune fidelity (`autoloss search --from-base` / `--base PATH`) with real nnU-Net trainings on a generated
dataset whose Dice+CE base learns in a few dozen iterations (one large blob per 40x40 image)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch

from autoloss.cli import main
from autoloss.errors import AutolossError
from autoloss.exporting import export_trainer
from autoloss.knowledge.store import KnowledgeStore
from autoloss.losses import baseline_spec
from autoloss.nnunet import env
from autoloss.nnunet.finetune import Continuation, continuation_lr
from autoloss.nnunet.run import Fidelity, _stop_dataloaders, trainer_class
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.base import FinetuneSettings, bases
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.runner import SearchConfig, run_search
from autoloss.spec import LossSpec
from conftest import HIPPO, MAX_CASES, TINY
from test_export import bin_of, load_class

pytestmark = pytest.mark.slow
BLOB = dict(num_cases=10, shape=(40, 40), num_classes=1, foreground_ratio=0.25, objects_per_case=1, seed=0,
            dataset_id=992, name="BigBlob")
NAME = "Dataset992_BigBlob"
STUDY = f"autoloss_{NAME}_2d"
ITER = ["--config", "2d", "--iterations-per-epoch", "6", "--val-iterations", "1", "--device", "cpu",
        "--pruner", "none", "--prior-top", "2"]
BASE_EPOCHS = 6


@pytest.fixture(scope="session")
def blob(tmp_path_factory):
    """(dataset folder, work directory holding its nnU-Net 2d preprocessing, the PreparedDataset)."""
    from autoloss.dataset import read_dataset
    from autoloss.nnunet.prepare import prepare
    from autoloss.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("blob")
    dataset = make_synthetic_dataset(root / "data", **BLOB)
    work = root / "work"
    snapshot = dict(os.environ)
    try:
        env.configure(work, processes=2)
        prepared = prepare(read_dataset(dataset), "2d", work, num_processes=2, log=lambda s: None)
    finally:
        os.environ.clear()
        os.environ.update(snapshot)
    return dataset, work, prepared


@pytest.fixture
def blob_work(blob, tmp_path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(blob[1] / "nnunet", work / "nnunet", symlinks=True)
    return work


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv, ignore: str | None = None) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    if ignore:  # a notice of a library's own (Ray's, once per cluster start), not autoloss's
        err = "".join(line for line in err.splitlines(keepends=True) if ignore not in line)
    assert err.count("\n") == 1 and err.startswith("autoloss: error: "), err
    return err


def test_the_search_and_an_exported_trainer_load_the_base_alike(blob, tmp_path):
    _, _, prepared = blob
    fid = Fidelity(**(TINY | {"iterations_per_epoch": 6}))
    base_dir = tmp_path / "base"
    with env.overridden(nnUNet_results=str(tmp_path / "results"),
                        nnUNet_preprocessed=str(prepared.preprocessed_dir.parent)):
        def trainer(cls, seed: int):
            plans = prepared.load_plans()
            plans["continue_training"] = False
            torch.manual_seed(seed)
            return cls(plans, "2d", 0, prepared.load_dataset_json(), torch.device("cpu"))

        def checkpoint(seed: int, name: str) -> Path:  # a base: a network initialised from another seed, saved
            t = trainer(trainer_class(baseline_spec(), fid), seed)
            t.initialize()
            path = base_dir / "fold_0" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            t.save_checkpoint(str(path))
            return path

        def weights_after_start(t, pretrained: Path | None = None) -> dict:
            from nnunetv2.run.run_training import maybe_load_checkpoint

            if pretrained is not None:  # what `nnUNetv2_train ... -pretrained_weights FILE` does before training
                maybe_load_checkpoint(t, False, False, str(pretrained))
            try:
                t.on_train_start()
            finally:
                _stop_dataloaders(t)
            return {k: v.clone() for k, v in t.network.state_dict().items()}

        ckpt = checkpoint(123, "checkpoint_final.pth")
        other = checkpoint(456, "other.pth")
        base = torch.load(ckpt, map_location="cpu", weights_only=False)["network_weights"]
        spec = LossSpec("DiceTopK", {"topk.k": 90.0})
        lr = continuation_lr(BASE_EPOCHS, 2)
        searched = trainer(trainer_class(spec, fid, continuation=Continuation(str(base_dir), lr)), 0)
        in_search = weights_after_start(searched)

        recipe = {"epochs": 2, "iterations_per_epoch": 6, "initial_lr": lr, "lr_recipe": "nnunet-tail",
                  "base_folder": str(base_dir), "base_source": "user", "base_epochs": BASE_EPOCHS,
                  "configuration": "2d", "folds": [0], "dataset": NAME}
        path = export_trainer(spec, tmp_path / "trainers", name="FT", finetune=recipe)
        exported = load_class(path)
        after_export = weights_after_start(trainer(exported, 0), pretrained=ckpt)
        # nnU-Net's loader alone: every weight but the output heads
        nnunet_only = weights_after_start(trainer(trainer_class(spec, fid), 0), pretrained=ckpt)
        with pytest.raises(RuntimeError, match="not the base"):
            weights_after_start(trainer(exported, 0), pretrained=other)
        approx = trainer(load_class_named(path, f"{path.stem}_fromscratch"), 0)
        approx.initialize()
        losses = []
        for epoch in (0, approx.warmup_epochs - 1, approx.warmup_epochs, approx.num_epochs - 1):
            approx.current_epoch = epoch
            approx.on_train_epoch_start()
            losses.append(approx.loss is approx.main_loss)

    assert set(in_search) == set(after_export) == set(base)
    assert all(torch.equal(in_search[k], after_export[k]) and torch.equal(in_search[k], base[k]) for k in base)
    heads = [k for k in base if ".seg_layers." in k]
    assert heads and all(torch.equal(nnunet_only[k], base[k]) for k in base if k not in heads)
    assert not any(torch.equal(nnunet_only[k], base[k]) for k in heads if k.endswith("weight"))
    assert searched.initial_lr == exported.INITIAL_LR == pytest.approx(0.01 * (2 / 8) ** 0.9)
    assert exported.NUM_EPOCHS == 2 and exported.NUM_ITERATIONS_PER_EPOCH == 6
    # the from-scratch approximation: Dice+CE until epoch 1000 - 2, then the loss
    assert (approx.num_epochs, approx.warmup_epochs) == (1000, 998) and losses == [False, False, True, True]


def load_class_named(path: Path, name: str):
    import importlib.util

    mod_spec = importlib.util.spec_from_file_location(path.stem + "_approx", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return getattr(module, name)


def test_killed_base_and_continuation_resume_and_the_verdict_reads_the_control(blob, blob_work):
    cmd = [sys.executable, "-m", "autoloss", "search", str(blob[0]), "--from-base", "--budget", "2",
           "--finetune-epochs", "2", "--base-epochs", str(BASE_EPOCHS), "--confirm-top", "1", "--confirm-folds", "1",
           "--work-dir", str(blob_work)] + ITER

    def run_until(ready) -> None:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before the point to kill it at"
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9, the data-loading workers with it
        proc.wait()

    fold0 = lambda: next(blob_work.glob("bases/*/*/*/fold_0"), None)  # noqa: E731
    run_until(lambda: fold0() is not None and (fold0() / "checkpoint_latest.pth").exists())
    assert not (fold0() / "checkpoint_final.pth").exists()  # killed during the base training
    killed_at = torch.load(fold0() / "checkpoint_latest.pth", weights_only=False)["current_epoch"]
    assert 1 <= killed_at < BASE_EPOCHS

    run_until(lambda: (blob_work / "trials" / "trial_0001").exists())  # trial 0 done, trial 1 running
    final0 = fold0() / "checkpoint_final.pth"
    stamp = (final0.stat().st_mtime_ns, hashlib.sha256(final0.read_bytes()).hexdigest())

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (final0.stat().st_mtime_ns, hashlib.sha256(final0.read_bytes()).hexdigest()) == stamp
    study = optuna.load_study(study_name=STUDY, storage=studies.make_storage(None, blob_work))
    found = bases(study)
    assert sorted(found) == [0, 1] and found[0]["resumed_from"] >= killed_at and not found[1]["resumed_from"]
    assert all(r["metrics"]["mean"]["dice"] > 0.5 and r["epochs"] == BASE_EPOCHS for r in found.values())
    screened = [rec.spec_of(t).key() for t in studies.counted(study) if t.state == rec.COMPLETE]
    assert len(screened) == len(set(screened)) == 2  # the finished trial 0 was not run again
    assert baseline_spec().key() in screened  # the control on the screening fold: Dice+CE continued, prior first
    # the control arm: Dice+CE continued on the confirmation fold, with the candidate's seed
    confirmed = rec.confirmation_trials(study)
    assert Counter((rec.is_baseline(rec.spec_of(t)), t.user_attrs[rec.FOLD]) for t in confirmed) == {
        (True, 1): 2, (False, 1): 1}  # the control continued twice: the candidate's seed, and the next
    seeds = {json.loads(p.read_text())["seed"] for p in blob_work.glob("trials/confirm_*_fold1/result.json")
             if "_seed1_" not in p.parent.name}
    assert len(seeds) == 1
    verdict = json.loads((blob_work / "verdict.json").read_text())["verdict"]
    assert verdict["compared_with"].startswith("the control (Dice+CE continued 2 epochs from the same base")
    summary = (blob_work / "summary.txt").read_text()
    assert "vs the control" in summary and "Dice+CE base(s) of 6 epochs" in summary
    report = (blob_work / "report.html").read_text()
    assert "fine-tuned 2 epochs from its Dice+CE base of 6 epochs" in report and "Dice+CE base (6 epochs)" in report
    import pandas as pd

    df = pd.read_csv(blob_work / "results.csv")
    assert list(df["phase"][:2]) == ["base", "base"] and set(df["fidelity"]) == {"finetune"}
    assert df.loc[df["phase"] == "confirm", "base_dice"].notna().all()
    record = KnowledgeStore().user_records()[0]
    mode = record["settings"]["fidelity_mode"]
    assert mode["mode"] == "finetune" and mode["base"]["epochs"] == BASE_EPOCHS and "folder" not in mode["base"]
    assert set(mode["base"]["validation_dice"]) == {"0", "1"} and str(blob_work) not in json.dumps(record)

    # a second study on the work directory finds both bases ready: nothing is trained again (a 1 ms timeout: it
    # makes its bases ready, then starts no continuation)
    logs: list[str] = []
    cfg = SearchConfig(dataset=str(blob[0]), budget=1, work_dir=blob_work, device="cpu", pruner="none", seed=0,
                       prior_top=1, study_name="second", timeout=1e-3, fidelity=Fidelity(**(TINY | {
                           "iterations_per_epoch": 6, "folds": (0, 1)})), confirm=ConfirmSettings(enabled=False),
                       finetune=FinetuneSettings(enabled=True, base_epochs=BASE_EPOCHS))
    second = run_search(cfg, log=logs.append)
    assert not any("training the Dice+CE base" in line for line in logs), logs
    assert {f: r["sha256"] for f, r in bases(second).items()} == {f: r["sha256"] for f, r in found.items()}
    assert (final0.stat().st_mtime_ns, hashlib.sha256(final0.read_bytes()).hexdigest()) == stamp
    assert len(list(blob_work.glob("bases/*/*/*/fold_*/training_log_*.txt"))) == 3  # fold 0 twice (killed), 1 once
    with pytest.raises(AutolossError, match="fidelity_mode"):  # the LR recipe is part of the study's identity
        run_search(cfg.__class__(**(cfg.__dict__ | {"finetune": FinetuneSettings(True, None, BASE_EPOCHS, 1e-3)})),
                   log=lambda s: None)


def test_a_base_that_learned_nothing_is_refused_in_one_line(search_work_dir, capsys):
    # the base trains as a Ray task (--workers 2), like every training of a search
    err = one_line_error(capsys, ignore="Token authentication", argv=[
        "search", str(HIPPO), "--from-base", "--base-epochs", "1", "--finetune-epochs", "1", "--budget", "1",
        "--config", "2d", "--iterations-per-epoch", "1", "--val-iterations", "1", "--device", "cpu",
        "--max-cases", str(MAX_CASES), "--no-confirm", "--workers", "2", "--work-dir", str(search_work_dir)])
    assert "learned nothing" in err and "--base-epochs" in err
    record = json.loads(next(search_work_dir.glob("bases/*/*/*/fold_0/autoloss_base.json")).read_text())
    assert record["epochs"] == 1 and record["metrics"]["mean"]["dice"] < 0.1


def test_a_users_base_from_nnunetv2_train_is_only_read_and_its_export_fine_tunes(blob, blob_work, tmp_path,
                                                                                  capsys):
    dataset = blob[0]
    trainers = tmp_path / "trainers"
    trainers.mkdir()
    (trainers / "nnUNetTrainer_autoloss_TinyBase.py").write_text(  # Dice+CE at a tiny fidelity, as a user might
        "from autoloss.nnunet.trainer import nnUNetTrainer_autoloss\n\n\n"
        "class nnUNetTrainer_autoloss_TinyBase(nnUNetTrainer_autoloss):\n"
        f"    LOSS_SPEC = {baseline_spec().to_dict()!r}\n    NUM_EPOCHS = {BASE_EPOCHS}\n"
        "    NUM_ITERATIONS_PER_EPOCH = 6\n    NUM_VAL_ITERATIONS_PER_EPOCH = 1\n")
    nnenv = dict(os.environ, nnUNet_raw=str(blob_work / "nnunet" / "raw"),
                 nnUNet_preprocessed=str(blob_work / "nnunet" / "preprocessed"),
                 nnUNet_results=str(tmp_path / "results"), nnUNet_extTrainer=str(trainers), nnUNet_n_proc_DA="1",
                 nnUNet_def_n_proc="1")  # one validation worker: each one imports torch and nnU-Net again
    train = subprocess.run([bin_of("nnUNetv2_train"), "992", "2d", "0", "-tr", "nnUNetTrainer_autoloss_TinyBase",
                            "-device", "cpu"], env=nnenv, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    base = tmp_path / "results" / NAME / "nnUNetTrainer_autoloss_TinyBase__nnUNetPlans__2d"
    (base / "fold_1").mkdir()  # a fold whose training never finished
    before = tree_digest(base)
    search = ["search", str(dataset), "--base", str(base), "--budget", "2", "--finetune-epochs", "2",
              "--work-dir", str(blob_work)] + ITER[2:]

    # what differs is named in one line, exit 2
    assert "is a 2d model" in one_line_error(capsys, search + ["--config", "3d_fullres", "--no-confirm"])
    assert "fold(s) 1 have no checkpoint_final.pth" in one_line_error(capsys, search + ["--folds", "1",
                                                                                          "--no-confirm"])
    edited = tmp_path / "edited" / base.name
    shutil.copytree(base, edited)
    plans = json.loads((edited / "plans.json").read_text())
    plans["configurations"]["2d"]["patch_size"] = [32, 32]
    (edited / "plans.json").write_text(json.dumps(plans))
    err = one_line_error(capsys, [a if a != str(base) else str(edited) for a in search] + ["--no-confirm"])
    assert "plans differ" in err and "configurations.2d.patch_size" in err
    resplit = tmp_path / "resplit"  # a study whose split differs from the one the base was trained on
    shutil.copytree(blob_work / "nnunet", resplit / "nnunet", symlinks=True)
    splits_file = resplit / "nnunet" / "preprocessed" / NAME / "splits_final.json"
    splits = json.loads(splits_file.read_text())
    splits[0]["train"][0], splits[0]["val"][0] = splits[0]["val"][0], splits[0]["train"][0]
    splits_file.write_text(json.dumps(splits))
    err = one_line_error(capsys, search + ["--no-confirm", "--work-dir", str(resplit)])
    assert "validated on other cases" in err

    # the search: screening on fold 0 (its only finished fold), the base adopted as it is
    assert main(search + ["--no-confirm"]) == 0
    out = capsys.readouterr().out
    assert "without one (not used): 1" in out and "continuations: 24 iterations in all" in out
    assert "s/iteration of the base's own training" in out
    assert tree_digest(base) == before  # byte-identical: only read
    study = optuna.load_study(study_name=STUDY, storage=studies.make_storage(None, blob_work))
    assert bases(study)[0]["source"] == "user" and bases(study)[0]["epochs"] == BASE_EPOCHS
    assert study.user_attrs[rec.SETTINGS]["fidelity_mode"]["base"]["plans"] == "nnUNetPlans"

    # its export fine-tunes under nnUNetv2_train -pretrained_weights and predicts under nnUNetv2_predict -tr
    assert main(["export", str(blob_work), "-o", str(trainers), "--trial", "1", "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    command = next(line.strip() for line in printed.splitlines() if "-pretrained_weights" in line)
    assert command.endswith(f"-pretrained_weights {base / 'fold_0' / 'checkpoint_final.pth'}")
    name = command.split("-tr ")[1].split()[0]
    tune = subprocess.run([bin_of("nnUNetv2_train"), "992", "2d", "0", "-tr", name, "-device", "cpu",
                           "-pretrained_weights", str(base / "fold_0" / "checkpoint_final.pth")],
                          env=nnenv, capture_output=True, text=True, timeout=600)
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    fold = tmp_path / "results" / NAME / f"{name}__nnUNetPlans__2d" / "fold_0"
    assert torch.load(fold / "checkpoint_final.pth", weights_only=False)["current_epoch"] == 1
    assert "fine-tuning from" in next(fold.glob("training_log_*.txt")).read_text()
    inp, pred = tmp_path / "in", tmp_path / "pred"
    inp.mkdir()
    case = sorted((dataset / "imagesTr").iterdir())[0]
    (inp / case.name).symlink_to(case)
    predict = subprocess.run([bin_of("nnUNetv2_predict"), "-i", str(inp), "-o", str(pred), "-d", "992", "-c", "2d",
                              "-f", "0", "-tr", name, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
                             env=nnenv, capture_output=True, text=True, timeout=600)
    assert predict.returncode == 0, predict.stdout[-3000:] + predict.stderr[-3000:]
    assert list(pred.glob("*.nii.gz"))
    assert tree_digest(base) == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(base_epochs=5), "need from_base"),
    (dict(finetune_lr=1e-3), "need from_base"),
    (dict(from_base=True, base="somewhere", base_epochs=5), "used as it was trained"),
])
def test_fine_tune_options_are_checked_before_anything_runs(kwargs, message, tmp_path):
    import autoloss

    kwargs = {k: (str(tmp_path / v) if k == "base" else v) for k, v in kwargs.items()}
    with pytest.raises(AutolossError, match=message):
        autoloss.search(tmp_path / "no_dataset", work_dir=tmp_path / "w", **kwargs)


def test_a_folder_that_is_no_nnunet_results_folder_is_named(tmp_path):
    from autoloss.nnunet.base_folder import open_base

    with pytest.raises(AutolossError, match="no such folder"):
        open_base(tmp_path / "missing")
    (tmp_path / "results").mkdir()
    with pytest.raises(AutolossError, match="TRAINER__PLANS__CONFIG"):
        open_base(tmp_path / "results")
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__2d"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {"2d": {}}}))
    (folder / "dataset.json").write_text("{}")
    with pytest.raises(AutolossError, match=r"no fold_K/checkpoint_final.pth \(folds without one: 0\)"):
        open_base(folder)


def test_the_continuation_lr_is_nnunets_schedule_at_the_bases_end():
    from autoloss.nnunet.finetune import lr_recipe

    # nnU-Net's poly decay over N + E epochs, at epoch N, equals the continuation's start; a fresh poly over E
    # from there is that schedule's tail epoch by epoch.
    n, e = 1000, 50
    assert continuation_lr(n, e) == pytest.approx(0.01 * (1 - n / (n + e)) ** 0.9)
    for k in range(e):
        assert continuation_lr(n, e) * (1 - k / e) ** 0.9 == pytest.approx(0.01 * (1 - (n + k) / (n + e)) ** 0.9)
    assert lr_recipe(n, e)["recipe"] == "nnunet-tail" and lr_recipe(n, e, 1e-3)["initial_lr"] == 1e-3
    with pytest.raises(AutolossError):
        continuation_lr(0, 5)
