"""Screening trains each loss once: a proposal of a loss already screened is told its value, not trained and not
counted (autoloss.searching.repeats); a space with nothing left to screen ends the screening."""
from __future__ import annotations

import csv

import optuna
import pytest

from autoloss.nnunet.run import Fidelity
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.repeats import MAX_IN_A_ROW, Repeats
from autoloss.searching.runner import SearchConfig, run_search
from conftest import HIPPO, MAX_CASES, TINY


def test_repeats_counts_repeats_in_a_row_and_names_untried_losses():
    r = Repeats({"a": (0, "DiceCE")})
    assert r.earlier("a") == 0 and r.in_a_row == 1
    assert r.earlier("b") is None and r.in_a_row == 0
    r.add("b", 1, "DiceFocal")
    assert r.untried(["DiceCE", "DiceFocal", "DiceTopK"], seed=3) == "DiceTopK"
    assert r.untried(["DiceCE", "DiceFocal"], seed=3) is None
    for _ in range(MAX_IN_A_ROW):
        r.earlier("a")
    assert r.exhausted
    assert r.first_repeat("a") and not r.first_repeat("a")


@pytest.mark.slow
def test_a_space_of_fixed_losses_trains_each_once_and_ends_the_screening(search_work_dir, tmp_path):
    space = tmp_path / "fixed.yaml"
    space.write_text("losses: [DiceCE, DiceFocal]\n")  # no parameter: two losses, nothing else to propose
    logs: list[str] = []
    cfg = SearchConfig(dataset=str(HIPPO), budget=4, fidelity=Fidelity(**TINY), work_dir=search_work_dir,
                       device="cpu", max_cases=MAX_CASES, pruner="none", seed=0, prior_top=1,
                       spaces=(str(space),), confirm=ConfirmSettings(enabled=False))
    study = run_search(cfg, log=logs.append)

    trained = studies.counted(study)
    assert sorted(rec.spec_of(t).name for t in trained) == ["DiceCE", "DiceFocal"]
    assert sorted(p.name for p in (search_work_dir / "trials").iterdir()) == \
        sorted(f"trial_{t.number:04d}" for t in trained)  # nothing else was trained
    repeats = [t for t in study.get_trials() if rec.phase(t) == "repeat"]
    assert len(repeats) == MAX_IN_A_ROW  # the first proposal after both were screened began the count
    by_number = {t.number: t for t in trained}
    for t in repeats:
        original = by_number[t.user_attrs[rec.REPEAT_OF]]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.value == original.value
        assert rec.spec_of(t) == rec.spec_of(original)
    assert any("screening ends after 2 of 4 trainings" in line for line in logs), logs
    rows = list(csv.DictReader(open(search_work_dir / "results.csv")))
    assert [r["phase"] for r in rows] == ["screen", "screen"]  # repeats are no trainings: not listed
    assert f"{MAX_IN_A_ROW} proposal(s) repeated a loss already screened" in \
        (search_work_dir / "summary.txt").read_text()

    # resumed with a larger budget: nothing is trained again, the space is still exhausted
    study = run_search(cfg.__class__(**(cfg.__dict__ | {"budget": 6})), log=logs.append)
    assert len(studies.counted(study)) == 2


def test_a_re_queued_trial_is_no_repeat_of_itself():
    r = Repeats({"a": (0, "DiceCE")})
    r.add("b", 1, "DiceFocal")
    r.forget(1)  # trial 1's worker died: it was queued again under a new number
    assert r.earlier("b") is None and r.earlier("a") == 0


def test_a_forgotten_trials_loss_is_untried_again():
    r = Repeats({"a": (0, "DiceCE")})
    r.add("b", 1, "DiceFocal")
    r.forget(1)
    assert r.untried(["DiceCE", "DiceFocal"], seed=0) == "DiceFocal"
