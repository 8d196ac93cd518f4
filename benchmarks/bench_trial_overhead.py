"""Per-trial overhead of `autoloss search`: the share of a trial's wall time that is neither training/validation
iterations nor the final validation (trainer set-up, data loader start, checkpoints, logging, metrics).

    python benchmarks/bench_trial_overhead.py [--dataset Dataset103_Hippocampus] [--epochs 5] [--iterations 25]

Preprocessing is done once before the trials (as in a study) and not counted. Bar: under 10 % at >= 5 epochs.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="Dataset103_Hippocampus")
    parser.add_argument("--max-cases", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--losses", nargs="+", default=["DiceCE", "DiceFocal", "DiceHD"])
    args = parser.parse_args()

    from _common import prepared_dataset

    from autoloss.nnunet.run import Fidelity, run_trial
    from autoloss.spec import LossSpec, Schedule

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _, prepared = prepared_dataset(args.dataset, work, args.max_cases)
        fid = Fidelity(configuration="2d", epochs=args.epochs, iterations_per_epoch=args.iterations,
                       val_iterations_per_epoch=args.val_iterations)
        print(f"{'loss':<12} {'total s':>8} {'steps s':>8} {'valid s':>8} {'overhead s':>10} {'share':>7}")
        shares = []
        for name in args.losses:
            sched = Schedule.ramp_in("hd", 0.2, 0.5) if name == "DiceHD" else None
            r = run_trial(LossSpec(name, {}, sched), prepared, fid, work / "trials" / name, device=args.device)
            share = r["overhead_seconds"] / r["seconds"]
            shares.append(share)
            print(f"{name:<12} {r['seconds']:8.1f} {r['step_seconds']:8.1f} {r['validation_seconds']:8.1f} "
                  f"{r['overhead_seconds']:10.1f} {100 * share:6.1f}%")
        print(f"headline: per-trial overhead {100 * max(shares):.1f}% of a trial at worst "
              f"({args.epochs} epochs x {args.iterations} iterations, {args.device}; bar 10%)")
