"""What a search stores in its Optuna study, named once: trial attributes, study attributes and their readers.

Screening trials are ordinary Optuna trials (asked, sampled, pruned). Confirmation trainings are recorded in the
same study with ``study.add_trial`` once they finish, with no parameters (so the sampler never models them) and
``phase = "confirm"``; one record per (loss, fold). A training killed before it finished leaves no record, so a
resumed search runs exactly the missing ones.
"""
from __future__ import annotations

import math

import optuna

from autoloss.losses import baseline_spec
from autoloss.spec import LossSpec

# trial user attributes
SPEC = "autoloss_spec"  # the LossSpec as a dict
SOURCE = "source"  # prior | sampler | memory | untried (after a repeat) | confirm | test
PHASE = "phase"  # screen (default) | confirm | repeat (a loss already screened: told its value, not trained)
REPEAT_OF = "repeat_of"  # repeat trials: the screening trial whose value they were told
FOLD = "fold"  # confirmation trials: the fold trained
EPOCHS = "confirm_epochs"  # confirmation trials: the fidelity they were trained at
REPLICATE = "replicate"  # confirmation trials: 0, or r > 0 for Dice+CE trained again with seed + r
METRICS = "metrics"  # per class {dice, nsd, ...} and "mean": the fold(s) summary
PER_CASE = "per_case"  # {fold: {case: {class: {metric: value}}}}
REASON = "reason"
CURVES = "curves"  # {fold: {mean_fg_dice, train_losses, val_losses: one value per epoch}} (nnU-Net's logger)
INTERRUPTED = "interrupted"  # killed mid-run and queued again: neither counted nor shown
SUPERSEDED = "superseded"  # was waiting when a trial was re-queued, queued again behind it: neither counted nor shown
SEED = "autoloss_seed"  # the training seed of a screening trial, kept when it is queued again
# study user attributes
SETTINGS = "autoloss_settings"
PRIOR_FLAG = "autoloss_prior_enqueued"
CONFIRM_PLAN = "autoloss_confirm_plan"  # {candidates: [spec], baseline: spec, folds, epochs, control_seeds,
#                                          extended_from: the first folds, when a split verdict added the rest}

COMPLETE = optuna.trial.TrialState.COMPLETE


def replaced(trial: optuna.trial.FrozenTrial) -> bool:
    """Interrupted or superseded: the trial was queued again under another number."""
    return bool(trial.user_attrs.get(INTERRUPTED) or trial.user_attrs.get(SUPERSEDED))


def phase(trial: optuna.trial.FrozenTrial) -> str:
    return trial.user_attrs.get(PHASE, "screen")


def spec_of(trial: optuna.trial.FrozenTrial) -> LossSpec | None:
    data = trial.user_attrs.get(SPEC)
    return LossSpec.from_dict(data) if data else None


def is_baseline(spec: LossSpec | None) -> bool:
    return spec is not None and spec == baseline_spec()


def screening_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete screening trials with a finite objective."""
    return [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,))
            if phase(t) == "screen" and t.value is not None and math.isfinite(t.value)]


def baseline_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    return next((t for t in sorted(trials, key=lambda t: t.number) if is_baseline(spec_of(t))), None)


def per_case(trial: optuna.trial.FrozenTrial) -> dict[str, dict]:
    """Per-case metrics keyed "fold/case" (a case is validated once per fold; the key keeps folds apart)."""
    return merge_folds(trial.user_attrs.get(PER_CASE) or {})


def merge_folds(by_fold: dict) -> dict[str, dict]:
    return {f"{fold}/{case}": m for fold, cases in by_fold.items() for case, m in cases.items()}


def curves_of(result: dict) -> dict[str, dict]:
    """The per-epoch curves of a training result (``run_trial``), keyed by fold."""
    return {str(f["fold"]): f["curves"] for f in result.get("folds", []) if f.get("curves")}


def pseudo_dice_curve(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Pseudo-Dice per epoch (folds one after another): the recorded curve, else the values reported to the
    pruner (which pruned trials have too)."""
    curves = trial.user_attrs.get(CURVES) or {}
    if curves:
        return [v for fold in sorted(curves, key=int) for v in curves[fold].get("mean_fg_dice", [])]
    return [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)]


def confirmation_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if phase(t) == "confirm"]


def result_key(spec_key: str, replicate: int = 0) -> str:
    """A confirmation training's key: its spec's, and for a replicate (Dice+CE with another seed) ``key#r``."""
    return spec_key if not replicate else f"{spec_key}#{replicate}"


def confirmation_results(study: optuna.Study, plan: dict) -> dict[str, dict]:
    """{result key: {fold: per-case metrics}} of the finished confirmation trainings at the plan's fidelity."""
    out: dict[str, dict] = {}
    for t in confirmation_trials(study):
        if t.state != COMPLETE or t.user_attrs.get(EPOCHS) != plan["epochs"]:
            continue
        fold = int(t.user_attrs[FOLD])
        if fold in plan["folds"]:
            cases = (t.user_attrs.get(PER_CASE) or {}).get(str(fold), {})
            out.setdefault(result_key(spec_of(t).key(), t.user_attrs.get(REPLICATE, 0)), {})[fold] = cases
    return out


def done_confirmations(study: optuna.Study, epochs: int) -> set[tuple[str, int]]:
    """(spec key, fold) of confirmation trainings already recorded at this fidelity, failed ones included (a
    failure is a result: re-running it would fail again, and the verdict then says what is missing)."""
    return {(result_key(spec_of(t).key(), t.user_attrs.get(REPLICATE, 0)), int(t.user_attrs[FOLD]))
            for t in confirmation_trials(study) if t.user_attrs.get(EPOCHS) == epochs}
