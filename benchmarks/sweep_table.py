"""One dataset's exhaustive sweep as a table, and the truth read from it.

``benchmarks/sweep.py`` writes one folder per dataset (``cases.csv``: one row per training, validation case and
class with its metrics; ``meta.json``: the objective, the grid of LossSpecs in the prior's order, the confirmation
folds); ``load_sweep`` reads it back as per-case tables by arm, loss and fold, and ``truth`` gives each grid loss's
paired gain over Dice+CE on every case. The replay (``sweep_replay``), the records (``sweep_records``) and the real
search's check (``sweep_search_check``) read the sweep through this module.
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "benchmarks" / "results" / "sweep"
BASELINE = "DiceCE"


@dataclass
class Sweep:
    """One dataset's sweep: per arm, loss key and fold, the per-case metric tables ({case: {class: {metric: v}}})."""

    name: str
    objective: str
    grid: list[dict]  # {"label", "spec"} in the prior's order (Dice+CE first)
    confirm_folds: list[int]
    screen_fold: int = 0
    extend: bool = True  # the product's extension of a split confirmation (``--no-extend``: the rule before)
    tables: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))  # arm -> key -> fold -> {}
    seeds: dict = field(default_factory=dict)  # (arm, key, fold) -> seed

    def folds(self, arm: str, key: str) -> list[int]:
        return sorted(self.tables[arm][key])


def load_sweep(folder: Path) -> Sweep:
    meta = json.loads((folder / "meta.json").read_text())
    sweep = Sweep(meta["dataset"], meta["objective"], meta["grid"], meta["confirm_folds"], meta.get("screen_fold", 0))
    if not (folder / "cases.csv").exists():  # begun: planned and prepared, no training finished yet
        return sweep
    with open(folder / "cases.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            arm, key, fold = row["arm"], row["loss"], int(row["fold"])
            metrics = {m: float(v) for m, v in row.items() if m not in ("arm", "loss", "fold", "seed", "case", "class")
                       and v not in ("", None)}
            sweep.tables[arm][key].setdefault(fold, {}).setdefault(row["case"], {})[row["class"]] = metrics
            sweep.seeds[(arm, key, fold)] = int(row["seed"])
    return sweep


def product_folds(sweep: Sweep) -> list[int]:
    """The confirmation folds the product picks for this split (``autoloss.searching.confirm``): from the Dice+CE
    table's fold sizes, screening on ``screen_fold``."""
    from autoloss.searching.confirm import ConfirmSettings, confirmation_folds

    base = sweep.tables["scratch"].get(BASELINE, {})
    return confirmation_folds(5, (sweep.screen_fold,), ConfirmSettings(), lambda f: len(base.get(f, {})))


def common_folds(sweep: Sweep) -> list[int]:
    """The folds every grid loss was trained on from scratch; the replay and the truth use these only (a sweep in
    progress is read on the folds it has finished, once they hold the screening and confirmation folds)."""
    labels = [g["label"] for g in sweep.grid]
    if not all(label in sweep.tables["scratch"] for label in labels):
        return []
    return sorted(set.intersection(*(set(sweep.tables["scratch"][label]) for label in labels)))


def restrict(sweep: Sweep, folds: list[int]) -> None:
    for arm in list(sweep.tables):
        for key in list(sweep.tables[arm]):
            sweep.tables[arm][key] = {f: v for f, v in sweep.tables[arm][key].items() if f in folds}


def merged(table_by_fold: dict, folds) -> dict:
    return {f"{f}/{c}": v for f in folds for c, v in table_by_fold.get(f, {}).items()}


def spec_key(spec: dict) -> str:
    from autoloss.spec import LossSpec

    return LossSpec.from_dict(spec).key()


def labels_by_key(specs: dict[str, dict]) -> dict[str, str]:
    return {spec_key(s): label for label, s in specs.items()}


def truth(sweep: Sweep, arm: str = "scratch") -> dict[str, dict]:
    """Per grid loss: paired gain over Dice+CE on every case its trainings validated (objective and Dice), the
    case-level call, and the training-aware call (``trained_call``): the gain must also clear the retraining noise
    the Dice+CE seed pair measures. A loss trained twice (``sweep.py --seed2-losses``) is judged there on the mean
    of its two trainings against the mean of Dice+CE's two (its ``replication``: seed 1 against seed 1)."""
    from autoloss.searching import verdict

    # the training-aware call is the truth's, whatever rule a replay measures (``--no-retraining-check``)
    rule, verdict.RETRAINING_CHECK = verdict.RETRAINING_CHECK, True
    try:
        return _truth(sweep, arm)
    finally:
        verdict.RETRAINING_CHECK = rule


def _truth(sweep: Sweep, arm: str) -> dict[str, dict]:
    from autoloss.nnunet.run import case_objective
    from autoloss.paired_stats import paired_comparison
    from autoloss.searching import verdict
    from autoloss.spec import LossSpec

    base = sweep.tables[arm][BASELINE]
    pair = sweep.tables["scratch_seed2"].get(BASELINE, {})
    out = {}
    for key, by_fold in sweep.tables[arm].items():
        if key == BASELINE:
            continue
        folds = sorted(set(by_fold) & set(base))
        cand, ref = merged(by_fold, folds), merged(base, folds)
        # the product's own comparison (``verdict.compare``) and switch rule on every case: a significant gain on
        # the objective and no class losing Dice significantly; a gain that costs a class's Dice "trades"
        # the training-level noise the Dice+CE seed pair measures, over these folds (one training per loss each):
        # the per-case interval cannot see it; ``clears`` says whether the gain exceeds it (the product's check)
        retraining = verdict.retraining_sd({f: base[f] for f in folds}, {f: pair[f] for f in folds if f in pair},
                                           sweep.objective)
        cmp = verdict.compare(cand, ref, sweep.objective, LossSpec(key), retraining=retraining)
        obj = cmp.overall
        dice = paired_comparison({k: case_objective(v, "dice") for k, v in cand.items()},
                                 {k: case_objective(v, "dice") for k, v in ref.items()})
        dice_losses = {c: cmp.per_class[c].mean_gain for c in cmp.dice_losses}
        # training-level check: a case-level test counts a fold's cases as independent, but they share one
        # training's luck; against the mean of the Dice+CE seed pair (where there is one) per fold
        won = sum(1 for f in folds if fold_objective(by_fold, f, sweep.objective) > np.mean(
            [fold_objective(base, f, sweep.objective)] + ([fold_objective(pair, f, sweep.objective)] if f in pair
                                                            else [])))
        out[key] = {"gain": obj.mean_gain, "ci": obj.ci, "p": obj.p_value, "cases": obj.cases, "folds": folds,
                    "folds_won": won, "dice_losses": dice_losses,
                    "retraining_margin": cmp.retraining_margin, "clears_retraining": cmp.clears_retraining,
                    "dice_gain": dice.mean_gain, "dice_ci": dice.ci, "dice_p": dice.p_value,
                    "call": call(cmp, training_aware=False), "trained_call": call(cmp, training_aware=True),
                    "trained_gain": obj.mean_gain}
        second = sweep.tables["scratch_seed2"].get(key, {})
        if folds and set(folds) <= set(second) and set(folds) <= set(pair):
            rep = verdict.compare(merged(second, folds), merged(pair, folds), sweep.objective, LossSpec(key))
            # each side the mean of two trainings: one training's shift variance halves on both sides
            two = verdict.compare(averaged(by_fold, second, folds), averaged(base, pair, folds), sweep.objective,
                                  LossSpec(key), retraining=(retraining[0] / np.sqrt(2), retraining[1]))
            out[key] |= {"replication": {"gain": rep.overall.mean_gain, "ci": rep.overall.ci,
                                         "p": rep.overall.p_value},
                         "two_trainings": {"gain": two.overall.mean_gain, "ci": two.overall.ci,
                                           "p": two.overall.p_value, "retraining_margin": two.retraining_margin,
                                           "dice_losses": {c: two.per_class[c].mean_gain for c in two.dice_losses}},
                         "trained_call": call(two, training_aware=True), "trained_gain": two.overall.mean_gain}
    return out


def call(cmp, training_aware: bool) -> str:
    """beats / trades (a gain that costs a class's Dice) / ties / loses; ``training_aware``: a gain or loss within
    the retraining margin ties."""
    o = cmp.overall
    if o.significant_gain and (cmp.clears_retraining or not training_aware):
        return "trades" if cmp.dice_losses else "beats"
    if o.significant_loss and (-o.mean_gain > cmp.retraining_margin or not training_aware):
        return "loses"
    return "ties"


def averaged(first_by_fold: dict, second_by_fold: dict, folds) -> dict:
    """Per case, class and metric, the mean of two trainings' values ("fold/case" keys, as ``merged``)."""
    out = {}
    for f in folds:
        for case, classes in first_by_fold.get(f, {}).items():
            other = second_by_fold.get(f, {}).get(case)
            if other is None:
                continue
            out[f"{f}/{case}"] = {c: {m: (v + other[c][m]) / 2 for m, v in ms.items() if m in other.get(c, {})}
                                  for c, ms in classes.items() if c in other}
    return out


def truth_fields(training_aware: bool) -> tuple[str, str]:
    """The truth row's (call, gain) fields: case-level, or training-aware."""
    return ("trained_call", "trained_gain") if training_aware else ("call", "gain")


def best_true_gain(t: dict[str, dict], training_aware: bool = False) -> tuple[str | None, float]:
    """The truth's best winner and its gain (None, 0 where none beats Dice+CE): by the case-level call, or by the
    training-aware one (its gain from two trainings where the loss has them)."""
    field, gain = truth_fields(training_aware)
    winners = {k: v[gain] for k, v in t.items() if v[field] == "beats"}
    if not winners:
        return None, 0.0
    k = max(winners, key=winners.get)
    return k, winners[k]


def fold_objective(table_by_fold: dict, fold: int, objective: str) -> float:
    from autoloss.nnunet.run import case_objective

    vals = [case_objective(v, objective) for v in table_by_fold.get(fold, {}).values()]
    vals = [x for x in vals if x == x]
    return float(np.mean(vals)) if vals else float("nan")

