"""Can a short search tell losses apart? Noise, fidelity and the verdict, measured with real nnU-Net trainings.

    python benchmarks/bench_selection.py Dataset103_Hippocampus --losses DiceCE DiceTopK DiceFocal \
        --repeats 2 --epochs 3 --iterations 20 --long-factor 4 --max-cases 20 [--device cuda --config 2d]

Each loss is trained ``--repeats`` times (repeat r: fold r, seed r) at the screening fidelity and once per repeat
at ``--long-factor`` times the epochs. Dice+CE is also trained a second time per fold with another seed: the
seed-to-seed spread, and an A/A pair for the verdict. Printed:
- per loss: mean and SD over repeats of the mean Dice, at both fidelities;
- the seed-to-seed SD of Dice+CE next to the largest gap between losses (a gap below the noise ranks nothing);
- Kendall tau between the loss rankings at the screening and the long fidelity;
- the verdict procedure (paired per-case statistics over the repeats' folds, Bonferroni over the candidates) for
  the candidates vs Dice+CE, and for the A/A pair (Dice+CE seed b vs seed a: any `switch` is false).
Last line: the headline (A/A false switches, noise-to-gap ratio, tau).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def train(spec, prepared, fidelity, fold, seed, work: Path, device: str):
    from dataclasses import replace

    from autoloss.nnunet.run import run_trial

    fid = replace(fidelity, folds=(fold,))
    r = run_trial(spec, prepared, fid, work / f"{spec.key()}_f{fold}_s{seed}_e{fid.epochs}", device=device, seed=seed)
    per_case = {f"{fold}/{case}": m for case, m in r["folds"][0]["per_case"].items()}
    return r["metrics"]["mean"]["dice"], per_case, r["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="Dataset103_Hippocampus")
    parser.add_argument("--losses", nargs="+", default=["DiceCE", "DiceTopK", "DiceFocal"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--long-factor", type=int, default=4)
    parser.add_argument("--max-cases", type=int, default=20)
    parser.add_argument("--config", default="2d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", help="keep trainings here (default: a temporary folder)")
    args = parser.parse_args()

    from _common import prepared_dataset
    from scipy.stats import kendalltau

    from autoloss.losses import baseline_spec
    from autoloss.nnunet.run import Fidelity
    from autoloss.paired_stats import ALPHA
    from autoloss.searching.verdict import compare, decide
    from autoloss.spec import LossSpec, Schedule

    if baseline_spec().name not in args.losses:
        args.losses.insert(0, baseline_spec().name)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        _, prepared = prepared_dataset(args.dataset, work, args.max_cases, args.config)
        folds = list(range(min(args.repeats, prepared.num_folds())))
        short = Fidelity(configuration=args.config, epochs=args.epochs, iterations_per_epoch=args.iterations,
                         val_iterations_per_epoch=args.val_iterations)
        long = Fidelity(configuration=args.config, epochs=args.epochs * args.long_factor,
                        iterations_per_epoch=args.iterations, val_iterations_per_epoch=args.val_iterations)
        specs = {}
        for name in args.losses:
            term = {"DiceHD": "hd", "DiceBD": "bd"}.get(name)
            specs[name] = LossSpec(name, {}, Schedule.ramp_in(term, 0.2, 0.5) if term else None)
        dice = {(n, f): {} for n in specs for f in ("short", "long")}
        cases: dict[str, dict] = {n: {} for n in specs}
        aa_cases: dict = {}
        t0 = time.time()
        for fold in folds:
            for name, spec in specs.items():
                d, pc, s = train(spec, prepared, short, fold, fold, work / "trials", args.device)
                dice[(name, "short")][fold] = d
                cases[name].update(pc)
                d_long, _, s_long = train(spec, prepared, long, fold, fold, work / "trials", args.device)
                dice[(name, "long")][fold] = d_long
                print(f"  fold {fold} {name:<10} Dice {d:.4f} ({s:.0f} s), x{args.long_factor}: {d_long:.4f} "
                      f"({s_long:.0f} s)", flush=True)
            # Dice+CE again with another seed: the A/A pair and the seed-to-seed spread
            d2, pc2, _ = train(specs[baseline_spec().name], prepared, short, fold, 1000 + fold, work / "trials",
                               args.device)
            dice.setdefault(("DiceCE#2", "short"), {})[fold] = d2
            aa_cases.update(pc2)

        base = baseline_spec().name
        print(f"\n{len(folds)} repeat(s) (folds {folds}), {prepared.dataset_name}, {args.config}, {args.device}; "
              f"screening {args.epochs} x {args.iterations} iterations, long x{args.long_factor}; "
              f"{(time.time() - t0) / 60:.1f} min")
        print(f"{'loss':<12} {'Dice mean':>9} {'SD':>7} {'long mean':>9} {'long SD':>7}")
        means_short, means_long = [], []
        for name in specs:
            s_vals, l_vals = list(dice[(name, "short")].values()), list(dice[(name, "long")].values())
            means_short.append(statistics.fmean(s_vals))
            means_long.append(statistics.fmean(l_vals))
            sd = lambda v: statistics.stdev(v) if len(v) > 1 else float("nan")  # noqa: E731
            print(f"{name:<12} {means_short[-1]:9.4f} {sd(s_vals):7.4f} {means_long[-1]:9.4f} {sd(l_vals):7.4f}")
        seed_diffs = [dice[(base, "short")][f] - dice[("DiceCE#2", "short")][f] for f in folds]
        seed_sd = statistics.fmean(abs(x) for x in seed_diffs) / 2 ** 0.5  # |a-b|/sqrt(2) estimates one run's SD
        gap = max(means_short) - min(means_short)
        tau = kendalltau(means_short, means_long).statistic if len(specs) > 2 else float("nan")
        print(f"seed-to-seed SD of {base} (same fold, other seed): {seed_sd:.4f}; largest gap between losses: "
              f"{gap:.4f}; Kendall tau screening vs x{args.long_factor}: {tau:.2f}")

        candidates = [n for n in specs if n != base]
        alpha = ALPHA / max(1, len(candidates))
        comps = [compare(cases[n], cases[base], "dice", specs[n], alpha) for n in candidates]
        v = decide(comps, "dice", folds)
        print(f"verdict over the candidates: {v.decision.upper()}: {v.message}")
        aa = decide([compare(aa_cases, cases[base], "dice", LossSpec(base, {"ce.weight": 1.0}))], "dice", folds)
        false_switch = int(aa.decision == "switch")
        print(f"A/A ({base} seed b vs seed a): {aa.decision.upper()}: {aa.message}")
        ratio = seed_sd / gap if gap > 0 else float("inf")
        print(f"headline: A/A false switches {false_switch} of 1; seed-to-seed SD / largest loss gap = {ratio:.2f} "
              f"({seed_sd:.4f} / {gap:.4f}); Kendall tau {tau:.2f}; verdict {v.decision}")


if __name__ == "__main__":
    main()
