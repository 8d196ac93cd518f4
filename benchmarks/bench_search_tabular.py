"""Search efficiency on a tabular benchmark built from the Loss Odyssey results table.

The objective of a trial is the table's DSC for the sampled loss on one task (liver, liver tumour, pancreas,
multi-organ). For each task and seed we count the trials until the task's best loss is first tried, for:
  prior   - autoloss's prior (from the task's reference fingerprint) enqueued first, then TPE as in a real study
  tpe     - TPE with Optuna's defaults, no prior
  random  - random search
A search that never finds the best within the budget counts as budget + 1. Caveat: the reference fingerprints
are approximate estimates (fingerprints/loss_odyssey_tasks.json), and the prior's rules cite this same table.

    python benchmarks/bench_search_tabular.py [--seeds 20] [--budget 20]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import optuna

from autoloss.prior import TABLE_NAMES, recommend_from_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def load_table() -> tuple[dict[str, dict[str, float]], dict]:
    with open(ROOT / "fingerprints" / "loss_odyssey_results.csv") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [c[: -len("_dsc")] for c in rows[0] if c.endswith("_dsc")]
    table = {t: {TABLE_NAMES.get(r["loss"], r["loss"]): float(r[f"{t}_dsc"]) for r in rows} for t in tasks}
    fps = json.loads((ROOT / "fingerprints" / "loss_odyssey_tasks.json").read_text())["tasks"]
    return table, fps


def trials_to_best(method: str, scores: dict[str, float], fingerprint: dict, seed: int, budget: int) -> int:
    losses = sorted(scores)
    best = max(scores, key=scores.get)
    if method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif method == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        prior = [r.spec.name for r in recommend_from_fingerprint(fingerprint, top=4)]
        startup = max(2, min(5, budget // 4))  # as autoloss.searching.study.open_study
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(prior) + startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if method == "prior":
        for name in prior:
            study.enqueue_trial({"loss": name}, skip_if_exists=True)
    for i in range(budget):
        trial = study.ask()
        name = trial.suggest_categorical("loss", losses)
        study.tell(trial, scores[name])
        if name == best:
            return i + 1
    return budget + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=20)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table, fps = load_table()
    methods = ("prior", "tpe", "random")
    results: dict[str, dict[str, list[int]]] = {m: {} for m in methods}
    print(f"{'task':<12} {'best loss':<10} " + " ".join(f"{m:>14}" for m in methods))
    for task, scores in table.items():
        for m in methods:
            results[m][task] = [trials_to_best(m, scores, fps[task]["fingerprint"], s, args.budget)
                                for s in range(args.seeds)]
        best = max(scores, key=scores.get)
        cells = [f"{statistics.mean(results[m][task]):6.2f} ({sum(v <= args.budget for v in results[m][task])}"
                 f"/{args.seeds})" for m in methods]
        print(f"{task:<12} {best:<10} " + " ".join(f"{c:>14}" for c in cells))
    means = {m: statistics.mean(v for task in results[m].values() for v in task) for m in methods}
    print(f"{'mean':<23} " + " ".join(f"{means[m]:>14.2f}" for m in methods))
    print("(trials until the task's best loss is first tried; in brackets: seeds that found it within "
          f"{args.budget} trials)")
    print(f"headline: prior-seeded search finds the best loss in {means['prior']:.2f} trials on average vs "
          f"{means['tpe']:.2f} for TPE ({means['tpe'] / means['prior']:.1f}x) and {means['random']:.2f} for random "
          f"({means['random'] / means['prior']:.1f}x), budget {args.budget}, {args.seeds} seeds x 4 tasks")


if __name__ == "__main__":
    main()
