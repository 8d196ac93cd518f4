"""The metric as part of the answer: regimes -> metrics, --metric auto's class-wise objective, the verdict's
per-metric gains, the prior's regime rules and `autoloss recommend` naming the metric per class."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from autoloss import objectives
from autoloss.cli import main
from autoloss.nnunet.run import case_objective, objective_value
from autoloss.prior import recommend_from_fingerprint
from autoloss.paired_stats import MIN_CASES
from autoloss.searching.verdict import compare, decide
from autoloss.spec import LossSpec


def fingerprint(regimes: dict[str, str | None]) -> dict:
    fp = json.loads((Path(__file__).parents[1] / "fingerprints" / "loss_odyssey_tasks.json").read_text())["tasks"]
    base = copy.deepcopy(next(iter(fp.values())))
    base = base.get("fingerprint", base)
    template = next(iter(base["classes"].values()))
    base["classes"] = {}
    for label, regime in regimes.items():
        entry = copy.deepcopy(template) | {"name": f"c{label}"}
        if regime is not None:
            entry["regime"] = regime
        base["classes"][label] = entry
    return base


def test_auto_objective_per_regime():
    fp = fingerprint({"1": "tubular", "2": "many-instances", "3": "large-structure"})
    obj = objectives.auto_objective(fp)
    assert obj == "classwise:1=dice+cldice,2=dice+lesion_f1,3=dice"
    assert objectives.describe(obj) == "class 1: Dice + clDice; class 2: Dice + lesion F1; class 3: Dice"
    # Without regimes (a fingerprint from before regimes existed) auto is plain Dice.
    assert objectives.auto_objective(fingerprint({"1": None, "2": None})) == "dice"
    assert objectives.auto_objective(fingerprint({"1": {"name": "tubular"}})) == "classwise:1=dice+cldice"
    assert objectives.auto_objective(fingerprint({"1": "many_instances"})) == "classwise:1=dice+lesion_f1"


def test_classwise_value_and_case_objective():
    obj = "classwise:1=dice+cldice,2=dice"
    summary = {"1": {"dice": 0.8, "cldice": 0.6, "nsd": 0.1}, "2": {"dice": 0.9, "cldice": 0.0},
               "mean": {"dice": 0.85}}
    assert objective_value(summary, obj) == pytest.approx(((0.8 + 0.6) / 2 + 0.9) / 2)
    case = {"1": {"dice": 0.5, "cldice": float("nan")}, "2": {"dice": float("nan")}}
    assert case_objective(case, obj) == pytest.approx(0.5)  # NaN metrics and absent classes are left out
    assert objective_value(summary, "dice") == 0.85


def paired(n: int, dice_gain: float, cl_gain: float) -> tuple[dict, dict]:
    cand, base = {}, {}
    for i in range(n):
        jitter = 0.001 * ((i * 7) % 5)
        base[f"0/c{i}"] = {"1": {"dice": 0.8 + jitter, "cldice": 0.6 + jitter}}
        cand[f"0/c{i}"] = {"1": {"dice": 0.8 + jitter + dice_gain + 0.0005 * (i % 3),
                                 "cldice": 0.6 + jitter + cl_gain + 0.001 * (i % 4)}}
    return cand, base


def test_verdict_names_the_regime_metric_and_the_dice_change():
    obj = "classwise:1=dice+cldice"
    cand, base = paired(MIN_CASES + 6, dice_gain=-0.004, cl_gain=0.031)
    cmp = compare(cand, base, obj, LossSpec("DiceCE+clDice"))
    assert cmp.metric_gains["cldice"] == pytest.approx(0.031, abs=0.002)
    assert cmp.metric_gains["dice"] == pytest.approx(-0.004, abs=0.001)
    verdict = decide([cmp], obj, [1, 2])
    # The composite gains, but Dice is lost significantly on class 1: keep, and the message says both.
    assert verdict.decision == "keep"
    assert "clDice" in verdict.message and "Dice" in verdict.message
    g = cmp.metric_gains
    assert f"({100 * g['cldice']:+.1f} clDice, {100 * g['dice']:+.1f} Dice)" in verdict.message  # "(+3.3 clDice, -0.4 Dice)"
    assert cmp.to_dict()["metric_gains"] == cmp.metric_gains


def test_prior_boosts_topology_and_instance_losses_and_keeps_dice_ce():
    names = lambda fp: [r.spec.name for r in recommend_from_fingerprint(fp, top=5)]  # noqa: E731
    plain = names(fingerprint({"1": None}))
    assert not {"DiceCE+SkelRecall", "DiceCE+clDice", "DiceCE+Blob"} & set(plain)
    tub = recommend_from_fingerprint(fingerprint({"1": "tubular"}), top=5)
    assert "DiceCE+SkelRecall" in [r.spec.name for r in tub] and "DiceCE" in [r.spec.name for r in tub]
    reason = next(r for r in tub if r.spec.name == "DiceCE+SkelRecall").reason
    assert "tubular" in reason and "clDice" in reason
    many = names(fingerprint({"1": "many-instances"}))
    assert "DiceCE+Blob" in many and "DiceCE" in many


def test_recommend_prints_the_metric_per_class(tmp_path, capsys):
    fp = fingerprint({"1": "tubular", "2": "large-structure"})
    path = tmp_path / "fp.json"
    path.write_text(json.dumps(fp))
    assert main(["recommend", "--fingerprint", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Judged by" in out and "clDice" in out and "tubular" in out
    assert main(["recommend", "--fingerprint", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["judged_by"]["1"]["metrics"] == ["dice", "cldice"]
