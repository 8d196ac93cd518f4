"""The real `autoloss search` (``benchmarks/sweep.py search DATASET``) held against its dataset's sweep.

Two checks of the issue: the real search's verdict must be among the replay's outcomes in at least 10 % of the
replay seeds, and each of its trainings of a grid loss must land within 2 seed-SDs of the sweep's training of that
loss on the same fold. The seed SD is a fold's objective from one training to another: from the Dice+CE seed pair,
sqrt(mean over folds of (a - b)^2 / 2). The search's copies of ``results.csv`` and ``verdict.json`` are read from
``benchmarks/results/sweep/<dataset>/search/``.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path


def fold_seed_sd(sweep, fold_objective, baseline: str) -> float:
    a, b = sweep.tables["scratch"].get(baseline, {}), sweep.tables["scratch_seed2"].get(baseline, {})
    diffs = [fold_objective(a, f, sweep.objective) - fold_objective(b, f, sweep.objective) for f in set(a) & set(b)]
    diffs = [d for d in diffs if d == d]
    return math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs))) if diffs else float("nan")


def check(sweep, folder: Path, outcomes: list[tuple], fold_objective, baseline: str,
          truth: dict | None = None) -> dict | None:
    """None when the dataset has no real search yet; else the figures (printed by the caller). ``truth`` (the
    sweep's per-loss calls, losses trained with ``--extra`` included): the real verdict's true gain and regret."""
    from autoloss.spec import LossSpec

    search = folder / "search"
    if not (search / "results.csv").is_file() or not (search / "verdict.json").is_file():
        return None
    verdict = json.loads((search / "verdict.json").read_text())["verdict"]
    extra = json.loads((folder / "meta.json").read_text()).get("extra", [])  # losses trained beside the grid
    by_describe = {LossSpec.from_dict(g["spec"]).describe(): g["label"] for g in sweep.grid + extra}
    chosen = by_describe.get(verdict.get("describe")) if verdict["decision"] == "switch" else None
    same = sum(1 for d, loss, *_ in outcomes if d == verdict["decision"] and (d != "switch" or loss == chosen))
    sd = fold_seed_sd(sweep, fold_objective, baseline)
    matched = []
    with open(search / "results.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            label = by_describe.get(row["loss"])
            if label is None or row["state"] != "complete" or not row["objective"]:
                continue
            fold = int(float(row["fold"])) if row["phase"] == "confirm" else sweep.screen_fold
            reference = fold_objective(sweep.tables["scratch"].get(label, {}), fold, sweep.objective)
            if reference == reference:
                matched.append((row["phase"], label, fold, float(row["objective"]), reference))
    worst = max((abs(v - r) / sd for *_, v, r in matched), default=float("nan")) if sd == sd and sd > 0 else \
        float("nan")
    out = {"decision": verdict["decision"], "loss": verdict.get("describe"), "replay_share": same / len(outcomes),
           "seed_sd": sd, "matched": matched, "worst_sds": worst, "off_grid": chosen is not None and chosen not in
           {g["label"] for g in sweep.grid}}
    if truth is not None and (verdict["decision"] != "switch" or chosen in truth):
        best = max((v["gain"] for v in truth.values() if v["call"] == "beats"), default=0.0)
        gain = truth[chosen]["gain"] if chosen else 0.0
        out |= {"true_gain": gain, "true_call": truth[chosen]["call"] if chosen else "keep", "best_gain": best,
                "regret": max(0.0, best - gain)}
    return out


def describe(r: dict) -> list[str]:
    lines = [f"real search: verdict {r['decision'].upper()} ({r['loss']}); the replay gives it in "
             f"{100 * r['replay_share']:.1f}% of seeds (bar >= 10%)"
             + ("; it chose a loss outside the replay's grid" if r.get("off_grid") else "")]
    if "regret" in r:
        lines.append(f"  its choice against the sweep (all 5 folds): true gain {100 * r['true_gain']:+.2f} "
                     f"({r['true_call']}); best loss trained {100 * r['best_gain']:+.2f}; regret "
                     f"{100 * r['regret']:.2f} points")
    for phase, label, fold, value, reference in r["matched"]:
        lines.append(f"  {phase:<7} {label:<18} fold {fold}: search {value:.4f} sweep {reference:.4f} "
                     f"({(value - reference) / r['seed_sd']:+.1f} seed-SDs)")
    lines.append(f"  {len(r['matched'])} trainings of grid losses; worst {r['worst_sds']:.1f} seed-SDs from the sweep "
                 f"(bar 2; fold seed SD {r['seed_sd']:.4f})")
    return lines
