"""A search across machines, on Ray's own multi-node harness (`ray.cluster_utils.Cluster`: a head without CPUs and
two worker nodes of 1 CPU each, separate raylets) with a real PostgreSQL server as the study's storage:

- the trials land on both worker nodes (results.csv's `node`), and a driver killed with kill -9 and restarted
  against the same cluster resumes from the database: screening, confirmation, verdict and report all from it;
- a node that cannot see the work directory (its raylet in its own mount namespace, a tmpfs over the work
  directory) fails its trial in one line that says so;
- a worker node removed mid-trial: that trial is re-queued (--retry-failed; Ray's own retries are off), the search
  finishes on the node left, and nothing finished runs twice.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from autoloss.nnunet.run import Fidelity
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.runner import SearchConfig, run_search
from conftest import HIPPO, MAX_CASES, TINY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NODE = dict(num_cpus=1, object_store_memory=80 * 2**20)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    harness = Cluster(initialize_head=True, head_node_args=dict(NODE, num_cpus=0, include_dashboard=False))
    try:
        nodes = [harness.add_node(**NODE) for _ in range(2)]
        harness.wait_for_nodes()
        harness.workers = nodes
        yield harness
    finally:
        harness.shutdown()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _trial_processes(cluster) -> list[int]:
    """Ray worker processes of this harness's worker nodes that are running a trial."""
    raylets = {node.all_processes["raylet"][0].process.pid for node in cluster.workers}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) in raylets and cmd.startswith("ray::_run_on_worker"):
            pids.append(int(proc.name))
    return pids


def _running(url: str, study_name: str) -> int:
    study = optuna.load_study(study_name=study_name, storage=url)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def test_search_over_two_nodes_with_postgres_resumes_after_the_driver_is_killed(cluster, postgres, search_work_dir):
    url = postgres.database("cluster_search")
    work = search_work_dir
    command = [sys.executable, "-m", "autoloss", "search", str(HIPPO), "--work-dir", str(work), "--storage", url,
               "--ray-address", cluster.address, "--device", "cpu", "--config", "2d", "--epochs", "2",
               "--iterations-per-epoch", "4", "--val-iterations", "1", "--max-cases", str(MAX_CASES),
               "--budget", "2", "--prior-top", "1", "--pruner", "none", "--confirm-top", "1", "--confirm-folds", "1",
               "--no-report"]  # --prior-top 1: Dice+CE and one sampled trial, so the re-queued pair is all there is
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    study_name = f"autoloss_{HIPPO.name}_2d"
    try:
        deadline = time.time() + 300
        while len(_trial_processes(cluster)) < 2:  # no --workers: the cluster is filled, one trial on each node
            assert first.poll() is None and time.time() < deadline, "the first driver never started two trials"
            time.sleep(0.5)
        time.sleep(1.0)
        assert _running(url, study_name) == 2
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    deadline = time.time() + 60
    while _trial_processes(cluster):  # the killed driver's trials die with its Ray job: none runs on unseen
        assert time.time() < deadline, "the killed driver's trials still run on the cluster"
        time.sleep(0.5)
    second = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"took over study {study_name!r}" in second.stdout and f"from pid {first.pid}" in second.stdout
    assert "re-queued 2 trial(s) interrupted" in second.stdout

    study = optuna.load_study(study_name=study_name, storage=url)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    screened = studies.counted(study)
    assert len(screened) == 2 and all(t.state == rec.COMPLETE for t in screened)
    interrupted = [t for t in study.get_trials() if t.user_attrs.get(rec.INTERRUPTED)]
    assert len(interrupted) == 2
    # each interrupted trial ran again exactly once, and nothing finished ran twice
    assert sorted(json.dumps(t.params, sort_keys=True) for t in interrupted) == \
        sorted(json.dumps(t.params, sort_keys=True) for t in screened)
    confirmed = rec.confirmation_trials(study)
    assert len(confirmed) == 3 and all(t.state == rec.COMPLETE for t in confirmed)  # a candidate, Dice+CE twice

    import pandas as pd

    results = pd.read_csv(work / "results.csv")
    nodes = set(results["node"].dropna())
    assert len(nodes) == 2, results[["phase", "trial", "node"]]  # both worker nodes trained
    assert {n.split("/")[1] for n in nodes} == {n.node_id[:8] for n in cluster.workers}
    assert json.loads((work / "verdict.json").read_text())["verdict"]["decision"] in ("switch", "keep",
                                                                                     "inconclusive")
    assert json.loads((work / "study.json").read_text())["storage"] == url
    assert not (work / "study.journal").exists()  # everything above came from the database
    import autoloss

    assert autoloss.report(work).stat().st_size > 10_000  # the report, from the database too


# A worker node whose raylet runs in its own mount namespace, with an empty tmpfs over the work directory: the
# harness's nodes share one filesystem, this one does not see the work directory's contents. No CPUs: only the task
# that asks for its "blind" resource lands there.
BLIND_NODE = """
import subprocess, sys, time
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", sys.argv[2]], check=True)
import ray
from ray._private.node import Node
from ray._private.parameter import RayParams
params = RayParams(gcs_address=sys.argv[1], num_cpus=0, resources={"blind": 1}, object_store_memory=80 * 2**20,
                   min_worker_port=0, max_worker_port=0, node_manager_port=0, include_log_monitor=False)
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print(node.node_id, flush=True)
time.sleep(600)
"""


def test_a_node_that_cannot_see_the_work_dir_fails_its_trial_in_one_line(cluster, search_work_dir):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs `unshare -m` (a mount namespace) to give one node its own view of the filesystem")
    import ray

    from autoloss.nnunet.prepare import PreparedDataset
    from autoloss.searching.ray_executor import _run_on_worker
    from autoloss.searching.trial import TrialJob
    from autoloss.spec import LossSpec

    work = search_work_dir
    preprocessed = next((work / "nnunet").rglob("nnUNetPlans.json")).parent
    blind = subprocess.Popen(["unshare", "-m", "--propagation", "private", sys.executable, "-c", BLIND_NODE,
                              cluster.address, str(work)], stdout=subprocess.PIPE, text=True, env=_env(),
                             start_new_session=True)
    try:
        node_id = blind.stdout.readline().strip()
        assert node_id, "the blind node did not start"
        prepared = PreparedDataset(103, HIPPO.name, work / "nnunet" / "raw" / HIPPO.name, preprocessed, "2d",
                                   "nnUNetPlans", ())
        job = TrialJob(number=0, trial_id=None, spec=LossSpec("DiceCE"), prepared=prepared,
                       fidelity=Fidelity(**TINY), objective="dice", trial_dir=str(work / "trials" / "t0"),
                       device="cpu", study_name="unused", storage_url=None, work_dir=str(work))
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            task = ray.remote(num_cpus=0, resources={"blind": 1}, max_retries=0)(_run_on_worker)
            outcome = ray.get(task.remote(job), timeout=120)
        finally:
            ray.shutdown()
        assert outcome.state == "fail" and outcome.node.endswith(node_id[:8])
        assert len(outcome.reason.splitlines()) == 1
        assert f"cannot see {preprocessed}" in outcome.reason and "shared by every node" in outcome.reason
    finally:
        os.killpg(blind.pid, signal.SIGTERM)
        try:
            blind.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(blind.pid, signal.SIGKILL)
            blind.wait()


def test_a_node_removed_mid_trial_requeues_that_trial_and_the_search_finishes(cluster, search_work_dir):
    """Last in this module: it leaves the harness with one worker node."""
    removed: list[str] = []

    def remove_a_node_once_both_train():
        deadline = time.time() + 300
        while time.time() < deadline:
            logs = list((search_work_dir / "trials").glob("trial_*/**/training_log_*.txt"))
            if len(logs) >= 2:  # both trials are in nnU-Net's training loop, one on each node
                time.sleep(0.5)
                victim = cluster.workers[1]
                cluster.remove_node(victim)
                removed.append(victim.node_id)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=remove_a_node_once_both_train, daemon=True)
    watcher.start()
    cfg = SearchConfig(dataset=str(HIPPO), budget=2, fidelity=Fidelity(**TINY), work_dir=search_work_dir,
                       device="cpu", max_cases=MAX_CASES, pruner="none", seed=0, ray_address=cluster.address,
                       retry_failed=True, prior_top=1, confirm=ConfirmSettings(enabled=False))
    study = run_search(cfg, log=lambda s: None)
    watcher.join(timeout=5)
    assert removed, "the node was never removed"
    trials = study.get_trials()
    died = [t for t in trials if t.user_attrs.get(rec.INTERRUPTED)]
    assert len(died) == 1 and died[0].user_attrs[rec.REASON] == \
        f"worker died: its node 127.0.0.1/{removed[0][:8]} died or became unreachable (NodeDiedError)"
    done = studies.counted(study)
    assert len(done) == 2 and all(t.state == rec.COMPLETE for t in done)
    survivor = cluster.workers[0].node_id[:8]
    rerun = [t for t in done if t.params == died[0].params]
    assert len(rerun) == 1 and rerun[0].user_attrs["node"].endswith(survivor)  # re-queued, ran once, elsewhere
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 2  # nothing finished ran twice
