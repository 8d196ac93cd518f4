"""Trials per hour with 1 worker, 2 workers on one Ray node and 2 Ray nodes of 1 CPU each (same trials, one run);
and the per-trial cost of a PostgreSQL study storage against the journal file.

    python benchmarks/bench_ray_workers.py [--budget 4] [--epochs 2] [--iterations 25] [--storage-trials 20]

Throughput: each configuration runs a fresh search of `--budget` tiny trials on the same preprocessed data, every
trial capped at one CPU thread (--cpus-per-trial 1). 1 worker is autoloss's default in-process executor; the Ray
rows use Ray's own multi-node harness (`ray.cluster_utils.Cluster`: a head without CPUs plus worker nodes, separate
raylets on this machine, as in tests/test_cluster.py) and `--ray-address`, which fills the cluster (one trial per
node, or per core of a 2-core node). Throughput is over the trials' own span (Ray's start-up, paid once per search,
is in the wall column). Bar: 2 workers give at least 1.6x the trials per hour of one.

Storage: what one trial costs the study's storage, measured with the product's own calls: the driver's ask (with
the search space's suggestions) and tell (every attribute a real trial stores, from a real result of the runs
above), a worker's load of the study with one report and pruner question per epoch, and the driver's rewrite of
the results files, for `--storage-trials` trials on a journal file and on a real PostgreSQL server (pgserver, as in
the tests; or `--postgres URL`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the harness on loopback (set before Ray loads)
NODE = dict(object_store_memory=80 * 2**20)


def throughput(ds, base: Path, tmp: Path, label: str, nodes: list[int] | None, args) -> dict:
    from autoloss.nnunet.run import Fidelity
    from autoloss.searching.confirm import ConfirmSettings
    from autoloss.searching.runner import SearchConfig, run_search

    work = tmp / label.replace(" ", "_")
    shutil.copytree(base / "nnunet", work / "nnunet", symlinks=True)
    cluster = None
    if nodes:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args=dict(NODE, num_cpus=0, include_dashboard=False))
        for cpus in nodes:
            cluster.add_node(num_cpus=cpus, **NODE)
        cluster.wait_for_nodes()
    try:
        cfg = SearchConfig(dataset=str(ds.root), budget=args.budget, work_dir=work, device="cpu",
                           max_cases=args.max_cases, pruner="none", seed=0, cpus_per_trial=1, workers=None,
                           ray_address=cluster.address if cluster else None, confirm=ConfirmSettings(enabled=False),
                           memory=False, fidelity=Fidelity(configuration="2d", epochs=args.epochs,
                                                           iterations_per_epoch=args.iterations,
                                                           val_iterations_per_epoch=1))
        start = time.time()
        study = run_search(cfg, log=lambda s: None)
        wall = time.time() - start
    finally:
        if cluster:
            cluster.shutdown()
    trials = [t for t in study.get_trials() if t.state.is_finished() and t.user_attrs.get("started")]
    span = max(t.user_attrs["ended"] for t in trials) - min(t.user_attrs["started"] for t in trials)
    busy = sum(t.user_attrs["ended"] - t.user_attrs["started"] for t in trials)
    return {"label": label, "trials": len(trials), "span": span, "rate": 3600 * len(trials) / span, "wall": wall,
            "cores": sum(t.user_attrs.get("cpu_seconds", 0.0) for t in trials) / busy,
            "nodes": len({t.user_attrs.get("node") for t in trials}), "trial_s": busy / len(trials),
            "result": json.loads(next((work / "trials").rglob("result.json")).read_text())}


def storage_cost(url: str | None, work: Path, n: int, epochs: int, result: dict) -> list[float]:
    """Seconds of storage work per trial (everything a trial costs the study, none of the training)."""
    import warnings

    import optuna

    from autoloss.losses import baseline_spec
    from autoloss.searching import records as rec
    from autoloss.searching import study as studies
    from autoloss.searching.results import save_results
    from autoloss.searching.runner import _spec_of, _tell
    from autoloss.searching.space import SearchSpace
    from autoloss.searching.trial import TrialOutcome

    work.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = SearchSpace.load(("compound",))
    settings = {"dataset": "bench", "cases": [], "fidelity": {"epochs": epochs}, "objective": "dice",
                "losses": space.losses, "spaces": ["compound.yaml"]}
    study = studies.open_study(studies.make_storage(url, work), "bench", settings, 0, n, 1, "none")
    studies.enqueue_prior(study, space, [baseline_spec()])
    costs = []
    for _ in range(n):
        start = time.perf_counter()
        trial = study.ask()
        spec = _spec_of(trial, space)
        trial.set_user_attr(rec.SPEC, spec.to_dict())
        # the worker's side (trial.execute): its own view of the study, one report and pruner question per epoch
        worker = optuna.load_study(study_name="bench", storage=studies.make_storage(url, work))
        wtrial = optuna.trial.Trial(worker, studies.trial_id(trial))
        for epoch in range(epochs):
            wtrial.report(0.5, epoch)
            wtrial.should_prune()
        now = time.time()
        _tell(study, trial, TrialOutcome(trial.number, studies.trial_id(trial), "complete", value=0.5, result=result,
                                         started=now, ended=now, worker="bench", node="bench"), retry=False)
        save_results(study, work)
        costs.append(time.perf_counter() - start)
    return costs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="Dataset103_Hippocampus")
    parser.add_argument("--max-cases", type=int, default=6)
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--storage-trials", type=int, default=20)
    parser.add_argument("--postgres", help="an existing PostgreSQL URL (default: start one with pgserver)")
    args = parser.parse_args()

    from _common import ROOT, prepared_dataset

    os.environ.setdefault("nnUNet_n_proc_DA", "0")  # one thread per trial: augmentation in the trial's process
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ds, _ = prepared_dataset(args.dataset, tmp / "base", args.max_cases)
        rows = [throughput(ds, tmp / "base", tmp, "1 worker (in-process)", None, args),
                throughput(ds, tmp / "base", tmp, "2 workers, 1 node of 2 CPUs", [2], args),
                throughput(ds, tmp / "base", tmp, "2 nodes of 1 CPU each", [1, 1], args)]
        print(f"{'configuration':30} {'trials':>6} {'nodes':>5} {'span s':>8} {'trials/h':>9} {'wall s':>8} "
              f"{'cores/trial':>11}")
        for r in rows:
            print(f"{r['label']:30} {r['trials']:>6} {r['nodes']:>5} {r['span']:8.1f} {r['rate']:9.1f} "
                  f"{r['wall']:8.1f} {r['cores']:11.2f}")

        sys.path.insert(0, str(ROOT / "tests"))
        from postgres_server import running_postgres

        result = rows[0]["result"]
        with nullcontext() if args.postgres else running_postgres(tmp) as server:
            url = args.postgres or server.database("bench_storage")
            journal = storage_cost(None, tmp / "journal", args.storage_trials, args.epochs, result)
            database = storage_cost(url, tmp / "postgres", args.storage_trials, args.epochs, result)
        trial_s = rows[0]["trial_s"]
        print()
        print(f"{'storage':12} {'ms/trial median':>16} {'ms/trial max':>13} {'share of a trial':>17}")
        for name, costs in (("journal", journal), ("postgresql", database)):
            med = statistics.median(costs)
            print(f"{name:12} {1000 * med:16.1f} {1000 * max(costs):13.1f} {100 * med / trial_s:16.2f}%")
        extra = statistics.median(database) - statistics.median(journal)
        print(f"load at the start: {load}")
        print(f"load at the end:   {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        print(f"headline: 2 nodes of 1 CPU give {rows[2]['rate'] / rows[0]['rate']:.2f}x and 2 workers on one node "
              f"{rows[1]['rate'] / rows[0]['rate']:.2f}x the trials per hour of 1 worker (bar 1.6x); PostgreSQL "
              f"storage costs {1000 * extra:+.1f} ms per trial against the journal "
              f"({100 * extra / trial_s:+.2f}% of a {trial_s:.1f} s trial)")

