"""Paired statistics and the verdict rules, against hand-computed cases and an A/A simulation (no training)."""
from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from scipy.stats import wilcoxon

from autoloss.searching import records as rec
from autoloss.searching import verdict as verdict_module
from autoloss.paired_stats import ALPHA, MIN_CASES, paired_comparison
from autoloss.searching.verdict import compare, compute_verdict, decide
from autoloss.spec import LossSpec

CAND = LossSpec("DiceFocal", {"focal.gamma": 2.0})


def test_known_differences_mean_ci_and_wilcoxon():
    base = {f"c{i}": 0.5 for i in range(12)}
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.01, 0.02, 0.03, 0.04, 0.05, -0.01]
    cand = {f"c{i}": 0.5 + d for i, d in enumerate(diffs)}
    r = paired_comparison(cand, base)
    assert r.cases == 12 and r.excluded == 0
    assert r.mean_gain == pytest.approx(np.mean(diffs))
    assert r.sd == pytest.approx(np.std(diffs, ddof=1))
    assert r.p_value == pytest.approx(wilcoxon(diffs, zero_method="zsplit").pvalue)
    assert 0 < r.ci[0] < r.mean_gain < r.ci[1]
    assert r.significant_gain and not r.significant_loss
    # minimum detectable effect: (z_0.975 + z_0.8) * sd / sqrt(n) = 2.8016 * sd / sqrt(12)
    assert r.mde == pytest.approx(2.8016 * r.sd / math.sqrt(12), rel=1e-3)


def test_bootstrap_is_seeded_and_only_common_finite_cases_are_paired():
    cand = {"a": 0.9, "b": 0.8, "c": float("nan"), "d": 0.7, "only_cand": 0.1}
    base = {"a": 0.8, "b": 0.8, "c": 0.5, "d": 0.6, "only_base": 0.9}
    r = paired_comparison(cand, base)
    assert r.cases == 3 and r.excluded == 3  # c (NaN), only_cand, only_base
    assert r.mean_gain == pytest.approx((0.1 + 0.0 + 0.1) / 3)
    assert paired_comparison(cand, base, seed=3).ci == paired_comparison(cand, base, seed=3).ci


def test_ties_all_equal_and_single_case():
    same = {f"c{i}": 0.7 for i in range(15)}
    r = paired_comparison(same, dict(same))
    assert r.cases == 15 and r.mean_gain == 0 and r.ci == (0.0, 0.0) and r.p_value == 1.0
    assert not r.significant_gain and not r.significant_loss
    one = paired_comparison({"x": 0.9}, {"x": 0.1})
    assert one.cases == 1 and one.p_value == 1.0 and math.isnan(one.mde) and not one.significant_gain
    none = paired_comparison({"x": float("nan")}, {"x": 0.3})
    assert none.cases == 0 and none.excluded == 1 and not none.significant_gain
    # ties among non-zero differences are ranked (average ranks), as scipy does
    tied = paired_comparison({f"c{i}": 0.6 for i in range(10)}, {f"c{i}": 0.5 for i in range(10)})
    assert tied.p_value < 0.01 and tied.ci == pytest.approx((0.1, 0.1))


def test_needed_cases_grows_with_spread():
    rng = np.random.default_rng(0)
    narrow = paired_comparison({str(i): v for i, v in enumerate(rng.normal(0, 0.01, 20))}, {str(i): 0 for i in range(20)})
    wide = paired_comparison({str(i): v for i, v in enumerate(rng.normal(0, 0.05, 20))}, {str(i): 0 for i in range(20)})
    assert MIN_CASES <= narrow.needed_cases() < wide.needed_cases()
    # n = ((1.96 + 0.8416) * sd / 0.01)^2
    assert wide.needed_cases() == math.ceil((2.8016 * wide.sd / 0.01) ** 2) or \
        abs(wide.needed_cases() - (2.8016 * wide.sd / 0.01) ** 2) < 2


def _table(values: dict[str, float]) -> dict[str, dict]:
    return {k: {"1": {"dice": v, "nsd": v}} for k, v in values.items()}


def test_decide_switch_keep_inconclusive():
    base = {f"0/c{i}": 0.70 + 0.01 * (i % 5) for i in range(20)}
    better = {k: v + 0.03 + 0.002 * (i % 3) for i, (k, v) in enumerate(base.items())}
    noise = {k: v + (0.004 if i % 2 else -0.004) for i, (k, v) in enumerate(base.items())}
    switch = decide([compare(_table(better), _table(base), "dice", CAND)], "dice", [1, 2])
    assert switch.decision == "switch" and switch.loss == CAND
    assert switch.to_dict()["cases"] == 20 and switch.to_dict()["ci"][0] > 0
    keep = decide([compare(_table(noise), _table(base), "dice", CAND)], "dice", [1, 2])
    assert keep.decision == "keep" and keep.loss is None
    few = {k: base[k] for k in list(base)[:6]}
    inc = decide([compare(_table({k: better[k] for k in few}), _table(few), "dice", CAND)], "dice", [1, 2])
    assert inc.decision == "inconclusive" and "would be needed" in inc.message and inc.needed_cases >= MIN_CASES


def test_trainings_that_learned_nothing_never_switch():
    # What 2-8 CPU epochs gave on Hippocampus 2d: every loss near Dice 0, one "significantly" above the other.
    base = {f"0/c{i}": 0.0005 * (i % 3) for i in range(20)}
    cand = {k: v + 0.003 + 0.0005 * (i % 2) for i, (k, v) in enumerate(base.items())}
    cmp = compare(_table(cand), _table(base), "dice", CAND)
    assert cmp.overall.significant_gain  # the statistics alone would say switch
    v = decide([cmp], "dice", [1, 2])
    assert v.decision == "inconclusive" and "learned almost nothing" in v.message and v.loss is None


def test_a_gain_that_costs_dice_on_a_class_is_not_a_switch():
    base, cand = {}, {}
    for i in range(20):
        base[f"0/c{i}"] = {"1": {"dice": 0.6, "nsd": 0.5}, "2": {"dice": 0.8, "nsd": 0.5}}
        # NSD objective up a lot, class 2 Dice down consistently
        cand[f"0/c{i}"] = {"1": {"dice": 0.6, "nsd": 0.9}, "2": {"dice": 0.78 - 0.001 * (i % 4), "nsd": 0.9}}
    v = decide([compare(cand, base, "nsd", CAND)], "nsd", [1])
    assert v.decision == "keep" and "loses Dice significantly on class(es) 2" in v.message


def test_a_a_false_switch_rate_is_at_most_5_percent():
    # Candidate and baseline drawn from ONE distribution (per-case Dice with a shared case effect): any "switch"
    # is a false positive. Two candidates per verdict, as in a default search (Bonferroni inside).
    rng = np.random.default_rng(12345)
    switches, runs = 0, 400
    for _ in range(runs):
        n = 24
        case = rng.uniform(0.4, 0.9, n)
        base = {f"1/c{i}": case[i] + rng.normal(0, 0.03) for i in range(n)}
        comps = [compare(_table({f"1/c{i}": case[i] + rng.normal(0, 0.03) for i in range(n)}), _table(base),
                         "dice", LossSpec("DiceTopK", {"topk.k": float(k)}), ALPHA / 2) for k in (10, 20)]
        switches += decide(comps, "dice", [1, 2]).decision == "switch"
    assert switches / runs <= 0.05, f"false switch rate {switches / runs:.3f}"


def _study_with(confirm_rows, screening=()):
    study = optuna.create_study(direction="maximize")
    for spec, value, per_case in screening:
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={rec.SPEC: spec.to_dict(),
                                                                           rec.PER_CASE: per_case}))
    for spec, fold, per_case, *replicate in confirm_rows:
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={
            rec.SPEC: spec.to_dict(), rec.PHASE: "confirm", rec.FOLD: fold, rec.EPOCHS: 2,
            rec.REPLICATE: replicate[0] if replicate else 0, rec.PER_CASE: {str(fold): per_case}}))
    return study


def test_compute_verdict_reads_only_planned_confirmation_folds_and_flags_missing_trainings():
    base_spec = LossSpec("DiceCE")
    cases = {f"c{i}": {"1": {"dice": 0.5 + 0.01 * i, "nsd": 0.5}} for i in range(8)}
    better = {k: {"1": {"dice": v["1"]["dice"] + 0.05, "nsd": 0.5}} for k, v in cases.items()}
    rows = [(base_spec, 1, cases), (CAND, 1, better), (base_spec, 2, cases), (CAND, 2, better),
            (CAND, 0, {k: {"1": {"dice": 0.0, "nsd": 0.0}} for k in cases})]  # fold 0 is not in the plan
    study = _study_with(rows)
    study.set_user_attr(rec.CONFIRM_PLAN, {"candidates": [CAND.to_dict()], "baseline": base_spec.to_dict(),
                                           "folds": [1, 2], "epochs": 2})
    v = compute_verdict(study)
    assert v.decision == "switch" and v.comparison.overall.cases == 16
    assert v.comparison.overall.mean_gain == pytest.approx(0.05)
    # a planned training that never finished makes the verdict inconclusive, whatever the rest says
    study.set_user_attr(rec.CONFIRM_PLAN, {"candidates": [CAND.to_dict()], "baseline": base_spec.to_dict(),
                                           "folds": [1, 2, 3], "epochs": 2})
    v = compute_verdict(study)
    assert v.decision == "inconclusive" and "2 missing" in v.message


def _shifted(cases: dict, by: float) -> dict:
    return {k: {"1": {"dice": v["1"]["dice"] + by, "nsd": 0.5}} for k, v in cases.items()}


def test_a_switch_must_hold_against_a_second_dice_ce_training(monkeypatch):
    # Dice+CE trained twice per fold (seeds 0 and 1). A candidate that only beats an unlucky first Dice+CE training
    # (all its cases 3 points low: one training's luck, which a per-case test reads as 16 consistent cases) is
    # kept out; a candidate that beats both trainings switches, and the message quotes both and the gap.
    base_spec = LossSpec("DiceCE")
    cases = {f"c{i}": {"1": {"dice": 0.5 + 0.01 * i, "nsd": 0.5}} for i in range(8)}
    plan = {"candidates": [CAND.to_dict()], "baseline": base_spec.to_dict(), "folds": [1, 2], "epochs": 2,
            "control_seeds": 2}
    jitter = {k: {"1": {"dice": v["1"]["dice"] + 0.001 * (i % 3), "nsd": 0.5}}
              for i, (k, v) in enumerate(cases.items())}

    def study_of(first_shift: float, cand_shift: float):
        rows = [(base_spec, f, _shifted(cases, first_shift)) for f in (1, 2)] + \
               [(base_spec, f, jitter, 1) for f in (1, 2)] + [(CAND, f, _shifted(cases, cand_shift)) for f in (1, 2)]
        study = _study_with(rows)
        study.set_user_attr(rec.CONFIRM_PLAN, plan)
        return study

    lucky = compute_verdict(study_of(-0.03, 0.0))
    assert lucky.decision == "keep" and "within what retraining moves" in lucky.message, lucky.message
    assert lucky.control_gap == pytest.approx(0.031, abs=0.002)  # seed 1 minus seed 0
    assert lucky.split == [CAND.key()]  # beat one Dice+CE training, not the other: the search adds folds
    # the second control's own rule (without the retraining check, the rule before): beaten once, not twice
    monkeypatch.setattr(verdict_module, "RETRAINING_CHECK", False)
    before = compute_verdict(study_of(-0.03, 0.0))
    assert before.decision == "keep" and "not the second" in before.message, before.message
    assert before.split == [CAND.key()]
    monkeypatch.setattr(verdict_module, "RETRAINING_CHECK", True)
    real = compute_verdict(study_of(0.0, 0.05))
    assert real.decision == "switch" and "second Dice+CE training" in real.message, real.message
    assert real.split == []
    assert real.to_dict()["control_gap"] == pytest.approx(0.001, abs=0.001)
    # one control (--control-seeds 1, the rule before): the unlucky training alone decides
    one = study_of(-0.03, 0.0)
    one.set_user_attr(rec.CONFIRM_PLAN, plan | {"control_seeds": 1})
    assert compute_verdict(one).decision == "switch"
    # the second control's training missing: inconclusive, as any missing confirmation training
    rows = [(base_spec, f, cases) for f in (1, 2)] + [(base_spec, 1, jitter, 1)] + \
        [(CAND, f, _shifted(cases, 0.05)) for f in (1, 2)]
    partial = _study_with(rows)
    partial.set_user_attr(rec.CONFIRM_PLAN, plan)
    v = compute_verdict(partial)
    assert v.decision == "inconclusive" and "1 missing" in v.message


def test_a_gain_must_clear_the_retraining_noise_the_two_dice_ce_trainings_measure():
    # Two Dice+CE trainings per fold that differ by 4 points on fold 1 and agree on fold 2 (one training's luck:
    # sd = sqrt((0.04^2 + 0) / 4) = 2 points). A candidate +2 points over both, on every case (a per-case test
    # calls that certain), is within that luck over two folds: keep, and more folds would tell (split). The same
    # +2 where the two Dice+CE trainings agree switches; +6 clears the noise.
    base_spec = LossSpec("DiceCE")
    cases = {f"c{i}": {"1": {"dice": 0.5 + 0.01 * i, "nsd": 0.5}} for i in range(10)}
    plan = {"candidates": [CAND.to_dict()], "baseline": base_spec.to_dict(), "folds": [1, 2], "epochs": 2,
            "control_seeds": 2}

    def study_of(second_gap_fold1: float, gain: float):
        rows = [(base_spec, f, cases) for f in (1, 2)] + \
               [(base_spec, 1, _shifted(cases, second_gap_fold1), 1), (base_spec, 2, cases, 1)] + \
               [(CAND, f, _shifted(cases, gain + (second_gap_fold1 if f == 1 else 0.0))) for f in (1, 2)]
        study = _study_with(rows)
        study.set_user_attr(rec.CONFIRM_PLAN, plan)
        return study

    def verdict_of(second_gap_fold1: float, gain: float):
        return compute_verdict(study_of(second_gap_fold1, gain))

    noisy = verdict_of(0.04, 0.02)
    assert noisy.comparison.overall.significant_gain  # the per-case test alone would switch
    assert noisy.comparison.retraining_sd == pytest.approx(0.02, abs=1e-6) and noisy.comparison.folds == 2
    assert noisy.decision == "keep" and "within what retraining moves" in noisy.message, noisy.message
    assert "luck at 2.0 points" in noisy.message and noisy.split == [CAND.key()]
    from autoloss.searching.results import summary_text

    assert "retraining noise: a gain must exceed 4." in summary_text(study_of(0.04, 0.02), noisy)
    quiet = verdict_of(0.0, 0.02)
    assert quiet.decision == "switch" and quiet.comparison.retraining_margin == 0.0, quiet.message
    clear = verdict_of(0.04, 0.06)
    assert clear.decision == "switch" and "(it does)" in clear.message, clear.message
    assert clear.comparison.retraining_margin == pytest.approx(1.96 * 0.02, abs=0.002)


def test_an_extended_confirmation_is_judged_on_all_its_folds():
    # Folds 1-2 split (the candidate only beat an unlucky first Dice+CE training), so the search added folds 3-4,
    # where the two Dice+CE trainings agree and the candidate gains nothing: keep, on all 32 cases, and the message
    # says where the confirmation began.
    base_spec = LossSpec("DiceCE")
    cases = {f"c{i}": {"1": {"dice": 0.5 + 0.01 * i, "nsd": 0.5}} for i in range(8)}
    rows = [(base_spec, f, _shifted(cases, -0.03 if f < 3 else 0.0)) for f in (1, 2, 3, 4)] + \
        [(base_spec, f, _shifted(cases, 0.001), 1) for f in (1, 2, 3, 4)] + [(CAND, f, cases) for f in (1, 2, 3, 4)]
    study = _study_with(rows)
    study.set_user_attr(rec.CONFIRM_PLAN, {"candidates": [CAND.to_dict()], "baseline": base_spec.to_dict(),
                                           "folds": [1, 2, 3, 4], "extended_from": [1, 2], "epochs": 2,
                                           "control_seeds": 2})
    v = compute_verdict(study)
    assert v.decision == "keep" and v.comparison.overall.cases == 32, v.message
    assert v.extended_from == [1, 2] and v.to_dict()["extended_from"] == [1, 2]
    assert "began on fold(s) 1,2" in v.message and "extended to fold(s) 1,2,3,4" in v.message


def test_screening_alone_never_switches():
    base_spec = LossSpec("DiceCE")
    pc = {"0": {f"c{i}": {"1": {"dice": 0.5, "nsd": 0.5}} for i in range(30)}}
    win = {"0": {f"c{i}": {"1": {"dice": 0.9, "nsd": 0.9}} for i in range(30)}}
    study = _study_with([], screening=[(base_spec, 0.5, pc), (CAND, 0.9, win)])
    assert compute_verdict(study).decision == "inconclusive"
    study = _study_with([], screening=[(base_spec, 0.9, win), (CAND, 0.5, pc)])
    assert compute_verdict(study).decision == "keep"
