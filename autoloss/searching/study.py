"""The Optuna study: storage, sampler, pruner, the prior's enqueue (once) and the budget.

The study is the single source of truth: every trial (its LossSpec, metrics, timings, failure reason) is stored
in it as it finishes, so a search killed at any point resumes where it stopped. Only the driver asks and tells;
workers just train, so any storage works with any number of workers.
"""
from __future__ import annotations

from pathlib import Path

import optuna

from autoloss.errors import AutolossError
from autoloss.searching.lease import journal_path, storage_error
from autoloss.schema import SCHEMA_VERSION, version_of, with_defaults
from autoloss.searching.records import (INTERRUPTED, PRIOR_FLAG, SEED, SETTINGS, SOURCE, SPEC, SUPERSEDED,
                                       phase, replaced)
from autoloss.spec import LossSpec

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def make_storage(url: str | None, work_dir: Path):
    """Default: an Optuna journal file in the work directory (safe for several processes, unlike SQLite).
    A ``*.journal`` / ``*.log`` path uses that file; any other URL goes to Optuna (e.g. postgresql://...)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = journal_path(url, work_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite"):
        optuna.logging.get_logger("optuna").warning(
            "SQLite storage can lock or duplicate trials with several workers; prefer the default journal file "
            "or a PostgreSQL/MySQL URL")
    try:
        return optuna.storages.get_storage(url)
    except Exception as exc:  # noqa: BLE001 - many driver-specific errors, one user message
        raise AutolossError(storage_error(url, exc)) from None


def journal_path(url: str | None, work_dir: Path) -> Path | None:
    """The journal file behind a storage URL (None for a database)."""
    if url is None or url.endswith((".journal", ".log")):
        return Path(url) if url else Path(work_dir) / "study.journal"
    return None


def work_dir_info(work_dir: Path) -> dict:
    """The ``study.json`` of a search work directory (study name, storage, prepared data)."""
    import json

    info = Path(work_dir) / "study.json"
    if not info.is_file():
        raise AutolossError(f"{work_dir}: not an autoloss search directory (no study.json); run autoloss search "
                            "first")
    try:
        meta = json.loads(info.read_text())
        meta["study_name"]
    except (ValueError, KeyError, TypeError):
        raise AutolossError(f"{info}: damaged (not the JSON a search writes); restore it, or start over with a new "
                            "--work-dir") from None
    return meta


def open_work_dir_study(work_dir: Path, study_name: str | None = None) -> optuna.Study:
    """The Optuna study of a search work directory, found through its ``study.json``, checked to read back whole
    (``autoloss.searching.integrity``) before anyone writes results from it."""
    work = Path(work_dir)
    meta = work_dir_info(work)
    name = study_name or meta["study_name"]
    study = _load_checked(work, meta.get("storage"), name)
    if study is None:
        raise AutolossError(f"{work}: no study named {name!r} in its storage")
    return study


def check_resumable(work_dir: Path, storage_url: str | None) -> None:
    """A search starting in ``work_dir`` whose study (per ``study.json``) is in the same storage: that study must
    read back whole before the search rewrites any result from it."""
    from autoloss.searching import integrity

    work = Path(work_dir)
    if not (work / "study.json").is_file():
        return
    meta = work_dir_info(work)
    if meta.get("storage") != storage_url:
        return  # another storage: another study
    if _load_checked(work, storage_url, meta["study_name"]) is None and (work / integrity.RESULTS).is_file():
        raise AutolossError(f"{journal_path(storage_url, work) or storage_url}: damaged: it holds no study "
                            f"{meta['study_name']!r}, which {work / integrity.RESULTS} has results of; "
                            f"{integrity.ADVICE}")


def _load_checked(work: Path, storage_url: str | None, name: str) -> optuna.Study | None:
    from autoloss.searching import integrity

    rows = integrity.read_results(work)  # first: what it names is in the journal already
    journal = journal_path(storage_url, work)
    if journal is not None:
        integrity.check_journal(journal)
    try:
        study = optuna.load_study(study_name=name, storage=make_storage(storage_url, work))
    except KeyError:
        return None
    integrity.check_results(study, rows, work, str(journal or storage_url))
    return study


def open_study(storage, study_name: str, settings: dict, seed: int | None, budget: int,
               prior_count: int, pruner: str = "median") -> optuna.Study:
    """Create or resume ``study_name``. A resumed study must have been made with the same settings."""
    # TPE's default 10 random startup trials would be half of a 20-trial budget; the prior already gives a
    # spread of strong starting points, so a few random ones are enough to widen the model.
    startup = max(2, min(5, budget // 4))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=prior_count + startup, multivariate=True,
                                         group=True, constant_liar=True)
    if pruner == "median":
        # Wait for a few complete trials and half of the epochs: early pseudo-Dice says little, and the Dice-first
        # schedules of boundary losses only differ after their ramp.
        epochs = settings["fidelity"]["epochs"]
        pruner_obj = optuna.pruners.MedianPruner(n_startup_trials=max(3, prior_count),
                                                 n_warmup_steps=max(1, epochs // 2))
    elif pruner == "none":
        pruner_obj = optuna.pruners.NopPruner()
    else:
        raise AutolossError(f"unknown pruner {pruner!r} (median or none)")
    study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler, pruner=pruner_obj,
                                direction="maximize", load_if_exists=True)
    saved = study.user_attrs.get(SETTINGS)
    if saved is None:
        study.set_user_attr(SETTINGS, settings)
        return study
    if version_of(saved) != SCHEMA_VERSION:
        saved = _migrated(study, saved, settings)
    if saved != settings:
        diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise AutolossError(f"study {study_name!r} was made with other settings ({', '.join(diff)} differ); "
                            "use the same options to resume, or a new --study-name / --work-dir")
    return study


def saved_settings(storage, study_name: str) -> dict | None:
    """The identity a study was made with (None: no such study yet)."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(SETTINGS)
    except KeyError:
        return None


def _migrated(study: optuna.Study, saved: dict, settings: dict) -> dict:
    """A study made by an older autoloss, brought to this schema when that is truthful, else refused in one line.
    Schema 1 studies trained nnU-Net's own network: they resume as ``--network full``, with every later field at
    its default (``autoloss.schema``)."""
    version = version_of(saved)
    if version > SCHEMA_VERSION:
        raise AutolossError(f"study {study.study_name!r} was made by a newer autoloss (schema {version}; this one "
                            f"reads {SCHEMA_VERSION}): upgrade autoloss to resume it")
    if (settings.get("network") or {}).get("size") != "full":
        raise AutolossError(f"study {study.study_name!r} was made by an older autoloss (schema {version}: its trials "
                            "trained nnU-Net's own network); resume it with --network full, or use a new --work-dir")
    migrated = with_defaults(saved) | {"schema_version": SCHEMA_VERSION, "network": settings["network"]}
    if migrated == settings:
        study.set_user_attr(SETTINGS, migrated)
    return migrated


def enqueue_prior(study: optuna.Study, space, specs: list[LossSpec]) -> int:
    """Enqueue the prior's picks once per study (from the driver only); returns how many were enqueued now."""
    if study.user_attrs.get(PRIOR_FLAG):
        return 0
    for spec in specs:
        study.enqueue_trial(space.params_for(spec), user_attrs={SPEC: spec.to_dict(), SOURCE: "prior"},
                            skip_if_exists=True)
    study.set_user_attr(PRIOR_FLAG, True)
    return len(specs)


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Screening trials that count towards the budget: finished, and not interrupted by a kill or Ctrl-C."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if not replaced(t) and phase(t) == "screen"]


def recover_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed driver or worker: mark them failed (interrupted) and queue them again ahead
    of everything waiting, so they run first and nothing completed is repeated. Call only from the one driver."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    requeue(study, running)
    return len(running)


def trial_id(trial) -> int:
    """Optuna's storage id of a trial. Optuna has no public accessor; workers need it to report to the trial."""
    return trial._trial_id


def storage_of(study: optuna.Study):
    """The study's storage. Optuna has no public accessor; used only to mark a trial another process left running
    (``requeue``), which no public call can do."""
    return study._storage


def requeue(study: optuna.Study, trials) -> None:
    """Run ``trials`` (interrupted: Ctrl-C, a kill, a dead worker) again FIRST, in their order, then whatever was
    waiting, in its order: a resumed search trains what an uninterrupted one would have (the same losses for the
    same budget, with the same seeds). Optuna hands out waiting trials lowest number first, and a re-queued trial
    gets a new number, so the trials waiting behind it are re-queued too (the old ones marked superseded)."""
    storage = storage_of(study)
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    for t in sorted(trials, key=lambda t: t.number):
        frozen = storage.get_trial(trial_id(t))
        storage.set_trial_user_attr(trial_id(t), INTERRUPTED, True)
        storage.set_trial_state_values(trial_id(t), optuna.trial.TrialState.FAIL)
        attrs = {k: v for k, v in frozen.user_attrs.items() if k in (SPEC, SOURCE, SEED)}
        study.enqueue_trial(dict(frozen.params) or _fixed_params(frozen), user_attrs=attrs or None)
    if not trials:
        return
    for t in sorted(waiting, key=lambda t: t.number):
        storage.set_trial_user_attr(trial_id(t), SUPERSEDED, True)
        storage.set_trial_state_values(trial_id(t), optuna.trial.TrialState.FAIL)
        study.enqueue_trial(_fixed_params(t), user_attrs=dict(t.user_attrs) or None)


def _fixed_params(trial: optuna.trial.FrozenTrial) -> dict:
    # A trial interrupted before it suggested anything still carries its enqueued params in system attrs.
    return dict(trial.system_attrs.get("fixed_params", {}))
