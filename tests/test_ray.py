"""`autoloss search --workers 2` on a real local Ray cluster (CPU, tiny fidelity)."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest

from autoloss.errors import AutolossError
from autoloss.nnunet.run import Fidelity
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.runner import SearchConfig, run_search
from conftest import HIPPO, MAX_CASES, TINY

pytestmark = pytest.mark.slow


def config(work, **kw) -> SearchConfig:
    base = dict(dataset=str(HIPPO), budget=4, fidelity=Fidelity(**TINY), work_dir=work, device="cpu",
                max_cases=MAX_CASES, pruner="none", seed=0, workers=2, confirm=ConfirmSettings(enabled=False))
    base.update(kw)
    return SearchConfig(**base)


def test_two_workers_overlap_and_fill_the_same_study(search_work_dir):
    # the confirmation stage runs through Ray like the screening (one candidate and Dice+CE twice, one fold)
    study = run_search(config(search_work_dir, confirm=ConfirmSettings(top=1, num_folds=1)), log=lambda s: None)
    confirmed = rec.confirmation_trials(study)
    assert sorted(t.user_attrs[rec.SPEC]["name"] == "DiceCE" for t in confirmed) == [False, True, True]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs[rec.FOLD] == 1 for t in confirmed)
    done = studies.counted(study)
    assert len(done) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in done), \
        [(t.number, t.state, t.user_attrs.get("reason")) for t in done]
    spans = sorted((t.user_attrs["started"], t.user_attrs["ended"]) for t in done)
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    assert overlaps >= 1, spans
    assert len({t.user_attrs["worker"] for t in done}) >= 2
    # the study reads like a single-process one: Dice+CE first from the prior, then the rest
    first = min(done, key=lambda t: t.number)
    assert first.user_attrs["autoloss_spec"]["name"] == "DiceCE"
    assert (search_work_dir / "results.csv").exists() and (search_work_dir / "best_loss.json").exists()


def _ray_trial_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="ignore")
            except OSError:
                continue
            if "ray::_run_on_worker" in cmd:
                pids.append(int(proc.name))
    return pids


def test_killed_worker_fails_only_its_trial(search_work_dir):
    killed: list[int] = []

    def killer():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            pids = _ray_trial_pids()
            if pids:
                time.sleep(1.0)  # let the trial get into training
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    study = run_search(config(search_work_dir, budget=3), log=lambda s: None)
    thread.join(timeout=5)
    assert killed, "no Ray trial process was seen"
    done = studies.counted(study)
    assert len(done) == 3
    failed = [t for t in done if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "worker died" in failed[0].user_attrs["reason"]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in done) == 2


def test_unreachable_ray_address_is_one_clear_error(search_work_dir):
    with pytest.raises(AutolossError, match="Ray cluster at 127.0.0.1:1"):
        run_search(config(search_work_dir, ray_address="127.0.0.1:1", workers=1), log=lambda s: None)
