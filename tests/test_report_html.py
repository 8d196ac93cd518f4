"""`autoloss report WORK_DIR`: a self-contained report.html and the PNG figures, from a study in the exact format
a search records (the README example test covers a report written by a real search)."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import optuna
import pytest

from autoloss.losses import baseline_spec
from autoloss.searching import records as rec
from autoloss.searching.study import make_storage
from autoloss.spec import LossSpec

PNG = b"\x89PNG\r\n\x1a\n"
CANDIDATE = LossSpec("DiceFocal", {"focal.gamma": 2.0})


def _metrics(dice: float) -> dict:
    return {"1": {"dice": dice, "nsd": dice - 0.05}, "2": {"dice": dice - 0.2, "nsd": dice - 0.25},
            "mean": {"dice": dice - 0.1, "nsd": dice - 0.15}}


def _per_case(fold: int, level: float, rng) -> dict:
    return {str(fold): {f"case_{fold}_{i:02d}": {"1": {"dice": float(np.clip(level + rng.normal(0, 0.03), 0, 1))},
                                                 "2": {"dice": float(np.clip(level - 0.2 + rng.normal(0, 0.03), 0, 1))}}
                        for i in range(8)}}


def _curves(fold: int, final: float) -> dict:
    return {str(fold): {"mean_fg_dice": list(np.linspace(0.1, final, 5)), "train_losses": [0.9, 0.7, 0.6, 0.5, 0.45],
                        "val_losses": [0.95, 0.8, 0.7, 0.65, 0.6]}}


@pytest.fixture
def work_dir(tmp_path):
    """A finished search's study: 4 screening trials (one pruned), a confirmation of DiceFocal vs Dice+CE on two
    folds with 16 paired cases where DiceFocal is clearly better (a SWITCH verdict)."""
    rng = np.random.default_rng(0)
    work = tmp_path / "work"
    work.mkdir()
    study = optuna.create_study(study_name="s", storage=make_storage(None, work), direction="maximize")
    study.set_user_attr(rec.SETTINGS, {"dataset": "Dataset995_Report", "objective": "dice", "cases": ["a"] * 20,
                                       "fidelity": {"configuration": "2d", "epochs": 5, "iterations_per_epoch": 4,
                                                    "folds": [0]}})
    screening = [(baseline_spec(), 0.70, "prior"), (CANDIDATE, 0.74, "prior"),
                 (LossSpec("DiceTopK", {"topk.k": 10.0}), 0.69, "sampler")]
    for spec, value, source in screening:
        study.add_trial(optuna.trial.create_trial(
            value=value, intermediate_values=dict(enumerate(np.linspace(0.1, value, 5))),
            user_attrs={rec.SPEC: spec.to_dict(), rec.SOURCE: source, rec.METRICS: _metrics(value),
                        rec.PER_CASE: _per_case(0, value, rng), rec.CURVES: _curves(0, value)}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED,
                                              intermediate_values={0: 0.05, 1: 0.08},
                                              user_attrs={rec.SPEC: LossSpec("DiceHD").to_dict()}))
    study.set_user_attr(rec.CONFIRM_PLAN, {"candidates": [CANDIDATE.to_dict()], "baseline": baseline_spec().to_dict(),
                                           "folds": [1, 2], "epochs": 5})
    for spec, level in ((baseline_spec(), 0.70), (CANDIDATE, 0.78)):
        for fold in (1, 2):
            study.add_trial(optuna.trial.create_trial(value=level, user_attrs={
                rec.SPEC: spec.to_dict(), rec.SOURCE: "confirm", rec.PHASE: "confirm", rec.FOLD: fold,
                rec.EPOCHS: 5, rec.METRICS: _metrics(level), rec.PER_CASE: _per_case(fold, level, rng),
                rec.CURVES: _curves(fold, level)}))
    (work / "study.json").write_text(json.dumps({"study_name": "s", "storage": None}))
    return work


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def test_report_command_writes_self_contained_html_and_pngs(work_dir):
    out = subprocess.run([sys.executable, "-m", "autoloss", "report", str(work_dir), "--json"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    html = (work_dir / "report.html").read_text()
    assert info["report"] == str(work_dir / "report.html")
    names = sorted(p.rsplit("/", 1)[1] for p in info["figures"])
    assert names == ["curves.png", "history.png", "paired.png", "per_class.png", "ranking.png"]
    images = _images(html)
    assert len(images) == 5 and all(img.startswith(PNG) for img in images)
    for name in names:  # the embedded figures are the PNG files
        assert (work_dir / "figures" / name).read_bytes() in images
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert "Verdict: SWITCH" in html and "DiceFocal" in html and "DiceTopK" in html
    assert "&lt;NA&gt;" not in html and "nan<" not in html  # empty cells stay empty
    for title in ("Ranking against Dice+CE", "Per-class Dice and NSD per loss", "Pseudo-Dice per epoch",
                  "Paired per-case comparison", "Optimisation history"):
        assert title in html
    # figures are real pictures, not empty canvases: their sizes and pixel variety
    from matplotlib.image import imread

    for name in names:
        pixels = imread(work_dir / "figures" / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50, name


def test_report_of_a_search_with_nothing_finished_yet(tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    optuna.create_study(study_name="e", storage=make_storage(None, work), direction="maximize")
    (work / "study.json").write_text(json.dumps({"study_name": "e", "storage": None}))
    from autoloss.api import report

    html = report(work).read_text()
    assert "Verdict: INCONCLUSIVE" in html and "no finished training yet" in html
    assert len(_images(html)) == 5


def test_report_of_a_folder_that_is_no_search_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "autoloss", "report", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no study.json" in out.stderr
