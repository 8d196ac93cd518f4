"""The Python API: the pipeline dataset -> fingerprint -> recommendation -> search -> export -> report, written once.
The command line (``autoloss.cli``) and the demo call only these functions.

    import autoloss
    fp = autoloss.fingerprint("Dataset103_Hippocampus")          # a folder, or an id/name under $nnUNet_raw
    for rec in autoloss.recommend(fp, top=3):                    # or recommend(dataset) directly
        print(rec.spec.describe(), rec.reason)
    result = autoloss.search("Dataset103_Hippocampus", work_dir="runs/hippo", budget=20)
    print(result.verdict.decision, result.ranking.head())
    autoloss.export(result, "trainers/")                         # only a `switch` verdict exports (or trial=N)

No module of the package shares its name with one of these functions (the stages live in ``fingerprinting``,
``prior``, ``searching``, ``exporting``, ``reporting``), so ``autoloss.search`` is always this function, whatever
was imported before. The layers and the direction of imports between them are a contract that the tests check
(``[tool.importlinter]`` in ``pyproject.toml``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autoloss.errors import AutolossError
from autoloss.spec import LossSpec

_FIDELITY_KEYS = ("tta", "nsd_tolerance_mm")


def fingerprint(dataset: str | Path, *, max_cases: int | None = None, num_workers: int | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Label statistics of an nnU-Net raw dataset (folder, or id/name under ``$nnUNet_raw``) as a JSON-able dict."""
    from autoloss.dataset import read_dataset
    from autoloss.fingerprinting import compute_fingerprint

    ds = read_dataset(dataset, max_cases=max_cases)
    return compute_fingerprint(ds, num_workers=num_workers, progress=progress)


def verify(dataset: str | Path, *, max_cases: int | None = None, num_workers: int | None = None,
           progress: bool = False):
    """Check a raw dataset before training (everything nnU-Net's ``verify_dataset_integrity`` checks, plus every
    file decoded whole: truncation, NaN/Inf, all-background labels, images too small). Returns a
    :class:`~autoloss.verification.VerifyReport` (``errors``, ``warnings``: one line each); never raises for a
    finding. Every search runs this first."""
    from autoloss.dataset import read_dataset
    from autoloss.verification import verify_dataset

    return verify_dataset(read_dataset(dataset, max_cases=max_cases), num_workers=num_workers, progress=progress)


def recommend(dataset_or_fingerprint: str | Path | dict[str, Any], *, top: int | None = 5, memory: bool = True,
              max_cases: int | None = None, num_workers: int | None = None, progress: bool = False) -> list:
    """Ranked :class:`~autoloss.prior.Recommendation` s (spec, score, reasons, evidence) for a dataset, a fingerprint
    dict, or a saved fingerprint JSON file. Dice+CE is always in the list. ``memory``: let the knowledge records of
    similar datasets move the rules' scores (False: the rules alone; the knowledge store is not opened)."""
    fp = _as_fingerprint(dataset_or_fingerprint, max_cases, num_workers, progress)
    if memory:
        from autoloss.knowledge.ranking import recommend_with_memory

        return recommend_with_memory(fp, top=top)
    from autoloss.prior import recommend_from_fingerprint

    return recommend_from_fingerprint(fp, top=top)


def _as_fingerprint(source, max_cases, num_workers, progress) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.suffix == ".json":
        from autoloss.fingerprinting import load_fingerprint

        return load_fingerprint(path)
    return fingerprint(source, max_cases=max_cases, num_workers=num_workers, progress=progress)


def default_configuration(dataset: str | Path) -> str:
    """nnU-Net configuration a search trains by default: ``2d`` for 2D data, else ``3d_fullres``."""
    from autoloss.dataset import read_dataset, read_label

    ds = read_dataset(dataset, max_cases=1)
    label, _ = read_label(ds.cases[0], ds)
    return "2d" if sum(s > 1 for s in label.shape) <= 2 else "3d_fullres"


@dataclass
class SearchResult:
    """What a search leaves: the Optuna study, the ranking (one row per training, screening ranked, then the
    confirmation), the verdict (switch / keep / inconclusive) and the work directory with its files."""

    study: Any
    verdict: Any
    ranking: Any  # pandas.DataFrame
    work_dir: Path
    report: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        return self.verdict.decision

    @property
    def summary(self) -> str:
        from autoloss.searching.results import summary_text

        return summary_text(self.study, self.verdict)

    def to_dict(self) -> dict[str, Any]:
        import json

        return {"work_dir": str(self.work_dir), "verdict": self.verdict.to_dict(),
                "report": str(self.report) if self.report else None,
                "files": {k: str(v) for k, v in self.files.items()},
                "ranking": json.loads(self.ranking.to_json(orient="records")) if len(self.ranking) else []}


def search(dataset: str | Path, *, work_dir: str | Path = "autoloss_work", budget: int = 20,
           configuration: str = "auto", epochs: int = 50, iterations_per_epoch: int = 250,
           val_iterations: int = 50, folds: tuple[int, ...] | None = None, metric: str = "auto",
           device: str | None = None, confirm: bool = True, confirm_top: int = 2,
           confirm_folds: tuple[int, ...] | None = None, confirm_epochs: int | None = None, control_seeds: int = 2,
           confirm_extend: bool = True,
           network: str = "auto", from_base: bool = False, base: str | Path | None = None,
           base_epochs: int | None = None, finetune_epochs: int | None = None, finetune_lr: float | None = None,
           write_report: bool = True, progress: Callable | None = None, log: Callable[[str], None] = print,
           **options: Any) -> SearchResult:
    """Screen ``budget`` losses with real nnU-Net trainings, confirm the best on unseen folds, decide the verdict.

    ``network``: the network every training uses: ``full`` (nnU-Net's own), ``small`` or ``tiny`` (scaled from
    nnU-Net's plan for the machine's cost: ``autoloss.nnunet.scaled``); ``auto``: full on a GPU, small on a CPU.

    Fine-tune fidelity: ``from_base`` trains one Dice+CE base per fold (``base_epochs``, default 4 x the fine-tune
    epochs) and every training continues from its fold's base for ``finetune_epochs`` (default ``epochs``);
    ``base``: an nnU-Net results folder made by ``nnUNetv2_train`` instead (its configuration, its first fold for
    the screening and its other folds for the confirmation unless given). ``finetune_lr``: a fixed initial LR
    instead of nnU-Net's tail (``autoloss.nnunet.finetune``). The verdict then compares each candidate with Dice+CE
    continued from the same base (the control arm).

    Confirmation: the ``confirm_top`` best screened losses and Dice+CE re-trained on ``confirm_folds`` (default: the
    first folds the screening did not use, at least 2, more while they hold under 40 cases); Dice+CE is trained
    ``control_seeds`` times per fold (seed, seed + 1) and a switch must beat each training. A gain must also clear the
    retraining noise the two Dice+CE trainings measure. When a candidate beats one Dice+CE training and not the
    other, or gains within that noise, one training's luck decides: with ``confirm_extend`` (and the default
    folds) the free folds left are confirmed too, and the verdict is taken on all of them.

    Re-running with the same ``work_dir`` resumes. ``options``: ``tta``, ``nsd_tolerance_mm`` (validation), and
    any :class:`~autoloss.searching.runner.SearchConfig` field (``storage``, ``study_name``, ``seed``, ``timeout``,
    ``max_cases``, ``spaces``, ``prior_top``, ``pruner``, ``workers``, ``ray_address``, ``gpus_per_trial``,
    ``cpus_per_trial``, ``retry_failed``, ``preprocess_processes``). Writes ``report.html`` at the end unless
    ``write_report`` is False.
    """
    from dataclasses import fields, replace

    from autoloss.nnunet.run import Fidelity
    from autoloss.searching.confirm import ConfirmSettings
    from autoloss.searching.base import FinetuneSettings, user_defaults
    from autoloss.searching.options import check_search_config
    from autoloss.searching.runner import SearchConfig, run_search

    allowed = {f.name for f in fields(SearchConfig)} - {"dataset", "budget", "fidelity", "objective", "work_dir",
                                                         "device", "confirm", "network", "finetune"}
    unknown = sorted(set(options) - allowed - set(_FIDELITY_KEYS))
    if unknown:
        raise AutolossError(f"search: unknown option(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(allowed | set(_FIDELITY_KEYS)))}")
    if not (from_base or base) and (base_epochs or finetune_epochs or finetune_lr):
        raise AutolossError("base_epochs, finetune_epochs and finetune_lr need from_base (--from-base) or a base")
    if base and base_epochs:
        raise AutolossError("base_epochs sets the length of autoloss's own base; a given base (--base) is used as "
                            "it was trained")
    finetune = FinetuneSettings(enabled=bool(from_base or base), base=str(base) if base else None,
                                base_epochs=base_epochs, lr=finetune_lr)
    if base:  # the base decides what is not given: its configuration, its folds
        base_config, base_folds, base_confirm = user_defaults(base)
        folds, confirm_folds = folds or base_folds, confirm_folds or base_confirm or None
        configuration = base_config if configuration == "auto" else configuration
    if finetune.enabled and finetune_epochs:
        epochs = finetune_epochs
    fidelity = Fidelity(configuration=configuration, epochs=epochs, iterations_per_epoch=iterations_per_epoch,
                        val_iterations_per_epoch=val_iterations, folds=tuple(folds or (0,)),
                        **{k: options.pop(k) for k in _FIDELITY_KEYS if k in options})
    if "spaces" in options:
        options["spaces"] = tuple(options["spaces"])
    cfg = SearchConfig(dataset=str(dataset), budget=budget, fidelity=fidelity, objective=metric,
                       work_dir=Path(work_dir), device=device, network=network,
                       confirm=ConfirmSettings(enabled=confirm, top=confirm_top,
                                               folds=tuple(confirm_folds) if confirm_folds else None,
                                               epochs=confirm_epochs, control_seeds=control_seeds,
                                               extend=confirm_extend),
                       finetune=finetune, **options)
    check_search_config(cfg)  # every option, one line, before any work
    if configuration == "auto":
        cfg.fidelity = replace(fidelity, configuration=default_configuration(dataset))
    study = run_search(cfg, progress=progress, log=log)
    result = load_search(cfg.work_dir, study=study)
    if write_report:
        result.report = report(cfg.work_dir)
    return result


def load_search(work_dir: str | Path, *, study_name: str | None = None, study=None) -> SearchResult:
    """The :class:`SearchResult` of a search work directory (finished, interrupted or still running)."""
    from autoloss.searching.results import trials_frame
    from autoloss.searching.verdict import compute_verdict

    work = Path(work_dir).resolve()
    if study is None:
        study = open_study(work, study_name)
    verdict = compute_verdict(study)
    files = {name: work / name for name in ("summary.txt", "verdict.json", "best_loss.json", "results.csv",
                                            "results.md", "report.html") if (work / name).exists()}
    return SearchResult(study=study, verdict=verdict, ranking=trials_frame(study, verdict), work_dir=work,
                        report=files.get("report.html"), files=files)


def open_study(work_dir: str | Path, study_name: str | None = None):
    """The Optuna study of a search work directory (from its ``study.json``)."""
    from autoloss.searching.study import open_work_dir_study

    return open_work_dir_study(Path(work_dir), study_name)


def export(source: SearchResult | LossSpec | str | Path, output: str | Path, *, name: str | None = None,
           params: dict[str, Any] | list[str] | None = None, trial: int | None = None, study_name: str | None = None,
           epochs: int | None = None, iterations_per_epoch: int | None = None, force: bool = False) -> Path:
    """Write an nnU-Net v2 trainer file (``nnUNetTrainer_autoloss_<NAME>.py``) for use with ``nnUNet_extTrainer``.

    ``source``: a :class:`SearchResult` or a search work directory (the verdict's loss; an error on keep or
    inconclusive unless ``trial``), a :class:`LossSpec`, a LossSpec JSON file, a storage URL with
    ``study_name``, or a loss name with ``params`` (a dict, or "NAME=VALUE" strings as on the command line)."""
    import json

    from autoloss.exporting import ExportSource, export_trainer, resolve_source

    if isinstance(source, SearchResult):
        source = source.work_dir
    if isinstance(source, LossSpec):
        src = ExportSource(source, {"source": "python api"})
    else:
        items = [f"{k}={json.dumps(v)}" for k, v in params.items()] if isinstance(params, dict) else params
        src = resolve_source(str(source), items, study_name, trial=trial)
    return export_trainer(src.spec, output, name=name, provenance=src.provenance, epochs=epochs,
                          iterations_per_epoch=iterations_per_epoch, force=force, finetune=src.finetune)


def report(work_dir: str | Path, *, study_name: str | None = None) -> Path:
    """Write ``report.html`` (self-contained, figures embedded) and the figures as PNG files (``figures/``) for a
    search work directory; returns the HTML's path."""
    from autoloss.reporting.html import write_report

    return write_report(Path(work_dir), study_name=study_name)
