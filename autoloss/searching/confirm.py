"""The confirmation stage: the top screening candidates and Dice+CE, re-trained on folds the screening never saw.

The screening picks the best of many noisy trials on one fold; judged on that same fold, the pick would look
better than it is. So the verdict (``autoloss.searching.verdict``) reads only these trainings. Every (loss, fold)
pair is one training, recorded in the study when it finishes (``records``), so a killed search resumes with the
missing ones. All losses on a fold start from the same seed (common random numbers): their paired difference
then measures the loss rather than the initialisation.

Two measured refinements (``benchmarks/sweep_replay.py`` over the exhaustive sweep, README "Does the search choose
right?"): every case of one training shares that training's luck, which a per-case test cannot see. So Dice+CE is
trained a second time on each confirmation fold with the next seed (``control_seeds``), and a switch must win
against both Dice+CE trainings (``verdict``); and when folds are small, more folds are confirmed, until the
confirmation holds ``CONFIRM_CASES`` cases (at least two folds, i.e. two trainings per loss).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import optuna

from autoloss.errors import AutolossError
from autoloss.losses import baseline_spec
from autoloss.nnunet.run import Fidelity, objective_value
from autoloss.searching import records as rec
from autoloss.spec import LossSpec

FULL_TRAINING_ITERATIONS = 1000 * 250  # nnU-Net's default schedule: 1000 epochs x 250 iterations
MIN_FOLDS = 2  # trainings per loss in the confirmation: one training's luck must not decide alone
CONFIRM_CASES = 40  # confirm on more folds (when free) until this many validation cases


@dataclass(frozen=True)
class ConfirmSettings:
    enabled: bool = True
    top: int = 2  # distinct candidates confirmed besides Dice+CE
    folds: tuple[int, ...] | None = None  # None: folds the screening did not use, `num_folds` of them
    num_folds: int | None = None  # None: at least MIN_FOLDS, more until CONFIRM_CASES cases
    epochs: int | None = None  # None: the screening's epochs
    control_seeds: int = 2  # Dice+CE trainings per confirmation fold (seed, seed + 1, ...); a switch beats each
    extend: bool = True  # a split verdict (one Dice+CE training beaten, not the other) confirms on the free folds left

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "top": self.top, "folds": list(self.folds) if self.folds else None,
                "num_folds": self.num_folds, "epochs": self.epochs, "control_seeds": self.control_seeds,
                "extend": self.extend}


def confirmation_folds(available: int, screen_folds: tuple[int, ...], cs: ConfirmSettings,
                       fold_cases: Callable[[int], int] | None = None) -> list[int]:
    """The folds to confirm on; a one-line error when they overlap the screening or do not exist. Without
    ``--confirm-folds``: ``num_folds`` free folds, or (default) the first free folds that hold ``CONFIRM_CASES``
    validation cases (``fold_cases(f)``), at least ``MIN_FOLDS``."""
    if cs.folds:
        bad = [f for f in cs.folds if not 0 <= f < available]
        if bad:
            raise AutolossError(f"--confirm-folds {' '.join(map(str, bad))}: the split has folds 0..{available - 1}")
        reused = sorted(set(cs.folds) & set(screen_folds))
        if reused:
            raise AutolossError(f"--confirm-folds {' '.join(map(str, reused))} also screened: the verdict must come "
                                "from folds the screening never saw")
        return sorted(set(cs.folds))
    free = [f for f in range(available) if f not in screen_folds]
    if not free:
        raise AutolossError(f"the split has {available} fold(s), all used by the screening: screen on fewer "
                            "--folds, or use --no-confirm (whose verdict cannot be `switch`)")
    if cs.num_folds:
        return free[: cs.num_folds]
    chosen: list[int] = []
    for fold in free:
        if len(chosen) >= MIN_FOLDS and (fold_cases is None or
                                         sum(fold_cases(f) for f in chosen) >= CONFIRM_CASES):
            break
        chosen.append(fold)
    return chosen


def extension_folds(available: int, screen_folds: tuple[int, ...], folds: list[int], cs: ConfirmSettings) -> list[int]:
    """The folds a split verdict adds (``verdict.Verdict.split``: a candidate beat one Dice+CE training and not the
    other, or gained within the retraining noise, so one training's luck decides): every free fold not yet confirmed on. None when the user chose the
    folds (``--confirm-folds``, ``num_folds``), turned extension off, or trains one Dice+CE (no split to see)."""
    if not cs.extend or cs.folds or cs.num_folds or cs.control_seeds < 2:
        return []
    return [f for f in range(available) if f not in screen_folds and f not in folds]


def confirm_fidelity(screen: Fidelity, cs: ConfirmSettings, fold: int) -> Fidelity:
    return replace(screen, folds=(fold,), epochs=cs.epochs or screen.epochs)


def select_candidates(study: optuna.Study, top: int) -> list[LossSpec]:
    """The ``top`` best distinct screening specs other than Dice+CE (best first), the best of each loss first: two
    weights of one loss are nearly one hypothesis, and on the AxonMyelin tiles two Blob weights took both slots
    from Skeleton Recall, screened third and the sweep's winner. Other weights fill the slots left."""
    return pick_candidates([rec.spec_of(t) for t in sorted(rec.screening_trials(study),
                                                           key=lambda t: (-t.value, t.number))], top)


def pick_candidates(ranked: list[LossSpec | None], top: int) -> list[LossSpec]:
    """``select_candidates``'s rule on specs ranked best first (the sweep replay applies it too)."""
    ranked = [s for i, s in enumerate(ranked) if s is not None and not rec.is_baseline(s) and s not in ranked[:i]]
    best_of_each = [s for i, s in enumerate(ranked) if s.name not in {r.name for r in ranked[:i]}]
    return (best_of_each + [s for s in ranked if s not in best_of_each])[:top]


def make_plan(study: optuna.Study, folds: list[int], epochs: int, top: int, seeds: int = 1) -> dict:
    """Choose the candidates now (the screening is finished) and store the plan in the study."""
    candidates = select_candidates(study, top)
    plan = {"candidates": [s.to_dict() for s in candidates], "baseline": baseline_spec().to_dict(), "folds": folds,
            "epochs": epochs, "control_seeds": control_seeds(len(candidates), seeds)}
    earlier = study.user_attrs.get(rec.CONFIRM_PLAN) or {}
    if earlier.get("extended_from") == list(folds):  # a resumed search keeps the folds its split verdict added
        plan["folds"], plan["extended_from"] = earlier["folds"], earlier["extended_from"]
    study.set_user_attr(rec.CONFIRM_PLAN, plan)
    return plan


def extended(study: optuna.Study) -> bool:
    return bool((study.user_attrs.get(rec.CONFIRM_PLAN) or {}).get("extended_from"))


def describe_candidates(study: optuna.Study, keys: list[str]) -> str:
    specs = [LossSpec.from_dict(s) for s in (study.user_attrs.get(rec.CONFIRM_PLAN) or {}).get("candidates", [])]
    return ", ".join(s.describe() for s in specs if s.key() in keys) or "a candidate"


def extend_plan(study: optuna.Study, more: list[int]) -> dict:
    """Add ``more`` folds to the stored plan (once); ``pending`` then lists their trainings."""
    plan = dict(study.user_attrs[rec.CONFIRM_PLAN])
    plan["extended_from"] = list(plan["folds"])
    plan["folds"] = sorted(set(plan["folds"]) | set(more))
    study.set_user_attr(rec.CONFIRM_PLAN, plan)
    return plan


def pending(study: optuna.Study, plan: dict) -> list[tuple[LossSpec, int, int]]:
    """(spec, fold, replicate) trainings of the plan not yet recorded, Dice+CE first; replicate r > 0 is Dice+CE
    trained again with seed + r."""
    done = rec.done_confirmations(study, plan["epochs"])
    base = LossSpec.from_dict(plan["baseline"])
    specs = [(base, 0)] + [(LossSpec.from_dict(s), 0) for s in plan["candidates"]] + \
        [(base, r) for r in range(1, plan.get("control_seeds", 1))]
    return [(s, f, r) for f in plan["folds"] for s, r in specs if (rec.result_key(s.key(), r), f) not in done]


def record(study: optuna.Study, spec: LossSpec, fold: int, epochs: int, outcome, objective: str,
           replicate: int = 0) -> None:
    """Add one finished confirmation training to the study (no parameters: the sampler never models it)."""
    attrs = {rec.SPEC: spec.to_dict(), rec.SOURCE: "confirm", rec.PHASE: "confirm", rec.FOLD: fold,
             rec.EPOCHS: epochs, rec.REPLICATE: replicate,
             "seconds": outcome.result.get("seconds") if outcome.result else None, "node": outcome.node}
    if outcome.state == "complete":
        folds = outcome.result["folds"]
        attrs[rec.METRICS] = outcome.result["metrics"]
        attrs[rec.PER_CASE] = {str(f["fold"]): f["per_case"] for f in folds}
        attrs[rec.CURVES] = rec.curves_of(outcome.result)
        value = objective_value(outcome.result["metrics"], objective)
        trial = optuna.trial.create_trial(state=rec.COMPLETE, value=value if value == value else 0.0,
                                          user_attrs=attrs)
    else:
        attrs[rec.REASON] = outcome.reason or outcome.state
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs)
    study.add_trial(trial)


def planned_cost(budget: int, screen: Fidelity, cs: ConfirmSettings, confirm_folds: int) -> tuple[int, int, float]:
    """(screening trainings, confirmation trainings, their total in units of one full nnU-Net training). The
    confirmation trains Dice+CE (``control_seeds`` times) and the distinct non-baseline candidates: at most
    ``budget - 1`` (Dice+CE is always one of the budget), so ``--budget 2 --confirm-top 2`` confirms one."""
    screening = budget * len(screen.folds)
    candidates = planned_candidates(budget, cs)
    confirmation = (candidates + control_seeds(candidates, cs.control_seeds)) * confirm_folds if cs.enabled else 0
    iterations = (screening * screen.epochs + confirmation * (cs.epochs or screen.epochs)) \
        * screen.iterations_per_epoch
    return screening, confirmation, iterations / FULL_TRAINING_ITERATIONS


def control_seeds(candidates: int, cs_seeds: int) -> int:
    """Dice+CE trainings per confirmation fold: ``cs_seeds``, but one when no candidate is held against them."""
    return cs_seeds if candidates else 1


def control_label(seeds: int) -> str:
    return f"Dice+CE ({seeds} seeds)" if seeds > 1 else "Dice+CE"


def planned_candidates(budget: int, cs: ConfirmSettings) -> int:
    """Candidates the confirmation will train besides Dice+CE when every screening trial finishes distinct."""
    return min(cs.top, max(0, budget - 1))
