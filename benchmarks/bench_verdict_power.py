"""What the verdict can and cannot detect: its false-switch rate (A/A) and its power, by simulation.

    python benchmarks/bench_verdict_power.py [--runs 1000] [--noise 0.03] [--cases 12 24 60]

Per-case Dice of Dice+CE and of two candidates share a case effect (some cases are hard for every loss) plus
independent run noise (SD ``--noise`` per training, about what repeated nnU-Net trainings show per case). One
candidate has a true gain g, the other none; the verdict procedure of ``autoloss.searching.verdict`` (paired
bootstrap CI and Wilcoxon, Bonferroni over the 2 candidates, no significant Dice loss) decides. g = 0 is the A/A
case: every `switch` is false. No training: the statistics alone.
"""
from __future__ import annotations

import argparse

import numpy as np


def switch_rate(rng, cases: int, gain: float, noise: float, runs: int) -> float:
    from autoloss.paired_stats import ALPHA
    from autoloss.searching.verdict import compare, decide
    from autoloss.spec import LossSpec

    def table(values):
        return {k: {"1": {"dice": v, "nsd": v}} for k, v in values.items()}

    switches = 0
    for _ in range(runs):
        case = rng.uniform(0.4, 0.9, cases)
        base = {f"1/c{i}": case[i] + rng.normal(0, noise) for i in range(cases)}
        comps = [compare(table({f"1/c{i}": case[i] + g + rng.normal(0, noise) for i in range(cases)}), table(base),
                         "dice", LossSpec("DiceTopK", {"topk.k": k}), ALPHA / 2) for k, g in ((10.0, gain), (20.0, 0.0))]
        switches += decide(comps, "dice", [1, 2]).decision == "switch"
    return switches / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--cases", type=int, nargs="+", default=[12, 24, 60])
    parser.add_argument("--gains", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.03])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"switch rate over {args.runs} simulated searches (per-case run noise SD {args.noise}); gain 0 = A/A")
    print(f"{'true gain':>10} " + " ".join(f"{n:>6} cases" for n in args.cases))
    worst_false = 0.0
    for g in args.gains:
        rates = [switch_rate(rng, n, g, args.noise, args.runs) for n in args.cases]
        if g == 0:
            worst_false = max(rates)
        print(f"{100 * g:>8.0f} pt " + " ".join(f"{r:>12.3f}" for r in rates))
    print(f"headline: false switch rate {100 * worst_false:.1f}% at worst (bar 5%)")


if __name__ == "__main__":
    main()
