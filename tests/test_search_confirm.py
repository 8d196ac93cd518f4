"""Screen -> confirm -> verdict -> export, end to end with real nnU-Net trainings at a tiny CPU fidelity."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest

from autoloss.cli import main
from autoloss.errors import AutolossError
from autoloss.nnunet.run import Fidelity
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.confirm import ConfirmSettings, confirmation_folds, extension_folds
from autoloss.searching.runner import SearchConfig, run_search
from autoloss.searching.verdict import compute_verdict
from autoloss.spec import LossSpec
from conftest import HIPPO, MAX_CASES, TINY, hippo_trial_dataset

pytestmark = pytest.mark.slow
STUDY = "autoloss_Dataset103_Hippocampus_2d"


def config(work, **kw) -> SearchConfig:
    base = dict(dataset=str(HIPPO), budget=2, fidelity=Fidelity(**TINY), work_dir=work, device="cpu",
                max_cases=MAX_CASES, pruner="none", seed=0, prior_top=2,
                confirm=ConfirmSettings(top=1, num_folds=2))
    base.update(kw)
    return SearchConfig(**base)


def load(work):
    return optuna.load_study(study_name=STUDY, storage=studies.make_storage(None, work))


def test_screen_confirm_verdict_and_export_follow_the_verdict(search_work_dir, tmp_path, capsys, monkeypatch):
    from autoloss.searching import confirm, runner

    # The confirmation begins on folds 1-2 (CONFIRM_CASES lowered: this split holds 6 cases) and the first verdict
    # is made split (the candidate beat one Dice+CE training and not the other), which no 2-case confirmation
    # can be on its own: the search must then add the free folds left, 3 and 4.
    monkeypatch.setattr(confirm, "CONFIRM_CASES", 1)
    real = runner.compute_verdict

    def split(study):
        v = real(study)
        v.split = [c.spec.key() for c in v.comparisons]
        return v

    monkeypatch.setattr(runner, "compute_verdict", split)
    logs: list[str] = []
    cfg = config(search_work_dir, confirm=ConfirmSettings(top=1))
    study = run_search(cfg, log=logs.append)
    assert len(studies.counted(study)) == 2  # the budget counts screening trials only
    assert any("6 more on fold(s) 3, 4 if a candidate beats one Dice+CE training" in line for line in logs), logs
    assert any(line.startswith("confirmation extended to fold(s) 3, 4") for line in logs), logs
    plan = study.user_attrs[rec.CONFIRM_PLAN]
    assert plan["folds"] == [1, 2, 3, 4] and plan["extended_from"] == [1, 2]
    confirmed = rec.confirmation_trials(study)
    # Dice+CE (twice: seeds 0 and 1) and the best distinct non-baseline screening candidate (seed 0, Dice+CE's
    # first), each on folds 1 and 2 (never screened), then on the added folds 3 and 4
    assert Counter((t.user_attrs[rec.SPEC]["name"] == "DiceCE", t.user_attrs[rec.FOLD]) for t in confirmed) == {
        (True, f): 2 for f in (1, 2, 3, 4)} | {(False, f): 1 for f in (1, 2, 3, 4)}
    assert sorted(t.user_attrs[rec.REPLICATE] for t in confirmed) == [0] * 8 + [1] * 4
    seeds = {p.parent.name: json.loads(p.read_text())["seed"]
             for p in search_work_dir.glob("trials/confirm_*/result.json")}
    assert sorted(seeds.values()) == [0] * 8 + [1] * 4
    assert all(seed == 1 for name, seed in seeds.items() if "_seed1_" in name)
    assert all(t.params == {} and t.state == optuna.trial.TrialState.COMPLETE for t in confirmed)
    assert all(t.user_attrs[rec.PER_CASE] for t in confirmed)
    trials = len(study.trials)
    study = run_search(cfg, log=lambda s: None)  # a rerun resumes: the extension kept, nothing trained again
    assert len(study.trials) == trials and study.user_attrs[rec.CONFIRM_PLAN]["folds"] == [1, 2, 3, 4]

    verdict = json.loads((search_work_dir / "best_loss.json").read_text())["verdict"]
    # 6 cases in a 5-fold split: folds 1-4 hold 4 validation cases in all -> too few to tell
    assert verdict["decision"] == "inconclusive" and verdict["cases"] == 4
    assert set(verdict) >= {"decision", "loss", "gain", "ci", "p_value", "cases", "message"}
    assert "would be needed" in verdict["message"]
    assert verdict["extended_from"] == [1, 2] and verdict["confirm_folds"] == [1, 2, 3, 4]
    assert "extended to fold(s) 1,2,3,4" in verdict["message"]
    full = json.loads((search_work_dir / "verdict.json").read_text())
    assert len(full["comparisons"]) == 1 and len(full["comparisons"][0]["per_case"]) == 4
    assert {k.split("/")[0] for k in full["comparisons"][0]["per_case"]} == {"1", "2", "3", "4"}
    csv = (search_work_dir / "results.csv").read_text()
    assert csv.count("(second control, seed +1)") == 4  # Dice+CE's second training on each fold, named
    assert {"phase", "fold", "gain", "ci_low", "ci_high", "p_value", "cases"} <= set(csv.splitlines()[0].split(","))
    assert (search_work_dir / "summary.txt").read_text().startswith("verdict: INCONCLUSIVE")

    # export follows the verdict: nothing written, one line, exit 2; --trial N exports that trial, marked
    out = tmp_path / "trainers"
    assert main(["export", str(search_work_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INCONCLUSIVE" in err and "--trial" in err
    assert not out.exists()
    assert main(["export", str(search_work_dir), "-o", str(out), "--trial", "1"]) == 0
    text = next(out.glob("*.py")).read_text()
    assert "NOT the verdict's choice" in text


def test_a_a_search_never_switches(search_work_dir):
    # The only candidate is Dice+CE itself under another spelling (its default CE weight written out): whatever
    # the noise, the verdict must not be `switch`.
    run_search(config(search_work_dir, budget=1, prior_top=1, confirm=ConfirmSettings(enabled=False)),
               log=lambda s: None)
    twin = LossSpec("DiceCE", {"ce.weight": 1.0})
    load(search_work_dir).enqueue_trial({"loss": "DiceCE"}, user_attrs={rec.SPEC: twin.to_dict(), rec.SOURCE: "test"})
    study = run_search(config(search_work_dir, budget=2, prior_top=1, confirm=ConfirmSettings(top=1, num_folds=2)),
                       log=lambda s: None)
    verdict = compute_verdict(study)
    assert verdict.comparisons and verdict.comparisons[0].spec == twin
    assert verdict.decision != "switch", verdict.message


def test_killed_confirmation_resumes_without_repeating_a_finished_training(search_work_dir):
    cmd = [sys.executable, "-m", "autoloss", "search", str(HIPPO), "--budget", "2", "--max-cases", str(MAX_CASES),
           "--config", "2d", "--epochs", "2", "--iterations-per-epoch", "4", "--val-iterations", "1",
           "--device", "cpu", "--pruner", "none", "--prior-top", "2", "--confirm-top", "1",
           "--confirm-folds", "1", "2", "--work-dir", str(search_work_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = search_work_dir / "results.csv"
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and "confirm" in results.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before a confirmation training was recorded"
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 mid-confirmation
    proc.wait()
    before = {(t.user_attrs[rec.SPEC]["name"], t.user_attrs[rec.FOLD], t.number)
              for t in rec.confirmation_trials(load(search_work_dir))}
    assert 1 <= len(before) < 6

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "verdict: INCONCLUSIVE" in out.stdout  # the verdict is the last thing the search prints
    study = load(search_work_dir)
    confirmed = rec.confirmation_trials(study)
    keys = Counter((rec.result_key(rec.spec_of(t).key(), t.user_attrs[rec.REPLICATE]), t.user_attrs[rec.FOLD])
                   for t in confirmed)
    assert len(keys) == 6 and set(keys.values()) == {1}  # every (loss or Dice+CE seed, fold) exactly once
    after = {(t.user_attrs[rec.SPEC]["name"], t.user_attrs[rec.FOLD], t.number) for t in confirmed}
    assert before <= after  # the finished ones were kept, not re-run
    assert len(studies.counted(study)) == 2


def test_confirmation_folds_are_checked():
    assert confirmation_folds(5, (0,), ConfirmSettings()) == [1, 2]
    # by default more folds while the confirmation holds under CONFIRM_CASES cases, never fewer than two
    assert confirmation_folds(5, (0,), ConfirmSettings(), lambda f: 28) == [1, 2]
    assert confirmation_folds(5, (0,), ConfirmSettings(), lambda f: 6) == [1, 2, 3, 4]
    assert confirmation_folds(5, (0,), ConfirmSettings(), lambda f: 15) == [1, 2, 3]
    assert confirmation_folds(5, (0,), ConfirmSettings(), lambda f: 100) == [1, 2]
    assert confirmation_folds(5, (0,), ConfirmSettings(num_folds=2), lambda f: 6) == [1, 2]
    assert confirmation_folds(5, (1,), ConfirmSettings(num_folds=3)) == [0, 2, 3]
    assert confirmation_folds(2, (0,), ConfirmSettings()) == [1]
    with pytest.raises(AutolossError, match="never saw"):
        confirmation_folds(5, (0,), ConfirmSettings(folds=(0, 1)))
    with pytest.raises(AutolossError, match="folds 0..4"):
        confirmation_folds(5, (0,), ConfirmSettings(folds=(7,)))
    with pytest.raises(AutolossError, match="--no-confirm"):
        confirmation_folds(1, (0,), ConfirmSettings())


def test_the_confirmation_takes_the_best_of_each_loss_before_a_second_weight_of_one():
    from autoloss.searching.confirm import select_candidates

    study = optuna.create_study(direction="maximize")
    screened = [(LossSpec("DiceCE+Blob", {"blob.weight": 1.88}), 0.763),
                (LossSpec("DiceCE+Blob", {"blob.weight": 1.79}), 0.749), (LossSpec("DiceCE+SkelRecall"), 0.747),
                (LossSpec("DiceCE"), 0.720), (LossSpec("DiceCE+Blob"), 0.703)]
    for spec, value in screened:
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={rec.SPEC: spec.to_dict()}))
    # the AxonMyelin real search: two Blob weights led the screening, Skeleton Recall third
    assert select_candidates(study, 2) == [screened[0][0], screened[2][0]]
    assert select_candidates(study, 3) == [screened[0][0], screened[2][0], screened[1][0]]  # then other weights
    assert select_candidates(study, 9) == [screened[0][0], screened[2][0], screened[1][0], screened[4][0]]


def test_a_split_verdict_extends_to_the_free_folds_left_unless_the_user_chose_the_folds():
    assert extension_folds(5, (0,), [1, 2], ConfirmSettings()) == [3, 4]
    assert extension_folds(5, (1,), [0, 2], ConfirmSettings()) == [3, 4]
    assert extension_folds(5, (0,), [1, 2, 3, 4], ConfirmSettings()) == []
    assert extension_folds(5, (0,), [1, 2], ConfirmSettings(extend=False)) == []
    assert extension_folds(5, (0,), [1, 2], ConfirmSettings(folds=(1, 2))) == []
    assert extension_folds(5, (0,), [1, 2], ConfirmSettings(num_folds=2)) == []
    assert extension_folds(5, (0,), [1, 2], ConfirmSettings(control_seeds=1)) == []  # one Dice+CE: no split


def test_a_seeded_training_repeats_and_another_seed_differs(hippo_prepared, tmp_path, monkeypatch):
    # Single-process augmentation (nnUNet_n_proc_DA=0): the seed fixes the batches, augmentations and weights.
    from autoloss.nnunet.run import run_trial

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    prepared = hippo_trial_dataset(hippo_prepared)
    fid = Fidelity(**(TINY | {"folds": (1,)}))
    runs = [run_trial(LossSpec("DiceCE"), prepared, fid, tmp_path / f"r{i}", seed=s)["folds"][0]["curves"]
            for i, s in enumerate((7, 7, 8))]
    assert runs[0]["train_losses"] == runs[1]["train_losses"]
    assert runs[0]["train_losses"] != runs[2]["train_losses"]
