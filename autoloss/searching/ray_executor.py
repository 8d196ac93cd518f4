"""Run trials on a Ray cluster: a local one autoloss starts and stops, or an existing one (``--ray-address``).

Design (why Ray tasks and not Ray Tune): the Optuna study stays the single source of truth. The driver asks the
study for a trial, ships the job (plain data) to a Ray task, and tells the study the outcome; workers never
create trials, so the prior is enqueued once and resume works exactly as in-process. Early stopping stays
Optuna's: a worker reports each epoch's pseudo-Dice to the study's storage and asks the study's pruner, so the
same MedianPruner decides for every worker (under Tune's OptunaSearch, Optuna pruners do nothing and a Tune
scheduler would have to replace them). Workers therefore need the storage: the default journal file works on
one machine; across machines give --work-dir on a shared filesystem or a --storage database URL.

Faults: a worker process or a whole node that dies mid-trial makes its task fail with a Ray error; the driver
records the trial as failed ("worker died"), or re-queues it with --retry-failed, and the search goes on. Ray's own
task retries are off (``max_retries=0``): a trial never runs twice behind the study's back. A killed driver's tasks
die with its Ray job; the next driver re-queues the trials they left running (``study.recover_interrupted``).

Each outcome names the node that ran it (host and Ray node id: ``node`` in results.csv).
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from autoloss.errors import AutolossError
from autoloss.searching.lease import journal_path
from autoloss.searching.trial import TrialJob, TrialOutcome

# nnU-Net settings every worker must share with the driver.
FORWARDED_ENV = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc", "nnUNet_compile",
                 "nnUNet_n_proc_DA", "nnUNet_extTrainer")


def _run_on_worker(job: TrialJob) -> TrialOutcome:
    """Executed inside a Ray worker process."""
    import ray

    from autoloss.searching.trial import execute

    host = socket.gethostname()
    node = f"{host}/{ray.get_runtime_context().get_node_id()[:8]}"
    needed = [Path(job.work_dir), Path(job.prepared.preprocessed_dir)]
    if job.trial_id is not None and journal_path(job.storage_url, job.work_dir) is not None:
        needed.append(journal_path(job.storage_url, job.work_dir))  # screening trials report to the study
    for path in needed:
        if not path.exists():
            return TrialOutcome(job.number, job.trial_id, "fail", worker=f"{host}:{os.getpid()}", node=node,
                                reason=f"worker on {node} cannot see {path}: put --work-dir (and nnUNet_preprocessed) "
                                       "on a filesystem shared by every node, or give a database --storage")
    out = execute(job)
    out.node = node
    return out


def _died(exc: Exception) -> str:
    """The one-line reason of a trial whose worker process or node died (the prefix --retry-failed looks for)."""
    text = str(exc)
    node = re.search(r"Node IP: ([^,\s]+), node ID: ([0-9a-f]{8})", text)
    if node:  # Ray's NodeDiedError: a paragraph; say which node in a few words
        return f"worker died: its node {node.group(1)}/{node.group(2)} died or became unreachable ({type(exc).__name__})"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"worker died: {type(exc).__name__}: {lines[-1] if lines else ''}"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    # ray.init keeps retrying an unreachable head for minutes; fail fast with one clear line instead.
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise AutolossError(f"could not reach the Ray cluster at {address}: {exc} (is `ray start --head` running "
                            "there, and is the port open?)") from None


class RayExecutor:
    """``slots`` trials at a time as Ray tasks; one GPU per trial when GPUs are used."""

    def __init__(self, workers: int | None, address: str | None, device: str, gpus_per_trial: float | None = None,
                 cpus_per_trial: int | None = None):
        """``workers``: trials at a time; None fills the cluster (one trial per GPU, or on CPU one per node)."""
        try:
            import ray
        except ImportError:
            raise AutolossError("--workers/--ray-address need Ray: pip install 'ray>=2.9'") from None
        self.ray = ray
        self.connected_here = not ray.is_initialized()  # a notebook may have connected already: leave that be
        cores = os.cpu_count() or 1
        env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if address not in (None, "auto") and not address.startswith("ray://"):
            _check_reachable(address)
        try:
            if self.connected_here and address is None:
                ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": env_vars}, configure_logging=False)
            elif self.connected_here:
                ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env_vars})
        except Exception as exc:  # noqa: BLE001 - connection/start errors come in many types
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise AutolossError(f"could not start or reach {where}: {str(exc).splitlines()[0]}") from None
        resources = ray.cluster_resources()
        node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        node_cpus = [c for c in node_cpus if c > 0] or [int(resources.get("CPU", cores))]
        if device == "cuda":
            gpus = resources.get("GPU", 0)
            if gpus < 1:
                self.shutdown()
                raise AutolossError("--device cuda but the Ray cluster has no GPU; use --device cpu")
            per_trial = gpus_per_trial or 1.0
            self.slots = workers or max(1, int(gpus // per_trial))
            self.threads = None
            options = {"num_gpus": per_trial, "num_cpus": 1, "runtime_env": {"env_vars": env_vars}}
        else:
            # CPU trials: split the cluster's cores so workers do not oversubscribe them. By default one trial per
            # node, with as many threads as the smallest node has cores (so it fits on every node).
            if workers:
                self.slots = workers
                self.threads = cpus_per_trial or max(1, sum(node_cpus) // workers)
            else:
                self.threads = cpus_per_trial or min(node_cpus)
                self.slots = max(1, sum(c // self.threads for c in node_cpus))
            # Cap every thread pool of the worker (torch, OpenMP, BLAS), not only torch's: numpy/scipy work in the
            # data pipeline and validation would otherwise spread over all cores and slow the other trials.
            threads = str(self.threads)
            options = {"num_cpus": self.threads, "num_gpus": 0, "runtime_env": {"env_vars": env_vars | {
                "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}}
        self.remote = ray.remote(max_retries=0, **options)(_run_on_worker)
        self.refs: dict = {}

    def submit(self, job: TrialJob) -> int:
        self.refs[self.remote.remote(job)] = job
        return job.number

    def wait(self) -> list[TrialOutcome]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        done = []
        for ref in ready:
            job = self.refs.pop(ref)
            try:
                done.append(self.ray.get(ref))
            except self.ray.exceptions.RayTaskError as exc:
                # execute() catches trial errors itself, so this is the worker failing around it (e.g. an import)
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                done.append(TrialOutcome(job.number, job.trial_id, "fail",
                                         reason=f"error in worker: {type(cause).__name__}: {cause}"))
            except Exception as exc:  # noqa: BLE001 - a dead worker or a lost node: the trial fails, not the search
                done.append(TrialOutcome(job.number, job.trial_id, "fail", reason=_died(exc)))
        return done

    def shutdown(self) -> None:
        for ref in list(self.refs):
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self.connected_here and self.ray.is_initialized():
            self.ray.shutdown()  # stops a local cluster; only disconnects from an existing one
