"""What a CPU can train: nnU-Net's own network against the scaled ones (autoloss.nnunet.scaled), per dataset.

For each dataset and network (full = nnU-Net's own plan; small, tiny = scaled from it), in one run:
- seconds per training iteration (nnU-Net's trainer, data loading included): CPU seconds of the process on one
  thread (augmentation in-process; other jobs on a shared machine hardly inflate them) and wall seconds here, and
  the ratio to nnU-Net's;
- the iterations each network completes in ``--minutes`` (default 10), counted from its one-thread CPU seconds
  (conservative: 2 quiet cores complete at least that many; wall time here is inflated by the load);
- Dice+CE's validation Dice (nnU-Net's final validation on full images, fold 0, mean over foreground classes)
  after the iterations nnU-Net's own network completes in that time, and after the iterations the small one does;
- with ``--plateau``: the iterations the small network needs to reach 90 % of its plateau (its Dice at 4x its
  10-minute count), from independent trainings of 1/4, 1/2, 1 and 4 times that count ("not reached" is an answer).

Each training is a fresh nnU-Net training with its whole schedule (poly learning rate over its own length).
Trainings longer than ``--cap-minutes`` are not run (the table says so): nnU-Net's Montgomery network would need
hours for the small network's count. Every measurement is saved as it finishes (WORK/bench_fidelity.json) and a
re-run continues where the last stopped. The load average is printed beside every timing (the machine is shared).

    python benchmarks/bench_fidelity.py --work /tmp/fidelity Dataset102_MontgomeryLungs Dataset103_Hippocampus
    python benchmarks/bench_fidelity.py --work /tmp/fidelity --plateau Dataset102_MontgomeryLungs ...

Bars (issue 18): the small network's Dice+CE reaches validation Dice >= 0.85 on Montgomery (fold 0, >= 30 cases) and
>= 0.75 on Hippocampus within the iterations it completes in 10 minutes; its s/iteration is at least 20x lower
than nnU-Net's own 2d plan on Montgomery.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, load_average  # noqa: E402

SIZES = ("full", "small", "tiny")
TIMING_ITERATIONS = {"full": 2, "small": 15, "tiny": 15}  # per epoch, 2 epochs; the first epoch is not counted
BARS = {"Dataset102_MontgomeryLungs": 0.85, "Dataset103_Hippocampus": 0.75}


class Store:
    """Measurements by key, saved after each one, so a re-run continues."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, *key):
        return self.data.get("/".join(map(str, key)))

    def put(self, value, *key):
        self.data["/".join(map(str, key))] = value
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)
        return value


def prepared_for(dataset: str, work: Path, max_cases: int | None):
    """nnU-Net's own plan and preprocessing of the dataset's configuration (2d for 2D, else 3d_fullres)."""
    from autoloss.api import default_configuration
    from autoloss.dataset import read_dataset
    from autoloss.fingerprinting import compute_fingerprint
    from autoloss.nnunet import env
    from autoloss.nnunet.prepare import prepare

    path = Path(dataset) if Path(dataset).exists() else SHARED / dataset
    config = default_configuration(path)
    ds = read_dataset(path, max_cases=max_cases)
    fp_file = work / f"{ds.root.name}.fingerprint.json"
    if not fp_file.exists():
        fp_file.write_text(json.dumps(compute_fingerprint(ds, num_workers=2)))
    env.configure(work)
    prepared = prepare(ds, config, work, max_cases=max_cases, num_processes=2, log=lambda s: None)
    return prepared, json.loads(fp_file.read_text()), config


def train(prepared, config: str, iterations: int, folder: Path) -> dict:
    """One Dice+CE training of ``iterations`` (10 epochs when there are enough, 1 pseudo-Dice iteration each)."""
    from autoloss.losses import baseline_spec
    from autoloss.nnunet.run import Fidelity, run_trial

    epochs = max(1, min(10, iterations // 10))
    fidelity = Fidelity(configuration=config, epochs=epochs, iterations_per_epoch=max(1, iterations // epochs),
                        val_iterations_per_epoch=1)
    import torch

    from autoloss.nnunet.env import overridden

    load = load_average()
    threads = torch.get_num_threads()
    # one thread, augmentation in-process: the same training (the same transforms, seeded), and on a machine
    # other jobs oversubscribe far faster than two threads and two loader processes waiting for each other
    torch.set_num_threads(1)
    try:
        with overridden(nnUNet_n_proc_DA="0"):
            result = run_trial(baseline_spec(), prepared, fidelity, folder, seed=0)
    finally:
        torch.set_num_threads(threads)
    curves = result["folds"][0]["curves"]
    per_epoch = curves["epoch_seconds"]
    # s/iteration from the epochs' wall time (data waits included), without the first epoch's warm-up when there
    # are more; each epoch also runs one pseudo-Dice iteration
    timed = per_epoch[1:] or per_epoch
    return {"iterations": epochs * fidelity.iterations_per_epoch, "dice": result["metrics"]["mean"]["dice"],
            "s_per_iteration": sum(timed) / (len(timed) * (fidelity.iterations_per_epoch + 1)),
            "seconds": result["seconds"], "load": load}


def time_iterations(prepared, config: str, iterations: int, log: Path) -> dict:
    """Seconds per training iteration from the second of two epochs of ``iterations`` (the first carries the
    warm-ups), nnU-Net's trainer built as a search trial builds it, without the validation: wall seconds, and the
    process's CPU seconds on one thread with the augmentation in-process (nnUNet_n_proc_DA=0), which other jobs
    on a shared machine hardly inflate: on 2 quiet cores an iteration takes at most that long."""
    import contextlib

    import torch

    from autoloss.losses import baseline_spec
    from autoloss.nnunet.env import overridden
    from autoloss.nnunet.run import Fidelity, trainer_class

    fidelity = Fidelity(configuration=config, epochs=2, iterations_per_epoch=iterations, val_iterations_per_epoch=1)
    load = load_average()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no thread barriers: an oversubscribed machine's spin-waits would count as CPU time
    plans = prepared.load_plans()
    plans["continue_training"] = False

    class Timed(trainer_class(baseline_spec(), fidelity)):
        def on_train_epoch_start(self):
            self.started = (time.perf_counter(), time.process_time())
            super().on_train_epoch_start()

        def on_epoch_end(self):
            super().on_epoch_end()
            self.spent = (time.perf_counter() - self.started[0], time.process_time() - self.started[1])

    with overridden(nnUNet_results=str(log.parent / "timing"), nnUNet_n_proc_DA="0"), \
            open(log, "a") as out, contextlib.redirect_stdout(out):
        trainer = Timed(plans, prepared.configuration, 0, prepared.load_dataset_json(), torch.device("cpu"))
        trainer.disable_checkpointing = True
        trainer.logger.plot_progress_png = lambda *_: None
        try:
            trainer.run_training()
        finally:
            torch.set_num_threads(threads)
    wall, cpu = trainer.spent
    return {"s_per_iteration": wall / (iterations + 1), "cpu_s_per_iteration": cpu / (iterations + 1), "load": load}


def measure(dataset: str, args, store: Store) -> list[dict]:
    from autoloss.nnunet import scaled

    work = args.work / dataset
    work.mkdir(parents=True, exist_ok=True)
    prepared, fp, config = prepared_for(dataset, work, args.max_cases)
    nets = {size: scaled.network_for(prepared, size, "cpu", fp) for size in args.sizes}
    with open(work / "nnunet.log", "a") as out, contextlib.redirect_stdout(out):
        trained = {size: scaled.apply(prepared, net, num_processes=2, log=print) for size, net in nets.items()}
    _, val = prepared.split(0)
    print(f"\n{dataset}: {config}, {len(prepared.case_ids)} cases, fold 0 validates {len(val)}")
    for size, net in nets.items():
        print(f"  {size}: {scaled.describe(net)}")

    cpu, wall = {}, {}
    for size in nets:  # s/iteration from two short epochs each
        r = store.get(dataset, size, "cpu_timing") or store.put(
            time_iterations(trained[size], config, TIMING_ITERATIONS[size], work / "nnunet.log"),
            dataset, size, "cpu_timing")
        cpu[size], wall[size] = r["cpu_s_per_iteration"], r["s_per_iteration"]
        print(f"  {size}: {cpu[size]:.3f} CPU s/iteration, {wall[size]:.3f} s wall (load {r['load']})", flush=True)
    # The iterations a network completes in the budget on 2 quiet cores, counted conservatively: at its one-thread
    # CPU seconds (torch's second thread and parallel augmentation only make it faster).
    counts = {size: max(1, math.floor(60 * args.minutes / cpu[size])) for size in nets}
    rows = {size: {"dataset": dataset, "network": nets[size]["label"], "size": size, "cpu_s": cpu[size],
                   "wall_s": wall[size], "vs_full": cpu[size] / cpu["full"] if "full" in cpu else None,
                   "count": counts[size]} for size in nets}
    # what carries the bars first; nnU-Net's own network last (hours of wall time here)
    plan = [("small", "at_small"), ("small", "at_full"), ("tiny", "at_full"), ("tiny", "at_small"),
            ("full", "at_full")]
    for size, goal in plan:
        n = counts.get(goal[3:])
        if size not in nets or n is None:
            continue
        key = f"dice_{goal}"
        r = store.get(dataset, size, goal, n)
        if r is None and n * wall[size] > 60 * args.cap_minutes:
            rows[size][key] = f"not run (~{n * wall[size] / 3600:.1f} h here)"
            continue
        r = r or store.put(train(trained[size], config, n, work / f"{size}_{n}"), dataset, size, goal, n)
        rows[size][key] = r["dice"]
        print(f"  {size}: Dice+CE {r['dice']:.3f} after {n} iterations ({r['seconds']:.0f} s, load {r['load']})",
              flush=True)
    if args.plateau and "small" in nets:
        n = counts["small"]
        dice = {}
        for k in (4 * n, n // 4, n // 2, n):
            r = (store.get(dataset, "small", "plateau", k) or store.get(dataset, "small", "at_small", k)
                 or store.get(dataset, "small", "at_full", k))
            if r is None and k * wall["small"] > 60 * args.cap_minutes * 4:
                break
            r = r or store.put(train(trained["small"], config, k, work / f"small_{k}"), dataset, "small", "plateau", k)
            dice[k] = r["dice"]
            print(f"  small: Dice+CE {r['dice']:.3f} after {k} iterations (load {r['load']})", flush=True)
        if 4 * n in dice:
            reached = [k for k in sorted(dice) if k < 4 * n and dice[k] >= 0.9 * dice[4 * n]]
            rows["small"]["to_90_plateau"] = (f"{reached[0]} (plateau {dice[4 * n]:.3f} at {4 * n})" if reached
                                              else f"not reached by {n} (plateau {dice[4 * n]:.3f})")
        else:
            rows["small"]["to_90_plateau"] = "not run (cut: time)"
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="+", help="dataset folders or names under ../shared/datasets")
    ap.add_argument("--work", type=Path, required=True, help="where preprocessing, trainings and results go")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--cap-minutes", type=float, default=15.0, help="trainings longer than this are not run")
    ap.add_argument("--plateau", action="store_true", help="also the iterations to 90 %% of the small plateau")
    ap.add_argument("--max-cases", type=int, default=None)
    args = ap.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.pop(var, None)
    store = Store(args.work / "bench_fidelity.json")
    start, rows = time.time(), []
    print(f"bench_fidelity: {os.cpu_count()} cores, load {load_average()}, {args.minutes:g}-minute budget per network")
    for dataset in args.datasets:
        rows += measure(dataset, args, store)
    fmt = (lambda v: v if isinstance(v, str) else "" if v is None else f"{v:.3f}")
    print(f"\n| dataset | network | CPU s / iteration | wall s / iteration here | vs nnU-Net's | iterations in "
          f"{args.minutes:g} min | Dice+CE @ nnU-Net's count | Dice+CE @ small's count | to 90 % of plateau |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = "1" if r["size"] == "full" else (f"1/{1 / r['vs_full']:.0f}" if r["vs_full"] else "")
        print(f"| {r['dataset'].split('_', 1)[-1]} | {r['network']} | {r['cpu_s']:.3f} | {r['wall_s']:.3f} | {vs} | "
              f"{r['count']} | {fmt(r.get('dice_at_full'))} | {fmt(r.get('dice_at_small'))} | "
              f"{r.get('to_90_plateau', '')} |")
    print(f"({(time.time() - start) / 60:.0f} min, load now {load_average()})")
    heads = []
    for r in rows:
        if r["size"] != "small":
            continue
        name = r["dataset"].split("_", 1)[-1]
        dice = r.get("dice_at_small")
        bar = BARS.get(r["dataset"])
        text = f"{name}: Dice {fmt(dice)} after {r['count']} iterations"
        if isinstance(dice, float) and bar is not None:
            text += f" (bar {bar}: {'pass' if dice >= bar else 'miss'})"
        if r["vs_full"]:
            text += f", {1 / r['vs_full']:.0f}x fewer CPU seconds per iteration than nnU-Net's own network"
        heads.append(text)
    print("headline: the small network, " + "; ".join(heads))


if __name__ == "__main__":
    main()
