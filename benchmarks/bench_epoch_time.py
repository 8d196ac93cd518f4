"""Trainer-level cost of the loader-made skeleton: epoch time of the Skeleton Recall trainer against the Dice+CE
trainer, same dataset, fidelity, seed and data-loader process count, plus the skeleton's cost per sample.

    python benchmarks/bench_epoch_time.py [--dataset Dataset101_ISBIMembrane] [--epochs 3] [--iterations 10]

Epoch time is nnU-Net's own (epoch start to end: training and pseudo-Dice iterations, data waits included);
the first epoch (start-up) is dropped. Bar (issue 10): Skeleton Recall within +15 % of Dice+CE. The skeleton
cost is ``tubed_skeleton`` on label crops of the configuration's patch size, one process, the work each
augmentation worker does per sample.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="Dataset103_Hippocampus")
    parser.add_argument("--max-cases", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--val-iterations", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="nnUNet_n_proc_DA for every trainer")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--losses", nargs="+", default=["DiceCE", "DiceCE+SkelRecall"])
    parser.add_argument("--skeleton-only", action="store_true", help="only the per-sample skeleton cost")
    args = parser.parse_args()
    os.environ["nnUNet_n_proc_DA"] = str(args.workers)

    import numpy as np

    from _common import prepared_dataset

    from autoloss.dataset import read_label
    from autoloss.losses.targets import tubed_skeleton
    from autoloss.nnunet.run import Fidelity, run_trial
    from autoloss.spec import LossSpec

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ds, prepared = prepared_dataset(args.dataset, work, args.max_cases)
        patch = prepared.load_plans()["configurations"]["2d"]["patch_size"]
        fid = Fidelity(configuration="2d", epochs=args.epochs, iterations_per_epoch=args.iterations,
                       val_iterations_per_epoch=args.val_iterations)
        print(f"{args.dataset}, 2d patch {patch}, {args.epochs} epochs x {args.iterations} iterations, "
              f"{args.workers} data-loader processes, {args.device}")
        print(f"{'trainer':<20} {'epoch s':>8} {'vs DiceCE':>10}")
        epoch = {"DiceCE": float("nan")}
        for name in [] if args.skeleton_only else args.losses:
            r = run_trial(LossSpec(name), prepared, fid, work / "trials" / name, device=args.device, seed=0)
            times = r["folds"][0]["curves"]["epoch_seconds"][1:] or r["folds"][0]["curves"]["epoch_seconds"]
            epoch[name] = statistics.median(times)
            print(f"{name:<20} {epoch[name]:8.2f} {epoch[name] / epoch['DiceCE']:9.2f}x")

        crops = []
        for case in ds.cases[: args.max_cases]:
            label, _ = read_label(case, ds)
            label = np.squeeze(np.asarray(label))
            while label.ndim > len(patch):  # a 2d configuration trains on slices: take the middle one
                label = label[label.shape[0] // 2]
            crops.append(np.ascontiguousarray(label[tuple(slice(0, p) for p in patch)]))
        tubed_skeleton(crops[0])
        start = time.perf_counter()
        for crop in crops:
            tubed_skeleton(crop)
        per_sample = (time.perf_counter() - start) / len(crops) * 1e3
        print(f"tubed skeleton per sample ({crops[0].shape}): {per_sample:.2f} ms in a loader worker")
        ratio = epoch.get("DiceCE+SkelRecall", float("nan")) / epoch["DiceCE"]
        print(f"headline: Skeleton Recall epoch time {100 * (ratio - 1):+.1f}% vs Dice+CE (bar +15%), "
              f"skeleton {per_sample:.2f} ms per sample in the loader")
