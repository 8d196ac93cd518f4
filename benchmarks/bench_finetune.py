"""Fine-tune fidelity, measured with real nnU-Net trainings: each loss continued from one Dice+CE base against the
control (Dice+CE continued alike), and what a fine-tune search costs against a from-scratch one.

    python benchmarks/bench_finetune.py Dataset103_Hippocampus --long-scratch --work-dir bench_finetune

The defaults are the README's run (about 25 minutes on 2 CPU cores with the small network: a base that learned,
Dice 0.82; shorter bases of a few hundred iterations learn next to nothing and their continuations say nothing).

Everything runs through the product's code (``BaseTraining``, ``run_trial`` with a ``Continuation``), on fold 0 at
``--network`` (default small: the scaled network a CPU search uses; full: nnU-Net's own for the configuration). Resumable: each training's result is saved in
``--work-dir/results/`` and skipped when the script runs again.

1. One Dice+CE base of ``--base-epochs`` (N); every loss continued ``--finetune-epochs`` (E) from it, once per seed
   (the control, Dice+CE, with the same seeds). Per loss: validation Dice and NSD (mean over seeds, seed SD), and
   the paired per-case gain over the control of the same seed (mean over seeds and cases, its seed SD, cases
   better). Reference: Dice+CE from scratch for E epochs (seed 0), and with ``--long-scratch`` for N + E epochs.
2. A search of ``--budget`` trainings: a fine-tune search (1 base + budget continuations) against a from-scratch
   search whose trials are as short (E epochs: what a continuation costs, from nothing) and one whose trials train
   as long as base + continuation (N + E epochs: the same training state per trial). Trainings, iterations, wall
   time from the measured trainings above (the N + E trials without ``--long-scratch``: at the base's measured
   seconds per iteration, same network and loss).
Last line: the headline.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path


def parse_loss(text: str):
    """NAME or NAME:param=value,param=value."""
    from autoloss.spec import LossSpec

    name, _, params = text.partition(":")
    values = {}
    for item in filter(None, params.split(",")):
        k, _, v = item.partition("=")
        values[k] = json.loads(v)
    return LossSpec(name, values)


def cached(path: Path, make):
    if path.is_file():
        return json.loads(path.read_text())
    result = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, default=float))
    return result


def summary(r: dict) -> dict:
    """What the tables need of a training result (run_trial's or a base's)."""
    per_case = r["folds"][0]["per_case"] if "folds" in r else r["per_case"]
    return {"dice": r["metrics"]["mean"]["dice"], "nsd": r["metrics"]["mean"]["nsd"], "seconds": r["seconds"],
            "per_case": {c: _mean([m.get("dice") for m in v.values()]) for c, v in per_case.items()}}


def _mean(values):
    values = [v for v in values if v is not None and v == v]
    return sum(values) / len(values) if values else float("nan")


def _sd(values):
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="Dataset103_Hippocampus")
    parser.add_argument("--losses", nargs="+",
                        default=["DiceCE", "DiceTopK:topk.k=90", "DiceTopK:topk.k=10", "DiceFocal"])
    parser.add_argument("--long-scratch", action="store_true",
                        help="also train Dice+CE from scratch for N + E epochs (its Dice; costs N + E epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--base-epochs", type=int, default=40)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--max-cases", type=int, default=260, help="cases used (default 260: all of Hippocampus)")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--config", default="2d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--network", default="small", choices=["full", "small", "tiny"])
    parser.add_argument("--work-dir", default="bench_finetune")
    args = parser.parse_args()

    from _common import prepared_dataset

    from autoloss.losses import baseline_spec
    from autoloss.nnunet.finetune import BaseTraining, Continuation, base_folder, continuation_lr
    from autoloss.nnunet.run import Fidelity, run_trial
    from autoloss.paired_stats import paired_comparison

    work = Path(args.work_dir).resolve()
    load0 = os.getloadavg()
    t_start = time.time()
    ds, prepared = prepared_dataset(args.dataset, work, args.max_cases, args.config)
    from autoloss.fingerprinting import compute_fingerprint
    from autoloss.nnunet import scaled

    network = scaled.network_for(prepared, args.network, args.device, compute_fingerprint(ds, num_workers=2))
    prepared = scaled.apply(prepared, network, num_processes=2, log=lambda s: None)
    n, e, it = args.base_epochs, args.finetune_epochs, args.iterations
    fid = Fidelity(configuration=args.config, epochs=e, iterations_per_epoch=it,
                   val_iterations_per_epoch=args.val_iterations, folds=(0,))
    results = work / "results" / args.network  # cached trainings, per network
    base = cached(results / "base.json", lambda: summary(BaseTraining(results_root=str(work / "bases"), seed=0).run(
        prepared, replace(fid, epochs=n), work / "trials" / "base", device=args.device)))
    continuation = Continuation(str(base_folder(work / "bases", prepared)), continuation_lr(n, e))
    specs = [parse_loss(x) for x in args.losses]
    if baseline_spec() not in specs:
        specs.insert(0, baseline_spec())

    def tuned(spec, seed):
        return cached(results / f"ft_{spec.key()}_s{seed}.json", lambda: summary(run_trial(
            spec, prepared, fid, work / "trials" / f"ft_{spec.key()}_s{seed}", device=args.device, seed=seed,
            continuation=continuation)))

    runs = {spec: {seed: tuned(spec, seed) for seed in args.seeds} for spec in specs}
    scratch = {epochs: cached(results / f"scratch_{epochs}.json", lambda epochs=epochs: summary(run_trial(
        baseline_spec(), prepared, replace(fid, epochs=epochs), work / "trials" / f"scratch_{epochs}",
        device=args.device, seed=0))) for epochs in ((e, n + e) if args.long_scratch else (e,))}

    control = runs[baseline_spec()]
    print(f"{args.dataset}, {args.config}, {scaled.describe(network)}, fold 0 ({len(base['per_case'])} validation cases), "
          f"{args.device}; base Dice+CE {n} x {it} iterations: validation Dice {base['dice']:.4f}; continuations "
          f"{e} x {it} iterations at initial LR {continuation.initial_lr:.3g} (nnU-Net's tail), seeds "
          f"{', '.join(map(str, args.seeds))}")
    print("\n| loss | Dice (mean, seed SD) | NSD | gain vs control, points (mean, seed SD) | cases better | "
          "s per training |")
    print("|---|---|---|---|---|---|")
    gains = {}
    for spec, by_seed in runs.items():
        dice = [r["dice"] for r in by_seed.values()]
        seed_gains, better, pairs = [], 0, 0
        for seed, r in by_seed.items():
            cmp = paired_comparison(r["per_case"], control[seed]["per_case"])
            seed_gains.append(100 * cmp.mean_gain)
            for case, v in r["per_case"].items():
                pairs += 1
                better += v > control[seed]["per_case"][case]
        gains[spec] = (statistics.mean(seed_gains), _sd(seed_gains))
        label = "Dice+CE (control)" if spec == baseline_spec() else spec.describe()
        gain = "0 (itself)" if spec == baseline_spec() else f"{gains[spec][0]:+.2f} ({gains[spec][1]:.2f})"
        print(f"| {label} | {statistics.mean(dice):.4f} ({_sd(dice):.4f}) | "
              f"{statistics.mean(r['nsd'] for r in by_seed.values()):.4f} | {gain} | "
              f"{'' if spec == baseline_spec() else f'{better}/{pairs}'} | "
              f"{statistics.mean(r['seconds'] for r in by_seed.values()):.0f} |")
    print(f"| base: Dice+CE {n} epochs | {base['dice']:.4f} | {base['nsd']:.4f} | | | {base['seconds']:.0f} |")
    for epochs, r in scratch.items():
        print(f"| Dice+CE from scratch, {epochs} epochs | {r['dice']:.4f} | {r['nsd']:.4f} | | | {r['seconds']:.0f} |")

    b = args.budget
    tuned_s = statistics.mean(r["seconds"] for by_seed in runs.values() for r in by_seed.values())
    rows = [("fine-tune (1 base + continuations)", 1 + b, (n + b * e) * it, base["seconds"] + b * tuned_s,
             control[args.seeds[0]]["dice"]),
            (f"from scratch, {e} epochs a trial", b, b * e * it, b * scratch[e]["seconds"], scratch[e]["dice"]),
            (f"from scratch, {n + e} epochs a trial", b, b * (n + e) * it,
             b * (scratch[n + e]["seconds"] if n + e in scratch else base["seconds"] * (n + e) / n),
             scratch[n + e]["dice"] if n + e in scratch else float("nan"))]
    print(f"\nA search of budget {b} on one fold (wall time from the trainings measured above):\n")
    print("| search | trainings | iterations | wall time, min | Dice+CE's Dice in it (nan: not trained) |")
    print("|---|---|---|---|---|")
    for name, count, iterations, seconds, dice in rows:
        print(f"| {name} | {count} | {iterations} | {seconds / 60:.1f} | {dice:.4f} |")
    load1 = os.getloadavg()
    print(f"\nload average {load0[0]:.1f} at start, {load1[0]:.1f} at end; this run {(time.time() - t_start) / 60:.1f} "
          "min (cached trainings are not re-run)")
    best = max((s for s in specs if s != baseline_spec()), key=lambda s: gains[s][0])
    control_sd = _sd([r["dice"] for r in control.values()])
    print(f"headline: best continuation {best.describe()} {gains[best][0]:+.2f} Dice points over the control "
          f"(seed SD of the gain {gains[best][1]:.2f}, of the control's Dice {100 * control_sd:.2f} points); a budget-"
          f"{b} fine-tune search costs {rows[0][2] / rows[2][2]:.2f}x the iterations and {rows[0][3] / rows[2][3]:.2f}x "
          f"the wall time of a from-scratch search whose trials train as long; one of {e}-epoch trials costs "
          f"{rows[1][3] / rows[0][3]:.2f}x its wall time, but there Dice+CE reaches {rows[1][4]:.3f} (the fine-tune "
          f"control {rows[0][4]:.3f})")


if __name__ == "__main__":
    main()
