"""The search driver: fingerprint -> prior -> prepare once -> ask/tell loop over an executor -> results.

The driver alone talks to the study (ask, tell, enqueue, recovery); executors only run ``trial.execute`` on
jobs: in this process (:class:`LocalExecutor`) or on a Ray cluster (``autoloss.searching.ray_executor``). Results
are written after every trial, so an interrupted search loses nothing and resumes with the same command.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import optuna

from autoloss.errors import AutolossError
from autoloss.schema import SCHEMA_VERSION
from autoloss.searching import base as bases
from autoloss.searching import memory
from autoloss.losses import baseline_spec
from autoloss.nnunet import scaled
from autoloss.nnunet.run import Fidelity
from autoloss.searching import confirm
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.lease import study_lease
from autoloss.searching.lock import WorkDirLock, describe_stale
from autoloss.searching.options import check_folds, check_search_config
from autoloss.searching.reaper import guard_process_tree
from autoloss.searching.repeats import MAX_IN_A_ROW, Repeats, screened_keys, tell_or_hold, tell_repeat
from autoloss.searching.results import save_results
from autoloss.searching.space import SearchSpace
from autoloss.searching.trial import TrialJob, TrialOutcome, execute
from autoloss.searching.verdict import compute_verdict
from autoloss.spec import LossSpec


@dataclass
class SearchConfig:
    dataset: str
    budget: int = 20
    fidelity: Fidelity = field(default_factory=Fidelity)
    objective: str = "auto"  # resolved per dataset: autoloss.objectives.auto_objective
    work_dir: Path = Path("autoloss_work")
    storage: str | None = None
    study_name: str | None = None
    seed: int | None = 0
    timeout: float | None = None
    device: str | None = None
    max_cases: int | None = None
    spaces: tuple[str, ...] = ("compound",)
    prior_top: int = 4
    pruner: str = "median"
    workers: int | None = None  # trials at a time; None: 1 in-process, or fill the cluster given by ray_address
    ray_address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: int | None = None
    retry_failed: bool = False
    preprocess_processes: int | None = None
    confirm: ConfirmSettings = field(default_factory=ConfirmSettings)
    memory: bool = True  # warm-start from similar recorded datasets; record the confirmed result
    memory_top: int = 2  # winners of similar records enqueued after the prior's picks
    network: str = "auto"  # full | small | tiny (autoloss.nnunet.scaled); auto: full on a GPU, small on a CPU
    finetune: bases.FinetuneSettings = field(default_factory=bases.FinetuneSettings)  # --from-base / --base


class LocalExecutor:
    """Runs one trial at a time in this process (the default: no cluster, nothing to set up)."""

    slots = 1

    def __init__(self, study: optuna.Study, threads: int | None = None):
        self.study = study
        self.threads = threads  # torch threads per trial (None: torch's default, all cores)
        self._done: list[TrialOutcome] = []

    def submit(self, job: TrialJob) -> int:
        self._done.append(execute(job, self.study))
        return job.number

    def wait(self) -> list[TrialOutcome]:
        done, self._done = self._done, []
        return done

    def shutdown(self) -> None:
        pass


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _spaces_for(spaces: tuple[str, ...], fp: dict, log) -> tuple[str, ...]:
    """The default space plus the topology/instance compounds when a class is tubular or many-instances (the
    prior proposes them there, and a prior pick outside the space would never be trained)."""
    from autoloss.objectives import class_regime
    from autoloss.searching.space import DEFAULT_SPACES

    regimes = {class_regime(c) for c in fp.get("classes", {}).values()}
    if tuple(spaces) == DEFAULT_SPACES and regimes & {"tubular", "many-instances"}:
        log("tubular / many-instance classes: searching the topology space too (search_spaces/topology.yaml)")
        return tuple(spaces) + ("topology",)
    return tuple(spaces)


def run_search(cfg: SearchConfig, progress: Callable | None = None, log: Callable[[str], None] = print):
    """Run (or resume) the search described by ``cfg``: screening, then confirmation; returns the study. The
    verdict is in the work directory (``verdict.json``, ``best_loss.json``) and from ``compute_verdict(study)``."""
    check_search_config(cfg)  # one line per wrong option, before any work
    work_dir = Path(cfg.work_dir).resolve()
    # One search per work directory: a second one would preprocess into the same folders and drive the same study.
    # guard_process_tree: kill -9 of this driver takes nnU-Net's loader workers and a local Ray cluster with it.
    with WorkDirLock(work_dir) as lock, guard_process_tree():
        if lock.stale:
            log(describe_stale(lock.stale))
        return _run_locked(cfg, work_dir, progress, log)


def _run_locked(cfg: SearchConfig, work_dir: Path, progress: Callable | None, log: Callable[[str], None]):
    from autoloss.nnunet import env

    env.configure(work_dir, processes=cfg.preprocess_processes)

    from autoloss.dataset import read_dataset
    from autoloss.nnunet.prepare import fold_count
    from autoloss.verification import verify_before_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    SearchSpace.load(cfg.spaces)  # fails early on a bad --space; loaded below with the dataset's regimes
    studies.check_resumable(work_dir, cfg.storage)  # a damaged study is refused before anything is rewritten
    ds = read_dataset(cfg.dataset, max_cases=cfg.max_cases)
    study_name = cfg.study_name or f"autoloss_{ds.root.name}_{cfg.fidelity.configuration}"
    # One driver per study, whatever the storage (another work directory or machine may point at the same one);
    # taken before anything is written, so a refused driver leaves its work directory as it found it.
    with study_lease(cfg.storage, work_dir, study_name) as lease:
        if lease.takeover:
            log(lease.takeover)
        verify_before_search(ds, work_dir, log, cfg.preprocess_processes)  # every file decoded whole, once
        check_folds(cfg, fold_count(ds, work_dir, cfg.max_cases))  # before nnU-Net's planning
        return _run_leased(cfg, work_dir, ds, study_name, lease, progress, log)


def _run_leased(cfg: SearchConfig, work_dir: Path, ds, study_name: str, lease, progress: Callable | None,
                log: Callable[[str], None]):
    from autoloss.fingerprinting import compute_fingerprint
    from autoloss.knowledge.ranking import recommend_with_memory
    from autoloss.nnunet.prepare import prepare
    from autoloss.prior import recommend_from_fingerprint

    fp_file = work_dir / "fingerprint.json"
    if fp_file.exists():
        fp = json.loads(fp_file.read_text())
    else:
        fp = compute_fingerprint(ds)
        fp_file.write_text(json.dumps(fp, indent=2))
    space = SearchSpace.load(_spaces_for(cfg.spaces, fp, log))
    objective = cfg.objective
    if objective == "auto":  # the metric of each class's regime, Dice beside it (autoloss.objectives)
        from autoloss.objectives import auto_objective, describe

        objective = auto_objective(fp)
        log(f"metric (auto): {describe(objective)}")
    # The Dice+CE baseline goes first: every search, however small its budget, trains it at the same fidelity
    # so the winner is compared with nnU-Net's default, not with nothing.
    baseline = baseline_spec()
    ranked = recommend_with_memory(fp) if cfg.memory else recommend_from_fingerprint(fp)  # --no-memory: no store
    picks = [r.spec for r in ranked if r.spec.name in space.losses and r.spec != baseline]
    prior = [baseline] + picks[: max(0, cfg.prior_top - 1)]

    user_base = bases.open_user_base(cfg.finetune, ds.root.name, cfg.fidelity.configuration, log)  # --base
    if user_base is not None:
        cfg = replace(cfg, fidelity=replace(cfg.fidelity, configuration=user_base.configuration))
    log(f"nnU-Net planning/preprocessing (once per study; log: {work_dir / 'nnunet_prepare.log'})")
    with open(work_dir / "nnunet_prepare.log", "a") as out, contextlib.redirect_stdout(out):
        prepared = prepare(ds, cfg.fidelity.configuration, work_dir, max_cases=cfg.max_cases,
                           num_processes=int(os.environ["nnUNet_def_n_proc"]), log=log,
                           plans=user_base.plans if user_base else None)
    for fold in cfg.fidelity.folds:
        prepared.split(fold)  # a clear error now, not inside every trial
    confirm_folds = (confirm.confirmation_folds(prepared.num_folds(), cfg.fidelity.folds, cfg.confirm,
                                                lambda f: len(prepared.split(f)[1]))
                     if cfg.confirm.enabled else [])
    # the free folds a split verdict (one Dice+CE training beaten, not the other) adds; not in fine-tune mode,
    # where each new fold would first need its own base (4 x a training)
    extra_folds = [] if not cfg.confirm.enabled or cfg.finetune.enabled else \
        confirm.extension_folds(prepared.num_folds(), cfg.fidelity.folds, confirm_folds, cfg.confirm)
    _log_plan(cfg, confirm_folds, extra_folds, log)
    device = cfg.device or _default_device()
    storage = studies.make_storage(cfg.storage, work_dir)
    # The network is derived once, when the study is made, and read back from its identity on resume.
    # A user's base (--base) fixes the network: its own plans and configuration, as they are.
    network = scaled.network_for(prepared, _network_request(cfg, user_base), device, fp,
                                 (studies.saved_settings(storage, study_name) or {}).get("network"))
    log(scaled.describe(network).replace("judged with", "network:", 1))
    with open(work_dir / "nnunet_prepare.log", "a") as out, contextlib.redirect_stdout(out):
        prepared = scaled.apply(prepared, network, num_processes=int(os.environ["nnUNet_def_n_proc"]), log=log)
    plan = bases.plan_search(cfg, user_base, prepared, confirm_folds, work_dir, log)  # None: from scratch
    settings = {"schema_version": SCHEMA_VERSION, "dataset": prepared.dataset_name, "cases": list(prepared.case_ids),
                "fidelity": cfg.fidelity.to_dict(), "objective": objective, "losses": space.losses,
                "spaces": [Path(s).name for s in space.sources], "network": network,
                "fidelity_mode": plan.identity() if plan else bases.SCRATCH}
    study = studies.open_study(storage, study_name, settings, cfg.seed, cfg.budget, len(prior), cfg.pruner)
    (work_dir / "study.json").write_text(json.dumps(
        {"study_name": study_name, "storage": cfg.storage, "prepared": prepared.to_dict(), "device": device},
        indent=2))
    if recovered := studies.recover_interrupted(study):
        log(f"re-queued {recovered} trial(s) interrupted in an earlier run")
    if studies.enqueue_prior(study, space, prior):
        log("prior enqueued: " + ", ".join(s.describe() for s in prior))
    if cfg.memory:
        memory.enqueue_warm_start(study, space, fp, prior, cfg.memory_top, log)

    executor = _make_executor(cfg, study, device)
    start = time.time()
    job = partial(TrialJob, prepared=prepared, objective=objective, device=device, study_name=study_name,
                  storage_url=cfg.storage, work_dir=str(work_dir), threads=getattr(executor, "threads", None),
                  continuation=plan.continuation if plan else None)
    ready = partial(bases.ensure_bases, plan, study=study, executor=executor, job=job, fidelity=cfg.fidelity,
                    work_dir=work_dir, log=log) if plan else (lambda folds: None)
    try:
        ready(list(cfg.fidelity.folds))
        finished = _screen(cfg, study, space, executor, job, work_dir, start, progress, lease.check, log)
        if cfg.confirm.enabled and finished and not _out_of_time(cfg, start):
            ready(confirm_folds)
            _confirm(cfg, study, executor, job, work_dir, confirm_folds, start, progress, log, lease.check)
            split = compute_verdict(study).split if extra_folds and not _out_of_time(cfg, start) else []
            if split and not confirm.extended(study):
                confirm.extend_plan(study, extra_folds)
                log(f"confirmation extended to fold(s) {', '.join(map(str, extra_folds))}: "
                    f"{confirm.describe_candidates(study, split)} beat one Dice+CE training and not the other, or gained "
                    "within the retraining noise, so one training's luck would decide")
                _confirm(cfg, study, executor, job, work_dir, confirm_folds, start, progress, log, lease.check)
    finally:
        executor.shutdown()
    verdict = save_results(study, work_dir)
    if cfg.memory:
        memory.remember(study, fp, {"configuration": cfg.fidelity.configuration,
                                       "fidelity": cfg.fidelity.to_dict(), "objective": cfg.objective,
                                       "budget": cfg.budget, "cases": len(prepared.case_ids),
                                       "spaces": settings["spaces"],
                                       "fidelity_mode": bases.record_view(plan, study)}, log)
    if cfg.confirm.enabled and not study.user_attrs.get(rec.CONFIRM_PLAN):
        log("the screening did not finish (timeout or failures): no confirmation ran, so no switch verdict")
    if verdict is not None and progress:
        progress("verdict", 0, verdict, study)
    return study


def _network_request(cfg: SearchConfig, user_base) -> str:
    """The --network a study asks for: a user's base trains only continuations of its own network (full)."""
    if user_base is None:
        return cfg.network
    if cfg.network not in ("auto", "full"):
        raise AutolossError(f"--network {cfg.network} with --base: the continuations train the base's own network "
                            f"({user_base.configuration}); drop --network")
    return "full"


def _log_plan(cfg: SearchConfig, confirm_folds: list[int], extra_folds: list[int], log) -> None:
    screening, confirmation, full = confirm.planned_cost(cfg.budget, cfg.fidelity, cfg.confirm, len(confirm_folds))
    candidates = confirm.planned_candidates(cfg.budget, cfg.confirm)
    control = confirm.control_label(confirm.control_seeds(candidates, cfg.confirm.control_seeds))
    conf = (f" + {confirmation} confirmation trainings ({candidates} candidate(s) and {control} on fold(s) "
            f"{', '.join(map(str, confirm_folds))}, {cfg.confirm.epochs or cfg.fidelity.epochs} epochs)"
            if confirmation else " (no confirmation: the verdict can only be keep or inconclusive)")
    if confirmation and candidates and extra_folds:
        more = confirmation // len(confirm_folds) * len(extra_folds)
        conf += (f", {more} more on fold(s) {', '.join(map(str, extra_folds))} if a candidate beats one Dice+CE "
                 "training and not the other, or gains within the retraining noise")
    log(f"planned: {screening} screening trainings (fold(s) {', '.join(map(str, cfg.fidelity.folds))}, "
        f"{cfg.fidelity.epochs} x {cfg.fidelity.iterations_per_epoch} iterations){conf} = "
        f"{full:.3g} x one full nnU-Net training (1000 x 250 iterations)")


def _out_of_time(cfg: SearchConfig, start: float) -> bool:
    return cfg.timeout is not None and time.time() - start > cfg.timeout


def _screen(cfg, study, space, executor, job, work_dir, start, progress, check_lease, log) -> bool:
    """The ask/tell loop over the screening budget; True when the budget is complete or the space holds no loss
    left to screen (``autoloss.searching.repeats``). ``check_lease`` raises once another driver took the study
    over: nothing more is written then."""
    pending: dict[int, optuna.Trial] = {}
    repeats = Repeats(screened_keys(study))
    waiting_on: dict[int, list[optuna.Trial]] = {}  # repeats of a trial still training: told when it ends
    try:
        while True:
            finished = len(studies.counted(study))
            while len(pending) < executor.slots and finished + len(pending) < cfg.budget \
                    and not _out_of_time(cfg, start) and not repeats.exhausted:
                check_lease()
                trial = study.ask()
                spec = _spec_of(trial, space)
                trial.set_user_attr(rec.SPEC, spec.to_dict())
                earlier = repeats.earlier(spec.key())
                if earlier is not None:
                    tell_or_hold(study, trial, earlier, pending, waiting_on)
                    untried = repeats.propose_untried(study, space.losses, None if cfg.seed is None else
                                                      cfg.seed * 10_007 + trial.number, **{rec.SOURCE: "untried"})
                    if repeats.first_repeat(spec.key()):
                        log(f"trial {trial.number}: {spec.describe()} was screened as trial {earlier}: told its "
                            "value, not trained again, not counted" + (f"; next: {untried}, never screened"
                                                                       if untried else ""))
                    continue
                repeats.add(spec.key(), trial.number, spec.name)
                # fine-tune: every continuation on a fold starts alike (common random numbers, as the confirmation)
                default = None if cfg.seed is None else cfg.seed if cfg.finetune.enabled else \
                    cfg.seed * 10_007 + trial.number
                seed = trial.user_attrs.get(rec.SEED, default)
                trial.set_user_attr(rec.SEED, seed)  # a re-run of this trial after an interruption keeps it
                pending[executor.submit(job(number=trial.number, trial_id=studies.trial_id(trial), spec=spec,
                                            fidelity=cfg.fidelity, seed=seed,
                                            trial_dir=str(work_dir / "trials" / f"trial_{trial.number:04d}")))] = trial
                if progress:
                    progress("start", trial.number, spec, study)
            if not pending:
                break
            for outcome in executor.wait():
                check_lease()
                trial = pending.pop(outcome.number)
                _tell(study, trial, outcome, retry=cfg.retry_failed)
                if rec.replaced(study.get_trials(deepcopy=False)[trial.number]):  # re-queued (its worker died)
                    repeats.forget(trial.number)
                for waiting in waiting_on.pop(outcome.number, []):
                    tell_repeat(study, waiting, outcome.number)
                if progress:
                    progress("end", outcome.number, outcome, study)
                save_results(study, work_dir)
    except KeyboardInterrupt:
        studies.requeue(study, list(pending.values()) + [t for ts in waiting_on.values() for t in ts])
        raise
    done = len(studies.counted(study))
    if repeats.exhausted and done < cfg.budget:
        log(f"screening ends after {done} of {cfg.budget} trainings: every loss of the space was screened and the "
            f"last {MAX_IN_A_ROW} proposals repeated one; widen the space (--spaces) to screen more")
    return done >= cfg.budget or repeats.exhausted


def _confirm(cfg, study, executor, job, work_dir, folds, start, progress, log, check_lease) -> None:
    """Re-train the top candidates and Dice+CE on the confirmation folds; record each training as it ends."""
    epochs = cfg.confirm.epochs or cfg.fidelity.epochs
    objective = study.user_attrs[rec.SETTINGS]["objective"]  # resolved (--metric auto: class-wise)
    plan = confirm.make_plan(study, folds, epochs, cfg.confirm.top, cfg.confirm.control_seeds)
    todo = confirm.pending(study, plan)
    names = ", ".join(LossSpec.from_dict(s).describe() for s in plan["candidates"]) or "none"
    log(f"confirmation: {confirm.control_label(plan.get('control_seeds', 1))} and {names} on fold(s) "
        f"{', '.join(map(str, plan['folds']))}: {len(todo)} training(s) to run")
    pending: dict[int, tuple[LossSpec, int, int]] = {}
    queue = list(enumerate(todo, 1))
    while queue or pending:
        while queue and len(pending) < executor.slots and not _out_of_time(cfg, start):
            i, (spec, fold, replicate) = queue.pop(0)
            number = -i  # driver-side id; confirmation trainings are no Optuna trials until recorded
            fidelity = confirm.confirm_fidelity(cfg.fidelity, cfg.confirm, fold)
            name = rec.result_key(spec.key(), replicate).replace("#", "_seed")
            seed = None if cfg.seed is None else cfg.seed + replicate  # replicate 0: the candidates' seed (CRN)
            executor.submit(job(number=number, trial_id=None, spec=spec, fidelity=fidelity, seed=seed,
                                trial_dir=str(work_dir / "trials" / f"confirm_{name}_fold{fold}")))
            pending[number] = (spec, fold, replicate)
            if progress:
                progress("confirm-start", fold, spec, study)
        if not pending:
            break
        for outcome in executor.wait():
            check_lease()
            spec, fold, replicate = pending.pop(outcome.number)
            if cfg.retry_failed and (outcome.reason or "").startswith("worker died"):
                queue.append((outcome.number * -1, (spec, fold, replicate)))  # not recorded: it runs again
                continue
            confirm.record(study, spec, fold, epochs, outcome, objective, replicate)
            if progress:
                progress("confirm-end", fold, outcome, study)
            save_results(study, work_dir)


def _make_executor(cfg: SearchConfig, study: optuna.Study, device: str):
    if (cfg.workers or 1) <= 1 and cfg.ray_address is None:
        return LocalExecutor(study, threads=cfg.cpus_per_trial)
    from autoloss.searching.ray_executor import RayExecutor

    return RayExecutor(workers=cfg.workers, address=cfg.ray_address, device=device,
                       gpus_per_trial=cfg.gpus_per_trial, cpus_per_trial=cfg.cpus_per_trial)


def _spec_of(trial: optuna.Trial, space: SearchSpace) -> LossSpec:
    """The trial's LossSpec: the prior's exact spec for enqueued trials, else sampled from the space. The space's
    parameters are suggested in both cases so the sampler sees every trial the same way."""
    sampled = space.suggest(trial)
    stored = trial.user_attrs.get(rec.SPEC)
    return LossSpec.from_dict(stored) if stored else sampled


def _tell(study: optuna.Study, trial: optuna.Trial, out: TrialOutcome, retry: bool) -> None:
    attrs = {"started": out.started, "ended": out.ended, "worker": out.worker, "node": out.node,
             "cpu_seconds": out.cpu_seconds}
    if out.result:
        attrs[rec.PER_CASE] = {str(f["fold"]): f["per_case"] for f in out.result["folds"]}
        attrs[rec.CURVES] = rec.curves_of(out.result)
        attrs.update(metrics=out.result["metrics"], seconds=out.result["seconds"],
                     epochs_run=out.result["epochs_run"], step_seconds=out.result["step_seconds"],
                     validation_seconds=out.result["validation_seconds"],
                     overhead_seconds=out.result["overhead_seconds"])
    if out.reason:
        attrs[rec.REASON] = out.reason
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if out.state == "complete":
        study.tell(trial, out.value)
    elif out.state == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    elif out.reason and out.reason.startswith("worker died") and retry:
        studies.requeue(study, [trial])
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

