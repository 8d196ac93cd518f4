"""The exhaustive sweep (the truth the search is measured against): every loss of a regime's grid trained on every
fold, at the learning CPU fidelity (the scaled small network), one training at a time, resumable.

    python benchmarks/sweep.py train [DATASET ...] [--work /work/sweep_work] [--arms scratch seed2 long finetune]
                                     [--folds 0 1 2] [--extra LABEL=SPEC_JSON ...] [--seed2-losses LABEL ...]
    python benchmarks/sweep.py search DATASET [--budget 8]     # the real `autoloss search` once, on the same data
    python benchmarks/sweep.py status

Each finished training appends its per-case, per-class metrics to ``benchmarks/results/sweep/<dataset>/cases.csv``
(and a line to ``trainings.csv``); a re-run skips what is there, so the sweep continues where it stopped. Arms:

- ``scratch``: every grid loss from scratch on folds 0-4 (seed 0): each case is validated once per loss;
- ``seed2``: Dice+CE again on folds 0-4 with another seed (seed-to-seed noise; the A/A pair); ``--seed2-losses``
  adds other losses' second trainings (a case-level winner trained twice: does its gain replicate?);
- ``seed3``: Dice+CE a third time (seed 2; e.g. ``--folds 1 2 3 4``, the confirmation's): the real A/A under the
  product's rule, a Dice+CE training as the candidate against the seed pair as the two controls;
- ``long``: every grid loss from scratch at 4x the iterations, folds 0-1 (does the ranking hold when longer?);
- ``finetune``: one Dice+CE base per fold 0-1 (4x the screening length), every grid loss continued from it for
  the screening length at nnU-Net's tail LR (``autoloss.nnunet.finetune``); Dice+CE continued is the control.

``benchmarks/sweep_replay.py`` reads the tables. The datasets (each judged with the metric ``--metric auto`` picks
from its fingerprint) and their grids are in ``DATASETS``: Dice+CE, DiceTopK at two k, DiceFocal, DiceBD with
its Dice-first ramp, and the regime's compounds (clDice and Skeleton Recall for tubular classes, Blob for many
instances). ISBI's 30 slices come from one stack: neighbouring slices fall in training and validation folds.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, load_average  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sweep"
FOLDS = (0, 1, 2, 3, 4)
SIDE_FOLDS = (0, 1)  # the long and fine-tune arms
CONFIRM_FOLDS = [1, 2]  # the product's default: the next two folds after the screening fold 0
METRICS = ("dice", "nsd", "hd95", "cldice", "betti0", "lesion_recall", "lesion_precision", "lesion_f1")


def _grid(*extra):
    from autoloss.spec import LossSpec, Schedule

    bd = LossSpec("DiceBD", {}, Schedule.ramp_in("bd", 0.2, 0.5))  # the prior's Dice-first ramp
    base = [("DiceCE", LossSpec("DiceCE", {})), ("DiceTopK10", LossSpec("DiceTopK", {"topk.k": 10.0})),
            ("DiceTopK90", LossSpec("DiceTopK", {"topk.k": 90.0})), ("DiceFocal", LossSpec("DiceFocal", {})),
            ("DiceBD", bd)]
    return base + [(label, LossSpec(name, {})) for label, name in extra]


@dataclass(frozen=True)
class SweepDataset:
    name: str
    source: str  # a shared dataset folder name, or "axon_tiles"
    configuration: str
    grid_extra: tuple[tuple[str, str], ...] = ()
    epochs: int = 10
    iterations: int = 30
    val_iterations: int = 5

    def grid(self):
        return _grid(*self.grid_extra)


DATASETS = {d.name: d for d in (
    SweepDataset("MontgomeryLungs", "Dataset102_MontgomeryLungs", "2d"),
    # 3D at 300 iterations is mid-learning (pilot, benchmarks/results/sweep_pilot/Hippocampus_300it: Dice+CE 0.48
    # and 0.29 from two seeds on fold 0): 1200, where the small network reaches ~0.8 (bench_fidelity: 0.85 at 2458)
    SweepDataset("Hippocampus", "Dataset103_Hippocampus", "3d_fullres", epochs=40),
    SweepDataset("ISBIMembrane", "Dataset101_ISBIMembrane", "2d",
                 (("DiceCE+clDice", "DiceCE+clDice"), ("DiceCE+SkelRecall", "DiceCE+SkelRecall"))),
    SweepDataset("AxonMyelinTiles", "axon_tiles", "2d",
                 (("DiceCE+Blob", "DiceCE+Blob"), ("DiceCE+SkelRecall", "DiceCE+SkelRecall"))),
)}


class Tables:
    """The dataset's result files: cases.csv (one row per training, case and class) and trainings.csv."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cases, self.trainings = folder / "cases.csv", folder / "trainings.csv"

    def done(self) -> set[tuple[str, str, int, int]]:
        if not self.trainings.is_file():
            return set()
        with open(self.trainings, newline="") as f:
            return {(r["arm"], r["loss"], int(r["fold"]), int(r["seed"])) for r in csv.DictReader(f)}

    def add(self, arm: str, label: str, fold: int, seed: int, result: dict, objective: str) -> None:
        from autoloss.nnunet.run import objective_value

        per_case = result["folds"][0]["per_case"] if "folds" in result else result["per_case"]
        new = not self.cases.is_file()
        with open(self.cases, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["arm", "loss", "fold", "seed", "case", "class", *METRICS])
            for case, classes in sorted(per_case.items()):
                for cls, m in sorted(classes.items()):
                    w.writerow([arm, label, fold, seed, case, cls,
                                *[("" if m.get(k) is None or m.get(k) != m.get(k) else round(float(m[k]), 5))
                                  for k in METRICS]])
            f.flush()
            os.fsync(f.fileno())
        new = not self.trainings.is_file()
        metrics = result["metrics"]
        with open(self.trainings, "a", newline="") as f:  # written last: a training counts once both are whole
            w = csv.writer(f)
            if new:
                w.writerow(["arm", "loss", "fold", "seed", "epochs", "iterations", "dice", "objective", "seconds",
                            "load"])
            w.writerow([arm, label, fold, seed, result.get("epochs") or result.get("epochs_run"),
                        result.get("iterations"), round(metrics["mean"]["dice"], 5),
                        round(objective_value(metrics, objective), 5), round(result["seconds"], 1), load_average()])


def prepare_dataset(d: SweepDataset, work: Path):
    """nnU-Net's plan and preprocessing, then the scaled small network (stored, so a re-run trains the same)."""
    from autoloss.dataset import read_dataset
    from autoloss.fingerprinting import compute_fingerprint
    from autoloss.nnunet import env, scaled
    from autoloss.nnunet.prepare import prepare

    work.mkdir(parents=True, exist_ok=True)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.pop(var, None)
    env.configure(work)
    if d.source == "axon_tiles":
        from sweep_data import make_axon_tiles

        path = make_axon_tiles(work / "tiles_raw", work / "nnunet" / "preprocessed")
    else:
        path = SHARED / d.source
    ds = read_dataset(path)
    fp_file = work / "fingerprint.json"
    if not fp_file.exists():
        fp_file.write_text(json.dumps(compute_fingerprint(ds, num_workers=2)))
    fp = json.loads(fp_file.read_text())
    prepared = prepare(ds, d.configuration, work, num_processes=2, log=lambda s: None)
    net_file = work / "network.json"
    stored = json.loads(net_file.read_text()) if net_file.exists() else None
    network = scaled.network_for(prepared, "small", "cpu", fp, stored)
    net_file.write_text(json.dumps(network, indent=2))
    prepared = scaled.apply(prepared, network, num_processes=2, log=lambda s: None)
    return prepared, fp, network


def write_meta(d: SweepDataset, fp: dict, network: dict, tables: Tables) -> str:
    from autoloss.nnunet import scaled
    from autoloss.objectives import auto_objective
    from autoloss.prior import recommend_from_fingerprint

    objective = auto_objective(fp)
    grid = d.grid()
    order = [r.spec.name for r in recommend_from_fingerprint(fp)]
    # the prior's order over the grid (a loss the prior does not rank goes last), Dice+CE first as in a search
    ranked = sorted(grid, key=lambda g: (g[0] != "DiceCE", order.index(g[1].name) if g[1].name in order else 99))
    meta = {"dataset": d.name, "source": d.source, "objective": objective, "confirm_folds": CONFIRM_FOLDS,
            "screen_fold": 0, "grid": [{"label": label, "spec": spec.to_dict()} for label, spec in ranked],
            "network": scaled.describe(network), "network_config": network,
            "fidelity": {"configuration": d.configuration, "epochs": d.epochs, "iterations_per_epoch": d.iterations},
            "regimes": {c: v.get("regime") for c, v in fp.get("classes", {}).items()}}
    old = json.loads((tables.folder / "meta.json").read_text()) if (tables.folder / "meta.json").exists() else {}
    meta["extra"] = old.get("extra", [])  # losses trained beside the grid (--extra), kept across runs
    (tables.folder / "meta.json").write_text(json.dumps(meta, indent=2))
    (tables.folder / "fingerprint.json").write_text(json.dumps(fp, indent=2))  # for the knowledge records
    return objective


def plan(d: SweepDataset, arms: list[str], folds=FOLDS, seed2: tuple = ("DiceCE",),
         extra: dict | None = None) -> list[tuple[str, str, object, int, int]]:
    """(arm, label, spec, fold, seed) in the order they run: the truth first (scratch, then the seed pair and the
    ``seed2`` losses' second trainings, labels of the grid or of ``extra``)."""
    grid = d.grid()
    specs = dict(grid) | (extra or {})
    unknown = sorted(set(seed2) - set(specs))
    if unknown:
        raise SystemExit(f"--seed2-losses: unknown label(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    jobs = []
    if {"scratch", "seed2", "seed3"} & set(arms):
        for fold in folds:
            if "scratch" in arms:
                jobs += [("scratch", label, spec, fold, 0) for label, spec in grid]
            if "seed2" in arms and "DiceCE" in seed2:
                jobs.append(("scratch_seed2", "DiceCE", grid[0][1], fold, 1))
            if "seed3" in arms:
                jobs.append(("scratch_seed3", "DiceCE", grid[0][1], fold, 2))
        # the other second trainings loss by loss: each one's replication is complete before the next begins
        if "seed2" in arms:
            jobs += [("scratch_seed2", label, specs[label], fold, 1) for label in seed2 if label != "DiceCE"
                     for fold in folds]
    for arm in ("long", "finetune"):
        if arm in arms:
            jobs += [(arm, label, spec, fold, 0) for fold in SIDE_FOLDS if fold in folds for label, spec in grid]
    return jobs


def extra_jobs(tables: Tables, extra: list[str]) -> list[tuple[str, str, object, int, int]]:
    """``LABEL=SPEC_JSON`` losses trained from scratch on every fold beside the grid (e.g. the loss a real search
    chose that the grid lacks, so the truth covers it); recorded in meta.json's ``extra``, left out of the replay."""
    from autoloss.spec import LossSpec

    meta = json.loads((tables.folder / "meta.json").read_text())
    for item in extra:
        label, _, spec_json = item.partition("=")
        entry = {"label": label, "spec": LossSpec.from_dict(json.loads(spec_json)).to_dict()}
        if entry not in meta["extra"]:
            meta["extra"].append(entry)
    (tables.folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return [("scratch", e["label"], LossSpec.from_dict(e["spec"]), fold, 0) for e in meta["extra"] for fold in FOLDS]


def train(args) -> None:
    from autoloss.nnunet.finetune import BaseTraining, Continuation, base_folder, continuation_lr
    from autoloss.nnunet.run import Fidelity, run_trial

    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    for name in args.datasets or list(DATASETS):
        d = DATASETS[name]
        work = args.work / d.name
        tables = Tables(RESULTS / d.name)
        prepared, fp, network = prepare_dataset(d, work)
        objective = write_meta(d, fp, network, tables)
        fid = Fidelity(configuration=d.configuration, epochs=d.epochs, iterations_per_epoch=d.iterations,
                       val_iterations_per_epoch=d.val_iterations)
        done = tables.done()
        extra = extra_jobs(tables, args.extra)
        jobs = plan(d, args.arms, args.folds, tuple(args.seed2_losses), {j[1]: j[2] for j in extra}) + \
            [j for j in extra if j[3] in args.folds]
        todo = [j for j in jobs if (j[0], j[1], j[3], j[4]) not in done]
        print(f"{d.name}: {len(done)} trainings done, {len(todo)} to go; {scaled_label(network)}; objective "
              f"{objective}", flush=True)
        for arm, label, spec, fold, seed in todo:
            t0 = time.time()
            folder = work / "trials" / f"{arm}_{label}_f{fold}_s{seed}"
            if arm == "finetune":
                if ("base", "DiceCE", fold, 0) not in done:  # one Dice+CE base per fold, 4x the screening length
                    base = BaseTraining(results_root=str(work / "bases"), seed=0).run(
                        prepared, replace(fid, epochs=4 * d.epochs, folds=(fold,)), work / "trials" / f"base_f{fold}")
                    base["iterations"] = 4 * d.epochs * d.iterations
                    tables.add("base", "DiceCE", fold, 0, base, objective)
                    done.add(("base", "DiceCE", fold, 0))
                    print(f"  base          DiceCE             fold {fold}: Dice {base['metrics']['mean']['dice']:.4f}",
                          flush=True)
                cont = Continuation(str(base_folder(work / "bases", prepared)), continuation_lr(4 * d.epochs,
                                                                                                   d.epochs))
                result = run_trial(spec, prepared, replace(fid, folds=(fold,)), folder, seed=seed, continuation=cont)
            else:
                epochs = 4 * d.epochs if arm == "long" else d.epochs
                result = run_trial(spec, prepared, replace(fid, epochs=epochs, folds=(fold,)), folder, seed=seed)
            result["iterations"] = (4 if arm == "long" else 1) * d.epochs * d.iterations
            tables.add(arm, label, fold, seed, result, objective)
            print(f"  {arm:<13} {label:<18} fold {fold} seed {seed}: Dice {result['metrics']['mean']['dice']:.4f} "
                  f"({time.time() - t0:.0f} s, load {load_average()})", flush=True)


def scaled_label(network: dict) -> str:
    from autoloss.nnunet import scaled

    return scaled.describe(network)


def status(args) -> None:
    for name, d in DATASETS.items():
        done = Tables(RESULTS / d.name).done()
        total = len(plan(d, ["scratch", "seed2", "long", "finetune"]))
        by_arm = {}
        for arm, *_ in done:
            by_arm[arm] = by_arm.get(arm, 0) + 1
        print(f"{name}: {len(done)}/{total} trainings " + ", ".join(f"{a} {n}" for a, n in sorted(by_arm.items())))


def search(args) -> None:
    """The real product on the same data and network: ``autoloss.search`` with the sweep's fidelity."""
    import autoloss

    d = DATASETS[args.dataset]
    work = args.work / d.name
    prepared, fp, network = prepare_dataset(d, work)
    out = RESULTS / d.name / "search"
    out.mkdir(parents=True, exist_ok=True)
    # the dataset as linked into the sweep's nnUNet_raw: the search reuses its preprocessing, split and network
    result = autoloss.search(prepared.raw_dir, work_dir=work / "search", budget=args.budget, device="cpu",
                             configuration=d.configuration, epochs=d.epochs, iterations_per_epoch=d.iterations,
                             val_iterations=d.val_iterations, network="small", memory=False, write_report=True)
    for f in ("results.csv", "summary.txt", "verdict.json"):
        if (work / "search" / f).exists():
            (out / f).write_text((work / "search" / f).read_text())
    print(result.summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("datasets", nargs="*", help=f"any of {', '.join(DATASETS)} (default: all, in that order)")
    p.add_argument("--arms", nargs="+", default=["scratch", "seed2", "long", "finetune"])
    p.add_argument("--folds", nargs="+", type=int, default=list(FOLDS),
                   help="train these folds only (e.g. 0 1 2 on every dataset before folds 3-4 anywhere)")
    p.add_argument("--extra", nargs="*", default=[], metavar="LABEL=SPEC_JSON",
                   help="a loss outside the grid trained on every fold (its truth, not part of the replay)")
    p.add_argument("--seed2-losses", nargs="+", default=["DiceCE"], metavar="LABEL",
                   help="losses trained a second time (seed 1) by the seed2 arm (default: Dice+CE, the A/A pair)")
    p.set_defaults(func=train)
    p = sub.add_parser("search")
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--budget", type=int, default=8)
    p.set_defaults(func=search)
    p = sub.add_parser("status")
    p.set_defaults(func=status)
    for p in sub.choices.values():
        p.add_argument("--work", type=Path, default=Path("/work/sweep_work") if Path("/work").is_dir()
                       else ROOT / "sweep_work")
    args = ap.parse_args()
    args.work = args.work.resolve()
    args.func(args)


if __name__ == "__main__":
    main()
