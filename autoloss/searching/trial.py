"""Executing one trial: the function every worker runs (in-process or as a Ray task), and its outcome.

A job carries only plain data (the LossSpec, the prepared dataset, the fidelity, where the study lives), so it
can travel to another process or machine. Intermediate pseudo-Dice goes to the study through its storage, so
Optuna's pruner decides there exactly as it does in-process.
"""
from __future__ import annotations

import gc
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from autoloss.nnunet.finetune import BaseTraining, Continuation
from autoloss.nnunet.prepare import PreparedDataset
from autoloss.nnunet.run import Fidelity, objective_value, run_trial
from autoloss.spec import LossSpec


@dataclass
class TrialJob:
    """One training to run. Screening jobs belong to an Optuna trial (``trial_id``: they report pseudo-Dice and
    may be pruned); confirmation jobs have ``trial_id`` None, run to the end, and are recorded by the driver."""

    number: int  # the Optuna trial number; confirmation jobs use negative numbers (driver-side bookkeeping)
    trial_id: int | None
    spec: LossSpec
    prepared: PreparedDataset
    fidelity: Fidelity
    objective: str
    trial_dir: str
    device: str
    study_name: str
    storage_url: str | None  # None: the default journal file in work_dir
    work_dir: str
    threads: int | None = None
    seed: int | None = None
    # fine-tune fidelity (autoloss.searching.base): a training that continues from its fold's base, or a base job
    continuation: Continuation | None = None
    base: BaseTraining | None = None


@dataclass
class TrialOutcome:
    number: int
    trial_id: int
    state: str  # complete | pruned | fail
    value: float | None = None
    reason: str | None = None
    result: dict = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    worker: str = ""  # host:pid of the process that trained
    node: str = ""  # the machine (with its Ray node id on a cluster): results.csv's `node`
    cpu_seconds: float = 0.0


def execute(job: TrialJob, study: optuna.Study | None = None) -> TrialOutcome:
    """Run ``job``; never raises for a failing trial (the outcome says why), only for KeyboardInterrupt."""
    import torch

    from autoloss.nnunet.trainer import LossDiverged

    if job.threads:
        torch.set_num_threads(job.threads)
    report = None
    if job.trial_id is not None:
        if study is None:
            from autoloss.searching.study import make_storage

            study = optuna.load_study(study_name=job.study_name,
                                      storage=make_storage(job.storage_url, Path(job.work_dir)))
        trial = optuna.trial.Trial(study, job.trial_id)

        def report(step: int, dice: float) -> None:
            trial.report(dice if dice == dice else 0.0, step)  # NaN pseudo-Dice (no foreground yet) counts as 0
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {step} (pseudo-Dice {dice:.4f})")

    out = TrialOutcome(job.number, job.trial_id, "fail", started=time.time(),
                       worker=f"{socket.gethostname()}:{os.getpid()}", node=socket.gethostname())
    cpu0 = time.process_time()
    try:
        if job.base is not None:
            result = job.base.run(job.prepared, job.fidelity, Path(job.trial_dir), device=job.device)
        else:
            result = run_trial(job.spec, job.prepared, job.fidelity, Path(job.trial_dir), device=job.device,
                               epoch_callback=report, seed=job.seed, cldice_classes=_cldice_classes(job.objective),
                               continuation=job.continuation)
        out.state, out.result = "complete", result
        out.value = objective_value(result["metrics"], job.objective)
        if out.value != out.value:  # NaN: the network predicted nothing anywhere
            out.value = 0.0
    except optuna.TrialPruned as exc:
        out.state, out.reason = "pruned", str(exc)
    except LossDiverged as exc:
        out.reason = f"loss diverged: {exc}"
    except torch.OutOfMemoryError:
        out.reason = "out of memory (lower the patch/batch size, or use fewer workers per GPU)"
    except Exception as exc:  # noqa: BLE001 - one failing trial must not stop the search
        out.reason = f"{type(exc).__name__}: {exc}"
        Path(job.trial_dir).mkdir(parents=True, exist_ok=True)
        (Path(job.trial_dir) / "error.txt").write_text(traceback.format_exc())
    finally:
        # In-process trials share one interpreter: free the finished trainer's memory before the next trial.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    out.ended = time.time()
    out.cpu_seconds = time.process_time() - cpu0  # this process's CPU time: shows whether trials share cores
    return out


def _cldice_classes(objective: str) -> frozenset[str]:
    """Classes whose clDice the objective needs: in 3D only these pay for the skeletons (seconds per large case)."""
    from autoloss import objectives

    if not objectives.is_classwise(objective):
        return frozenset()
    return frozenset(c for c, ms in objectives.parse(objective).items() if "cldice" in ms)
