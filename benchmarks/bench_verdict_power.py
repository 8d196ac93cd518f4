"""What the verdict can and cannot detect: its false-switch rate (A/A) and its power, by simulation.

    python benchmarks/bench_verdict_power.py [--runs 1000] [--noise 0.03] [--cases 12 24 60]
                                             [--training-sd 0.01 --folds 2 --control-seeds 2]

Per-case Dice of Dice+CE and of two candidates share a case effect (some cases are hard for every loss) plus
independent run noise (SD ``--noise`` per training, about what repeated nnU-Net trainings show per case) and, with
``--training-sd``, a shift shared by all the cases one training validates (the cases split evenly into ``--folds``
confirmation folds, one training per loss and fold: the sweep measured this on ISBI, 1 point). One candidate has a
true gain g, the other none; the verdict procedure of ``autoloss.searching.verdict`` (paired bootstrap CI and
Wilcoxon, Bonferroni over the 2 candidates, no significant Dice loss, and with ``--control-seeds 2`` the same
against a second Dice+CE training) decides. g = 0 is the A/A case: every `switch` is false. No training: the
statistics alone.
"""
from __future__ import annotations

import argparse

import numpy as np


def switch_rate(rng, cases: int, gain: float, noise: float, runs: int, training_sd: float = 0.0, folds: int = 2,
                control_seeds: int = 1) -> float:
    from autoloss.searching.verdict import verdict_from_folds
    from autoloss.spec import LossSpec

    fold_of = [i % folds for i in range(cases)]

    def training(case, g):  # one loss trained once per fold: a shift per fold, noise per case; fold -> case -> ...
        shift = rng.normal(0, training_sd, folds) if training_sd else np.zeros(folds)
        out: dict = {}
        for i, v in enumerate(case + g + shift[fold_of] + rng.normal(0, noise, cases)):
            out.setdefault(fold_of[i], {})[f"c{i}"] = {"1": {"dice": v, "nsd": v}}
        return out

    specs = [LossSpec("DiceTopK", {"topk.k": 10.0}), LossSpec("DiceTopK", {"topk.k": 20.0})]
    switches = 0
    for _ in range(runs):
        case = rng.uniform(0.4, 0.9, cases)
        cands = [training(case, gain), training(case, 0.0)]
        controls = [training(case, 0.0) for _ in range(control_seeds)]
        # the product's decision, with its retraining check where Dice+CE was trained twice
        v = verdict_from_folds(list(zip(specs, cands)), controls[0], list(range(folds)), "dice",
                               controls[1] if control_seeds > 1 else None, quote_gap=False)
        switches += v.decision == "switch"
    return switches / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--cases", type=int, nargs="+", default=[12, 24, 60])
    parser.add_argument("--gains", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.03])
    parser.add_argument("--training-sd", type=float, default=0.0, help="shift per training (all its cases)")
    parser.add_argument("--folds", type=int, default=2, help="confirmation folds (one training per loss each)")
    parser.add_argument("--control-seeds", type=int, default=1, choices=(1, 2), help="Dice+CE trainings per fold")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"switch rate over {args.runs} simulated searches (per-case run noise SD {args.noise}, training shift SD "
          f"{args.training_sd}, {args.folds} folds, {args.control_seeds} Dice+CE training(s) a fold); gain 0 = A/A")
    print(f"{'true gain':>10} " + " ".join(f"{n:>6} cases" for n in args.cases))
    worst_false = 0.0
    for g in args.gains:
        rates = [switch_rate(rng, n, g, args.noise, args.runs, args.training_sd, args.folds, args.control_seeds)
                 for n in args.cases]
        if g == 0:
            worst_false = max(rates)
        print(f"{100 * g:>8.0f} pt " + " ".join(f"{r:>12.3f}" for r in rates))
    print(f"headline: false switch rate {100 * worst_false:.1f}% at worst (bar 5%)")


if __name__ == "__main__":
    main()
