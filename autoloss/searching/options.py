"""A search's options, checked in one place before any work (the API builds the config; the CLI calls the API).

Each wrong value is one line naming the option and what is allowed; nothing is read, planned or trained before.
Folds that depend on the dataset (``--confirm-folds 99``) are checked against the split the search will use
(``fold_count``) right after the dataset is read, still before nnU-Net's planning.
"""
from __future__ import annotations

from autoloss.errors import AutolossError
from autoloss.nnunet.run import OBJECTIVES

PRUNERS = ("median", "none")


def _at_least(value, minimum, option: str, what: str = "") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum):
        raise AutolossError(f"{option} must be at least {minimum}{what}, got {value!r}")


def _folds(folds, option: str) -> None:
    if folds is None:
        return
    bad = [f for f in folds if isinstance(f, bool) or not isinstance(f, int) or f < 0]
    if bad:
        raise AutolossError(f"{option} {' '.join(map(str, folds))}: folds are numbers 0, 1, 2, ...")
    if len(set(folds)) != len(folds):
        raise AutolossError(f"{option} {' '.join(map(str, folds))}: a fold is listed twice")


def check_search_config(cfg) -> None:
    """Raise AutolossError (one line) for the first option of ``cfg`` (a SearchConfig) that cannot work."""
    fid, cs = cfg.fidelity, cfg.confirm
    if cfg.objective not in OBJECTIVES:
        raise AutolossError(f"unknown metric {cfg.objective!r}; use one of {', '.join(OBJECTIVES)}")
    if cfg.pruner not in PRUNERS:
        raise AutolossError(f"unknown pruner {cfg.pruner!r} ({' or '.join(PRUNERS)})")
    _at_least(cfg.budget, 1, "--budget")
    _at_least(fid.epochs, 1, "--epochs")
    _at_least(fid.iterations_per_epoch, 1, "--iterations-per-epoch")
    _at_least(fid.val_iterations_per_epoch, 1, "--val-iterations", " (the pseudo-Dice the pruner reads)")
    if fid.nsd_tolerance_mm is None or not fid.nsd_tolerance_mm > 0:
        raise AutolossError(f"--nsd-tolerance must be above 0 mm, got {fid.nsd_tolerance_mm!r}")
    if not fid.folds:
        raise AutolossError("--folds needs at least one fold")
    _folds(list(fid.folds), "--folds")
    _at_least(cfg.workers, 1, "--workers")
    _at_least(cfg.cpus_per_trial, 1, "--cpus-per-trial")
    if cfg.gpus_per_trial is not None and not cfg.gpus_per_trial > 0:
        raise AutolossError(f"--gpus-per-trial must be above 0, got {cfg.gpus_per_trial!r}")
    _at_least(cfg.preprocess_processes, 1, "-j/--num-workers")
    _at_least(cfg.max_cases, 1, "--max-cases")
    _at_least(cfg.prior_top, 1, "--prior-top")
    if cfg.timeout is not None and not cfg.timeout > 0:
        raise AutolossError(f"--timeout must be above 0 seconds, got {cfg.timeout!r}")
    if cs.enabled:
        _at_least(cs.top, 1, "--confirm-top")
        _at_least(cs.num_folds, 1, "the number of confirmation folds")
        _at_least(cs.epochs, 1, "--confirm-epochs")
        _at_least(cs.control_seeds, 1, "--control-seeds")
        _folds(list(cs.folds) if cs.folds else None, "--confirm-folds")
        reused = sorted(set(cs.folds or ()) & set(fid.folds))
        if reused:
            raise AutolossError(f"--confirm-folds {' '.join(map(str, reused))} also screened: the verdict must come "
                                "from folds the screening never saw")


def check_folds(cfg, available: int) -> None:
    """Screening and confirmation folds against the ``available`` folds of the split (before any planning)."""
    from autoloss.searching.confirm import confirmation_folds

    bad = [f for f in cfg.fidelity.folds if f >= available]
    if bad:
        raise AutolossError(f"--folds {' '.join(map(str, bad))}: the split has folds 0..{available - 1}")
    if cfg.confirm.enabled:
        confirmation_folds(available, cfg.fidelity.folds, cfg.confirm)
