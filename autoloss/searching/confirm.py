"""The confirmation stage: the top screening candidates and Dice+CE, re-trained on folds the screening never saw.

The screening picks the best of many noisy trials on one fold; judged on that same fold, the pick would look
better than it is. So the verdict (``autoloss.searching.verdict``) reads only these trainings. Every (loss, fold)
pair is one training, recorded in the study when it finishes (``records``), so a killed search resumes with the
missing ones. All losses on a fold start from the same seed (common random numbers): their paired difference
then measures the loss rather than the initialisation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import optuna

from autoloss.errors import AutolossError
from autoloss.losses import baseline_spec
from autoloss.nnunet.run import Fidelity, objective_value
from autoloss.searching import records as rec
from autoloss.spec import LossSpec

FULL_TRAINING_ITERATIONS = 1000 * 250  # nnU-Net's default schedule: 1000 epochs x 250 iterations


@dataclass(frozen=True)
class ConfirmSettings:
    enabled: bool = True
    top: int = 2  # distinct candidates confirmed besides Dice+CE
    folds: tuple[int, ...] | None = None  # None: the first `num_folds` folds the screening did not use
    num_folds: int = 2
    epochs: int | None = None  # None: the screening's epochs

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "top": self.top, "folds": list(self.folds) if self.folds else None,
                "num_folds": self.num_folds, "epochs": self.epochs}


def confirmation_folds(available: int, screen_folds: tuple[int, ...], cs: ConfirmSettings) -> list[int]:
    """The folds to confirm on; a one-line error when they overlap the screening or do not exist."""
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
    return free[: cs.num_folds]


def confirm_fidelity(screen: Fidelity, cs: ConfirmSettings, fold: int) -> Fidelity:
    return replace(screen, folds=(fold,), epochs=cs.epochs or screen.epochs)


def select_candidates(study: optuna.Study, top: int) -> list[LossSpec]:
    """The ``top`` best distinct screening specs other than Dice+CE (best first)."""
    chosen: list[LossSpec] = []
    for t in sorted(rec.screening_trials(study), key=lambda t: (-t.value, t.number)):
        spec = rec.spec_of(t)
        if spec is not None and not rec.is_baseline(spec) and spec not in chosen:
            chosen.append(spec)
        if len(chosen) == top:
            break
    return chosen


def make_plan(study: optuna.Study, folds: list[int], epochs: int, top: int) -> dict:
    """Choose the candidates now (the screening is finished) and store the plan in the study."""
    plan = {"candidates": [s.to_dict() for s in select_candidates(study, top)],
            "baseline": baseline_spec().to_dict(), "folds": folds, "epochs": epochs}
    study.set_user_attr(rec.CONFIRM_PLAN, plan)
    return plan


def pending(study: optuna.Study, plan: dict) -> list[tuple[LossSpec, int]]:
    """(spec, fold) trainings of the plan not yet recorded, Dice+CE first."""
    done = rec.done_confirmations(study, plan["epochs"])
    specs = [LossSpec.from_dict(plan["baseline"])] + [LossSpec.from_dict(s) for s in plan["candidates"]]
    return [(s, f) for f in plan["folds"] for s in specs if (s.key(), f) not in done]


def record(study: optuna.Study, spec: LossSpec, fold: int, epochs: int, outcome, objective: str) -> None:
    """Add one finished confirmation training to the study (no parameters: the sampler never models it)."""
    attrs = {rec.SPEC: spec.to_dict(), rec.SOURCE: "confirm", rec.PHASE: "confirm", rec.FOLD: fold,
             rec.EPOCHS: epochs, "seconds": outcome.result.get("seconds") if outcome.result else None,
             "node": outcome.node}
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
    confirmation trains Dice+CE and the distinct non-baseline candidates the screening can have: at most
    ``budget - 1`` (Dice+CE is always one of the budget), so ``--budget 2 --confirm-top 2`` confirms one."""
    screening = budget * len(screen.folds)
    confirmation = (planned_candidates(budget, cs) + 1) * confirm_folds if cs.enabled else 0
    iterations = (screening * screen.epochs + confirmation * (cs.epochs or screen.epochs)) \
        * screen.iterations_per_epoch
    return screening, confirmation, iterations / FULL_TRAINING_ITERATIONS


def planned_candidates(budget: int, cs: ConfirmSettings) -> int:
    """Candidates the confirmation will train besides Dice+CE when every screening trial finishes distinct."""
    return min(cs.top, max(0, budget - 1))
