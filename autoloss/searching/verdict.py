"""The verdict of a search: `switch`, `keep` (Dice+CE) or `inconclusive`, from paired per-case statistics.

Only confirmation trainings count: the top candidates of the screening and Dice+CE re-trained on folds the
screening never saw (``autoloss.searching.confirm``), so picking the best of many noisy screening trials cannot
inflate the gain (the winner's curse). Rules:

- ``inconclusive`` when there is no confirmation (``--no-confirm``), it is unfinished, or it rests on fewer than
  ``MIN_CASES`` paired cases; the message says how many cases a one-point gain would need;
- ``switch`` when a candidate's paired gain on the objective has its confidence interval above zero and a
  Wilcoxon p below alpha, both Bonferroni-corrected for the number of candidates confirmed, and it loses Dice
  significantly on no class; and, where Dice+CE was trained twice on each confirmation fold (the default,
  ``ConfirmSettings.control_seeds``), the same holds against the second Dice+CE training too: all cases of one
  training share its luck, which a per-case test counts as evidence; a gain that one Dice+CE training's luck
  explains does not survive the other; and the gain must exceed the retraining noise those two trainings
  measure (``retraining_sd``: how far a fold's cases move together), which the per-case interval cannot see;
- ``keep`` otherwise.
A screening-only search can say ``keep`` (Dice+CE was not beaten even on the selection fold) or
``inconclusive``, never ``switch``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import optuna

from autoloss.nnunet.run import case_objective
from autoloss.searching import records as rec
from autoloss.paired_stats import ALPHA, MIN_BASELINE_SCORE, MIN_CASES, WORTHWHILE_GAIN, PairedComparison, paired_comparison
from autoloss.spec import LossSpec

DECISIONS = ("switch", "keep", "inconclusive")
DICE_HARM_ALPHA = ALPHA  # a class "loses Dice significantly" below this p (interval at 1 - this level)
# A gain must also clear the retraining noise the two Dice+CE trainings measure (``retraining_sd``); off only to
# measure the rule before (``benchmarks/sweep_replay.py --no-retraining-check``).
RETRAINING_CHECK = True


@dataclass
class Comparison:
    """One candidate against Dice+CE on the paired confirmation cases."""

    spec: LossSpec
    metric: str
    overall: PairedComparison
    per_class: dict[str, PairedComparison]
    per_case: dict[str, dict[str, float]]  # "fold/case" -> {candidate, baseline} objective values
    # Mean paired gain per metric of a class-wise objective (Dice always): "+3.1 clDice, -0.4 Dice".
    metric_gains: dict[str, float] = field(default_factory=dict)
    retraining_sd: float = 0.0  # SD of one training's shift, from the two Dice+CE trainings (0: not measured)
    folds: int = 0  # confirmation folds the gain averages over

    @property
    def retraining_margin(self) -> float:
        """The gain retraining alone would reach at the comparison's level: every case of a fold shares its
        training's luck, so the mean gain varies by 2 sd^2 / F (candidate's and control's shifts over F folds) on
        top of the case-level spread the bootstrap interval measures: z * sqrt(se^2 + 2 sd^2 / F)."""
        o = self.overall
        if not (RETRAINING_CHECK and self.retraining_sd and self.folds and o.cases >= 2):
            return 0.0
        z = NormalDist().inv_cdf(1 - o.alpha / 2)
        se = (o.ci[1] - o.ci[0]) / (2 * z)
        return z * math.sqrt(se ** 2 + 2 * self.retraining_sd ** 2 / self.folds)

    @property
    def clears_retraining(self) -> bool:
        return self.overall.mean_gain > self.retraining_margin

    @property
    def dice_losses(self) -> list[str]:
        return [c for c, cmp in self.per_class.items() if cmp.significant_loss]

    @property
    def wins(self) -> bool:
        """A significant gain on the objective, clear of the retraining noise, and no class losing Dice
        significantly (the switch rule)."""
        return self.overall.significant_gain and self.clears_retraining and not self.dice_losses

    def to_dict(self) -> dict[str, Any]:
        o = self.overall
        return {"spec": self.spec.to_dict(), "describe": self.spec.describe(), "metric": self.metric,
                "gain": o.mean_gain, "ci": list(o.ci), "p_value": o.p_value, "cases": o.cases,
                "excluded": o.excluded, "mde": o.mde, "alpha": o.alpha, "per_case": self.per_case,
                "per_class": {c: {"gain": v.mean_gain, "ci": list(v.ci), "p_value": v.p_value, "cases": v.cases}
                              for c, v in self.per_class.items()}, "metric_gains": self.metric_gains}


@dataclass
class Verdict:
    decision: str
    message: str
    metric: str
    loss: LossSpec | None = None  # the loss to switch to (switch only)
    comparison: Comparison | None = None  # the deciding (or best) candidate
    comparisons: list[Comparison] = field(default_factory=list)
    needed_cases: int | None = None
    confirm_folds: list[int] = field(default_factory=list)
    control: str = "Dice+CE"  # what the candidates were compared with (fine-tune: Dice+CE continued from the base)
    control_gap: float | None = None  # second Dice+CE training minus the first, mean paired gain on the objective
    # Candidates a training's luck decides (they beat one Dice+CE training and not the other, or gain within the
    # retraining noise), so the confirmation may take more folds (``confirm.extension_folds``) before the verdict stands.
    split: list[str] = field(default_factory=list)
    extended_from: list[int] = field(default_factory=list)  # the first confirmation folds, when a split extended them

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {"decision": self.decision, "loss": self.loss.to_dict() if self.loss else None,
                "describe": self.loss.describe() if self.loss else "Dice+CE (nnU-Net's default)",
                "metric": self.metric, "gain": c.overall.mean_gain if c else None,
                "ci": list(c.overall.ci) if c else None, "p_value": c.overall.p_value if c else None,
                "cases": c.overall.cases if c else 0, "needed_cases": self.needed_cases,
                "candidate": c.spec.to_dict() if c else None,
                "dice_change": {k: v.mean_gain for k, v in c.per_class.items()} if c else {},
                "confirm_folds": self.confirm_folds, "compared_with": self.control,
                "control_gap": self.control_gap, "split": self.split, "extended_from": self.extended_from,
                "message": self.message}


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _ci_text(cmp: PairedComparison) -> str:
    level = round(100 * (1 - cmp.alpha), 1)
    return f"{level:g} % CI {_pts(cmp.ci[0])} to {_pts(cmp.ci[1])}, Wilcoxon p={cmp.p_value:.3g}"


def compare(candidate: dict[str, dict], baseline: dict[str, dict], metric: str, spec: LossSpec,
            alpha: float = ALPHA, retraining: tuple[float, int] = (0.0, 0)) -> Comparison:
    """Pair two per-case metric tables ("fold/case" -> class -> metric -> value) on ``metric`` and on Dice.
    ``retraining``: (SD of one training's shift, folds), from ``retraining_sd``."""
    cand_obj = {k: case_objective(v, metric) for k, v in candidate.items()}
    base_obj = {k: case_objective(v, metric) for k, v in baseline.items()}
    overall = paired_comparison(cand_obj, base_obj, alpha=alpha)
    classes = sorted({c for v in list(candidate.values()) + list(baseline.values()) for c in v})
    per_class = {c: paired_comparison({k: v.get(c, {}).get("dice") for k, v in candidate.items()},
                                      {k: v.get(c, {}).get("dice") for k, v in baseline.items()},
                                      alpha=DICE_HARM_ALPHA)
                 for c in classes}
    pairs = {k: {"candidate": cand_obj[k], "baseline": base_obj[k]} for k in sorted(set(cand_obj) & set(base_obj))}
    return Comparison(spec, metric, overall, per_class, pairs, _metric_gains(candidate, baseline, metric),
                      *retraining)


def retraining_sd(first: dict[int, dict], second: dict[int, dict], metric: str) -> tuple[float, int]:
    """(SD of one training's shift, folds) from two Dice+CE trainings per fold (fold -> case -> class -> metrics).
    Each fold's mean paired difference g_f has variance 2 sd^2 (two trainings' shifts), so sd^2 = sum g_f^2 / 2F.
    A per-case test alone counts a fold's cases as independent; they share their training's luck (AxonMyelin:
    two Dice+CE seeds differ by up to 6 points on a fold)."""
    gaps = []
    for fold in sorted(set(first) & set(second)):
        d = [case_objective(second[fold][c], metric) - case_objective(first[fold][c], metric)
             for c in set(first[fold]) & set(second[fold])]
        d = [x for x in d if x == x]
        if d:
            gaps.append(sum(d) / len(d))
    if not gaps:
        return 0.0, 0
    return math.sqrt(sum(g * g for g in gaps) / (2 * len(gaps))), len(gaps)


def _metric_gains(candidate: dict[str, dict], baseline: dict[str, dict], metric: str) -> dict[str, float]:
    """Paired mean gain of each metric of a class-wise objective, over the classes judged by it (Dice: all)."""
    from autoloss import objectives

    if not objectives.is_classwise(metric):
        return {}
    wanted = objectives.parse(metric)
    names = ["dice"] + sorted({m for ms in wanted.values() for m in ms} - {"dice"})
    gains = {}
    for name in names:
        def value(case: dict) -> float:
            vals = [v.get(name, float("nan")) for c, v in case.items()
                    if name == "dice" or name in wanted.get(c, ())]
            vals = [x for x in vals if x == x]
            return sum(vals) / len(vals) if vals else float("nan")

        diffs = [value(candidate[k]) - value(baseline[k]) for k in set(candidate) & set(baseline)]
        diffs = [d for d in diffs if d == d]
        if diffs:
            gains[name] = sum(diffs) / len(diffs)
    return gains


def _gains_text(c: Comparison) -> str:
    from autoloss.objectives import METRIC_NAMES

    if not c.metric_gains:
        return ""
    order = [m for m in c.metric_gains if m != "dice"] + ["dice"]
    return " (" + ", ".join(f"{_pts(c.metric_gains[m])} {METRIC_NAMES.get(m, m)}" for m in order
                            if m in c.metric_gains) + ")"


def _retraining_text(c: Comparison, cleared: bool) -> str:
    if not c.retraining_margin:
        return ""
    text = (f"two Dice+CE trainings per fold put one training's luck at {100 * c.retraining_sd:.1f} points, so over "
            f"{c.folds} fold(s) a gain must exceed {100 * c.retraining_margin:.1f} points to be told from it")
    return f" {text[0].upper()}{text[1:]} (it does)." if cleared else f" {text}"


def _metric_text(metric: str) -> str:
    from autoloss.objectives import describe, is_classwise

    return f"objective [{describe(metric)}]" if is_classwise(metric) else metric


def decide(comparisons: list[Comparison], metric: str, confirm_folds: list[int], control: str = "Dice+CE",
           second: list[Comparison] | None = None, control_gap: PairedComparison | None = None) -> Verdict:
    """The decision from confirmation comparisons (already Bonferroni-corrected through their alpha). ``control``
    names what the candidates were paired with, in the messages. ``second``: the same candidates against a second
    Dice+CE training (next seed) on the same folds; a switch must hold against it too. ``control_gap``: the second
    Dice+CE training against the first (what retraining alone moves), quoted in the message."""
    verdict = _decide(comparisons, metric, confirm_folds, control)
    verdict.control = control
    if second is not None and verdict.decision == "switch":
        other = next((c for c in second if c.spec.key() == verdict.loss.key()), None)
        held = other is not None and other.overall.cases >= MIN_CASES and other.wins
        if not held:
            o = verdict.comparison.overall
            why = (f"{_pts(other.overall.mean_gain)} points, {_ci_text(other.overall)}" if other is not None
                   and other.overall.cases >= 2 else "no paired cases")
            verdict = Verdict("keep", f"keep Dice+CE: {verdict.loss.describe()} beat one Dice+CE training "
                              f"({_pts(o.mean_gain)} points on {o.cases} cases, {_ci_text(o)}) but not the second, "
                              f"trained on the same fold(s) {','.join(map(str, confirm_folds))} with the next seed "
                              f"({why}): its gain is within what retraining Dice+CE alone changes.",
                              metric, None, verdict.comparison, comparisons, None, confirm_folds, control)
        else:
            verdict.message += (f" Against a second Dice+CE training (next seed, same folds): "
                                f"{_pts(other.overall.mean_gain)} points ({_ci_text(other.overall)}).")
    if second is not None and verdict.decision != "inconclusive":
        verdict.split = _split(comparisons, second)
    if control_gap is not None and control_gap.cases:
        verdict.control_gap = control_gap.mean_gain
        verdict.message += (f" Two Dice+CE trainings on these folds differ by {_pts(control_gap.mean_gain)} points "
                            "(retraining noise).")
    return verdict


def _split(first: list[Comparison], second: list[Comparison]) -> list[str]:
    """Keys of the candidates a training's luck decides: they win against exactly one of the two Dice+CE
    trainings, or gain significantly case by case against one but not clear of the retraining noise."""
    other = {c.spec.key(): c for c in second}

    def counted(c: Comparison | None) -> bool:
        return c is not None and c.overall.cases >= MIN_CASES

    def wins(c: Comparison | None) -> bool:
        return counted(c) and c.wins

    def gains(c: Comparison | None) -> bool:
        return counted(c) and c.overall.significant_gain and not c.dice_losses

    return [c.spec.key() for c in first
            if wins(c) != wins(other.get(c.spec.key()))
            or (not wins(c) and (gains(c) or gains(other.get(c.spec.key()))))]


def _decide(comparisons: list[Comparison], metric: str, confirm_folds: list[int], control: str) -> Verdict:
    folds = ",".join(map(str, confirm_folds))
    if not comparisons:
        return Verdict("inconclusive", "inconclusive: no confirmation result yet; keep Dice+CE until there is one.",
                       metric, confirm_folds=confirm_folds)
    best = max(comparisons, key=lambda c: (c.wins,
                                           c.overall.mean_gain if c.overall.cases else float("-inf")))
    o = best.overall
    needed = max(c.overall.needed_cases(WORTHWHILE_GAIN) for c in comparisons)
    if o.cases < MIN_CASES:
        msg = (f"inconclusive: only {o.cases} paired case(s) on confirmation fold(s) {folds}; about {needed} "
               f"would be needed to detect a {100 * WORTHWHILE_GAIN:.0f}-point gain. Keep Dice+CE until then "
               f"(best candidate {best.spec.describe()}: {_pts(o.mean_gain)} points{_gains_text(best)}"
               + (f", {_ci_text(o)})." if o.cases >= 2 else ")."))
        return Verdict("inconclusive", msg, metric, None, best, comparisons, needed, confirm_folds)
    learned = [v["baseline"] for v in best.per_case.values() if v.get("baseline") == v.get("baseline")]
    base_mean = sum(learned) / len(learned) if learned else float("nan")
    if not base_mean >= MIN_BASELINE_SCORE:
        msg = (f"inconclusive: Dice+CE reached only {base_mean:.3f} {_metric_text(metric)} on confirmation fold(s) "
               f"{folds}: the trainings learned almost nothing at this fidelity, so the losses differ in how fast "
               f"they start, not where they end (best candidate {best.spec.describe()}: {_pts(o.mean_gain)} points, "
               f"{_ci_text(o)}). Keep Dice+CE; confirm with longer trainings (--confirm-epochs).")
        return Verdict("inconclusive", msg, metric, None, best, comparisons, needed, confirm_folds)
    if best.wins:
        dice = ", ".join(f"class {c} {_pts(v.mean_gain)}" for c, v in best.per_class.items())
        msg = (f"switch to {best.spec.describe()}: {_pts(o.mean_gain)} {_metric_text(metric)} points"
               f"{_gains_text(best)} over {control} on {o.cases} "
               f"paired cases from fold(s) {folds}, never used to select it ({_ci_text(o)}); Dice per class: "
               f"{dice}; no class loses Dice significantly." + _retraining_text(best, cleared=True))
        return Verdict("switch", msg, metric, best.spec, best, comparisons, None, confirm_folds)
    if o.significant_gain and best.dice_losses:
        why = (f"it gains {_metric_text(metric)}{_gains_text(best)} but loses Dice significantly on class(es) "
               f"{', '.join(best.dice_losses)}")
    elif o.significant_gain:
        why = (f"the best, {best.spec.describe()}, is {_pts(o.mean_gain)} points{_gains_text(best)} "
               f"({_ci_text(o)}), within what retraining moves:{_retraining_text(best, cleared=False)}")
    else:
        why = f"the best, {best.spec.describe()}, is {_pts(o.mean_gain)} points{_gains_text(best)} ({_ci_text(o)})"
    mde = f"; the smallest gain these {o.cases} cases could detect is about {100 * o.mde:.1f} points" \
        if o.mde == o.mde else ""
    beaten = "it" if control == "Dice+CE" else control
    msg = f"keep Dice+CE: no candidate beat {beaten} on {o.cases} paired cases from fold(s) {folds}: {why}{mde}."
    return Verdict("keep", msg, metric, None, best, comparisons, None, confirm_folds)


def screening_verdict(study: optuna.Study, metric: str) -> Verdict:
    """Without confirmation: `keep` when Dice+CE was not beaten even on the screening fold, else inconclusive."""
    screened = rec.screening_trials(study)
    base = rec.baseline_trial(screened)
    if not screened or base is None:
        return Verdict("inconclusive", "inconclusive: the Dice+CE baseline has not completed yet.", metric)
    best = max(screened, key=lambda t: (t.value, -t.number))
    spec = LossSpec.from_dict(best.user_attrs[rec.SPEC])
    if best.number == base.number or best.value <= base.value:
        return Verdict("keep", f"keep Dice+CE: no searched loss beat it even on the screening fold "
                               f"({base.value:.4f}).", metric)
    cmp = compare(rec.per_case(best), rec.per_case(base), metric, spec)
    return Verdict("inconclusive", f"inconclusive: {spec.describe()} led the screening ({best.value:.4f} vs Dice+CE "
                                   f"{base.value:.4f}), but that fold also selected it, so the gain is inflated; run "
                                   "the confirmation (drop --no-confirm) before switching.",
                   metric, None, cmp, [cmp])


def verdict_from_folds(candidates: list[tuple[LossSpec, dict]], control: dict, folds: list[int], metric: str,
                       second_control: dict | None = None, control_name: str = "Dice+CE",
                       baseline: LossSpec = LossSpec("DiceCE"), quote_gap: bool = True) -> Verdict:
    """The decision from per-fold tables (fold -> case -> class -> metrics) on ``folds``: each candidate paired with
    the Dice+CE training ``control`` (Bonferroni over the candidates) and, with ``second_control`` (a second Dice+CE
    training), against it too, clear of the retraining noise the two measure. The search (``compute_verdict``) and
    the sweep's replay (``benchmarks/sweep_replay.py``) decide through this one function. ``quote_gap``: put the two
    Dice+CE trainings' gap in the message (the replay, which reads decisions only, skips it)."""
    def on(table: dict) -> dict[int, dict]:
        return {f: table[f] for f in folds if f in table}

    def cases(table: dict) -> dict[str, dict]:
        return rec.merge_folds(on(table))

    alpha = ALPHA / max(1, len(candidates))
    base = cases(control)
    retraining = retraining_sd(on(control), on(second_control), metric) if second_control is not None else (0.0, 0)
    first = [compare(cases(table), base, metric, spec, alpha, retraining) for spec, table in candidates]
    second, gap = None, None
    if second_control is not None:
        other = cases(second_control)
        second = [compare(cases(table), other, metric, spec, alpha, retraining) for spec, table in candidates]
        gap = compare(other, base, metric, baseline).overall if quote_gap else None
    return decide(first, metric, folds, control_name, second, gap)


def compute_verdict(study: optuna.Study) -> Verdict:
    """The study's verdict: from its confirmation plan and trials when it has one, else from the screening."""
    settings = study.user_attrs.get(rec.SETTINGS, {})
    metric = settings.get("objective", "dice")
    plan = study.user_attrs.get(rec.CONFIRM_PLAN)
    if not plan:
        return screening_verdict(study, metric)
    folds = list(plan["folds"])
    by_key = rec.confirmation_results(study, plan)
    base_key = LossSpec.from_dict(plan["baseline"]).key()
    candidates = [LossSpec.from_dict(s) for s in plan["candidates"]]
    keys = [s.key() for s in candidates] + [rec.result_key(base_key, r) for r in range(plan.get("control_seeds", 1))]
    missing = sum(1 for k in keys for f in folds if f not in by_key.get(k, {}))
    mode = settings.get("fidelity_mode") or {}
    control = (f"the control (Dice+CE continued {mode.get('finetune_epochs')} epochs from the same base, same seed)"
               if mode.get("mode") == "finetune" else "Dice+CE")
    second = by_key.get(rec.result_key(base_key, 1), {}) if plan.get("control_seeds", 1) > 1 else None
    verdict = verdict_from_folds([(s, by_key.get(s.key(), {})) for s in candidates], by_key.get(base_key, {}), folds,
                                 metric, second, control, LossSpec.from_dict(plan["baseline"]))
    if plan.get("extended_from"):
        verdict.extended_from = list(plan["extended_from"])
        verdict.message += (f" The confirmation began on fold(s) {','.join(map(str, plan['extended_from']))}, where "
                            "one training's luck would have decided; it was extended to fold(s) "
                            f"{','.join(map(str, folds))}.")
    if missing and verdict.decision != "inconclusive":
        verdict.decision, verdict.loss = "inconclusive", None
        verdict.message = (f"inconclusive: the confirmation is unfinished or some of its trainings failed "
                           f"({missing} missing); resume the search to complete it. So far: " + verdict.message)
    return verdict
