"""`autoloss search` end to end with real nnU-Net trainings at a tiny CPU fidelity on 6 Hippocampus cases."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from autoloss.errors import AutolossError
from autoloss.nnunet.run import Fidelity
from autoloss.searching import study as studies
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.runner import SearchConfig, run_search
from autoloss.spec import LossSpec
from conftest import HIPPO, MAX_CASES, TINY

pytestmark = pytest.mark.slow


def config(work, **kw) -> SearchConfig:
    # screening mechanics only; the confirmation stage has its own tests (test_search_confirm.py)
    base = dict(dataset=str(HIPPO), budget=3, fidelity=Fidelity(**TINY), work_dir=work, device="cpu",
                max_cases=MAX_CASES, pruner="none", seed=0, confirm=ConfirmSettings(enabled=False))
    base.update(kw)
    return SearchConfig(**base)


def specs_of(study, state=optuna.trial.TrialState.COMPLETE):
    return [json.dumps(t.user_attrs["autoloss_spec"], sort_keys=True) for t in study.get_trials(states=(state,))]


def test_search_runs_prior_first_saves_results_and_resumes(search_work_dir):
    study = run_search(config(search_work_dir), log=lambda s: None)
    done = studies.counted(study)
    assert len(done) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    first = min(done, key=lambda t: t.number)
    assert first.user_attrs["autoloss_spec"]["name"] == "DiceCE" and first.user_attrs["source"] == "prior"
    for t in done:
        m = t.user_attrs["metrics"]
        assert {"1", "2", "mean"} <= set(m) and 0.0 <= t.value <= 1.0
        assert t.user_attrs["epochs_run"] == TINY["epochs"]
        assert t.user_attrs["overhead_seconds"] >= 0
    for name in ("results.csv", "results.md", "best_loss.json", "summary.txt", "study.journal"):
        assert (search_work_dir / name).exists(), name
    assert "Dice+CE" in (search_work_dir / "summary.txt").read_text()
    verdict = json.loads((search_work_dir / "best_loss.json").read_text())["verdict"]
    assert verdict["decision"] in ("keep", "inconclusive")  # screening only: never switch

    # Re-running with a larger budget resumes: the prior is not enqueued again and nothing is repeated.
    study = run_search(config(search_work_dir, budget=5), log=lambda s: None)
    assert len(studies.counted(study)) == 5
    prior_trials = [t for t in study.get_trials() if t.user_attrs.get("source") == "prior"]
    prior_specs = [json.dumps(t.user_attrs["autoloss_spec"], sort_keys=True) for t in prior_trials]
    assert len(prior_specs) == len(set(prior_specs)) == 4  # enqueued once: Dice+CE and 3 picks
    sampled = [t for t in studies.counted(study) if t.user_attrs.get("source") != "prior"]
    assert sampled, "after the prior the sampler must take over"


def test_resume_with_other_settings_is_refused(search_work_dir):
    run_search(config(search_work_dir, budget=1), log=lambda s: None)
    with pytest.raises(AutolossError, match="other settings"):
        run_search(config(search_work_dir, budget=2, fidelity=Fidelity(**(TINY | {"epochs": 3}))), log=lambda s: None)


def test_killed_search_resumes_without_repeating_a_finished_trial(search_work_dir):
    cmd = [sys.executable, "-m", "autoloss", "search", str(HIPPO), "--budget", "2", "--max-cases", str(MAX_CASES),
           "--config", "2d", "--epochs", "2", "--iterations-per-epoch", "4", "--val-iterations", "1",
           "--device", "cpu", "--pruner", "none", "--no-confirm", "--work-dir", str(search_work_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = search_work_dir / "results.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (results.exists() and "complete" in results.read_text()):
        time.sleep(0.2)
    assert results.exists(), "first trial never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the driver and its nnU-Net workers mid-way
    proc.wait()

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    study = optuna.load_study(study_name="autoloss_Dataset103_Hippocampus_2d",
                              storage=studies.make_storage(None, search_work_dir))
    counted = studies.counted(study)
    assert len(counted) == 2
    complete = specs_of(study)
    assert len(complete) == len(set(complete)) == 2  # the finished first trial was not run again
    interrupted = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    assert len(interrupted) <= 1


def test_diverging_loss_fails_its_trial_and_the_search_goes_on(search_work_dir):
    # Dice+CE first (the prior, cut to the baseline), then a spec whose TopK term is weighted 2e38: the loss
    # overflows to inf at the first step, the trial fails with the reason, and the search finishes its budget.
    run_search(config(search_work_dir, budget=1, prior_top=1), log=lambda s: None)
    study = optuna.load_study(study_name="autoloss_Dataset103_Hippocampus_2d",
                              storage=studies.make_storage(None, search_work_dir))
    bad = LossSpec("DiceTopK", {"topk.weight": 2e38})
    study.enqueue_trial({"loss": "DiceTopK"}, user_attrs={"autoloss_spec": bad.to_dict(), "source": "test"})
    study = run_search(config(search_work_dir, budget=3, prior_top=1), log=lambda s: None)
    done = studies.counted(study)
    assert len(done) == 3
    failed = [t for t in done if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["autoloss_spec"] == bad.to_dict()
    assert "diverged" in failed[0].user_attrs["reason"]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in done) == 2


def test_rdb_storage_url_and_export_from_it(search_work_dir, tmp_path):
    # Any Optuna RDB URL works with --storage (SQLite here; PostgreSQL/MySQL URLs go the same way), and
    # `autoloss export URL --study-name NAME` reads the winner back from it.
    from autoloss.exporting import resolve_source

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = run_search(config(search_work_dir, budget=1, storage=url, study_name="rdb"), log=lambda s: None)
    assert len(studies.counted(study)) == 1
    # the verdict of a Dice+CE-only screening is keep: export refuses, --trial exports it anyway
    with pytest.raises(AutolossError, match="verdict is KEEP"):
        resolve_source(url, study_name="rdb")
    src = resolve_source(url, study_name="rdb", trial=0)
    assert src.spec.name == "DiceCE" and src.provenance["study"] == "rdb" and "NOT" in src.provenance["chosen_by"]


def test_users_own_preprocessing_is_reused(hippo_prepared, tmp_path):
    # A dataset that lives in the user's nnUNet_raw, already preprocessed by nnUNetv2_plan_and_preprocess (no
    # autoloss marker): prepare() uses the user's folders and preprocesses nothing again.
    import shutil

    from autoloss.dataset import read_dataset
    from autoloss.nnunet.prepare import MARKER, prepare

    pre = tmp_path / "preprocessed"
    shutil.copytree(hippo_prepared / "nnunet" / "preprocessed", pre)
    for marker in pre.glob(f"*/{MARKER.format(configuration='2d')}"):
        marker.unlink()
    raw = hippo_prepared / "nnunet" / "raw"
    os.environ.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(tmp_path / "res"))
    messages = []
    prepared = prepare(read_dataset(raw / "Dataset103_Hippocampus"), "2d", tmp_path / "work", log=messages.append)
    assert prepared.preprocessed_dir == pre / "Dataset103_Hippocampus"
    assert messages and all("reusing" in m for m in messages), messages
    assert not (tmp_path / "work" / "nnunet").exists()
