"""Trials per hour with 1 and with N Ray workers on this machine, in the same run (one thread per trial).

    python benchmarks/bench_ray_workers.py [--workers 2] [--budget 4]

Each configuration runs a fresh search of `--budget` tiny trials on the same preprocessed data, every trial capped at
one CPU thread (--cpus-per-trial 1): 1 worker is autoloss's default in-process executor, N workers the Ray executor
on a local cluster. Throughput is measured over the trials' own span (Ray's start-up, paid once per search, is in
the wall column). Bar: N workers give at least 0.8 N times the trials per hour of one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="Dataset103_Hippocampus")
    parser.add_argument("--max-cases", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from _common import SHARED, prepared_dataset

    from autoloss.nnunet.run import Fidelity
    from autoloss.searching.runner import SearchConfig, run_search

    os.environ.setdefault("nnUNet_n_proc_DA", "0")  # one thread per trial: augmentation in the trial's process
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        ds, _ = prepared_dataset(args.dataset, base, args.max_cases)
        rows = []
        for workers in (1, args.workers):
            work = Path(tmp) / f"w{workers}"
            shutil.copytree(base / "nnunet", work / "nnunet", symlinks=True)
            cfg = SearchConfig(dataset=str(ds.root), budget=args.budget, work_dir=work, device=args.device,
                               max_cases=args.max_cases, pruner="none", workers=workers, seed=0, cpus_per_trial=1,
                               fidelity=Fidelity(configuration="2d", epochs=args.epochs,
                                                 iterations_per_epoch=args.iterations, val_iterations_per_epoch=1))
            start = time.time()
            study = run_search(cfg, log=lambda s: None)
            trials = [t for t in study.get_trials() if t.state.is_finished() and t.user_attrs.get("started")]
            # throughput over the trials' own span (Ray start-up excluded: it is paid once per search)
            span = max(t.user_attrs["ended"] for t in trials) - min(t.user_attrs["started"] for t in trials)
            busy = sum(t.user_attrs["ended"] - t.user_attrs["started"] for t in trials)
            cpu = sum(t.user_attrs.get("cpu_seconds", 0.0) for t in trials)
            rows.append((workers, len(trials), span, 3600 * len(trials) / span, time.time() - start, cpu / busy))
        print(f"{'workers':>7} {'trials':>6} {'span s':>8} {'trials/h':>9} {'wall s':>8} {'cores/trial':>11}")
        for w, n, span, rate, wall, cores in rows:
            print(f"{w:>7} {n:>6} {span:8.1f} {rate:9.1f} {wall:8.1f} {cores:11.2f}")
        ratio = rows[1][3] / rows[0][3]
        print(f"headline: {args.workers} workers give {ratio:.2f}x the trials per hour of 1 "
              f"(bar {0.8 * args.workers:.1f}x, {os.cpu_count()} cores, {args.device})")
