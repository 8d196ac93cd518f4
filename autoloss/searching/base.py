"""The fine-tune fidelity of a search (``--from-base``, ``--base PATH``): one Dice+CE base per fold used, then
every screening and confirmation training continues from its fold's base for ``--finetune-epochs``.

- autoloss's own base: trained once per (dataset, cases, plans, configuration, length, seed) under
  ``WORK/bases/<key>/`` in nnU-Net's results layout, resumable (a checkpoint every epoch), reused by every search
  and confirmation in the work directory, validated once (``fold_K/autoloss_base.json`` beside it);
- the user's base (an ``nnUNetv2_train`` results folder): read and checked (``autoloss.nnunet.base_folder``), never
  written; the study adopts its plans and configuration; its folds are only validated here.
Bases run through the search's executor (in-process or Ray) like any training. A base whose validation Dice is
below ``MIN_BASELINE_SCORE`` learned nothing, and the search is refused in one line: no continuation from it could
be judged. The control arm needs no code of its own: Dice+CE is enqueued first and confirmed on every fold, and
in this mode it is Dice+CE *continued* from the same base with the same seed as every candidate.

What the study records (its identity, ``fidelity_mode`` in the settings; the knowledge record; ``results.csv``)
is built here, in one dict: :meth:`FinetunePlan.identity`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import optuna

from autoloss.errors import AutolossError
from autoloss.losses import baseline_spec
from autoloss.nnunet import finetune as ft
from autoloss.nnunet.base_folder import UserBase, check_base, open_base, seconds_per_iteration
from autoloss.nnunet.prepare import PreparedDataset
from autoloss.paired_stats import MIN_BASELINE_SCORE

SCRATCH = {"mode": "scratch"}
# autoloss's own base trains this many times the fine-tune epochs (GPU defaults: 200 + 50 epochs of 250
# iterations, a quarter of nnU-Net's 1000-epoch schedule). To be replaced by the scaled network's measured
# plateau once that lands; --base-epochs sets it.
BASE_EPOCHS_PER_FINETUNE_EPOCH = 4
BASE_ATTR = "autoloss_base_fold{fold}"  # study attribute per fold: the base's record (validation, hash, curves)


@dataclass(frozen=True)
class FinetuneSettings:
    """How a search's trainings start: from scratch (``enabled`` False) or continued from a Dice+CE base."""

    enabled: bool = False
    base: str | None = None  # a user's nnU-Net results folder; None: autoloss trains its own
    base_epochs: int | None = None  # autoloss's own base; None: BASE_EPOCHS_PER_FINETUNE_EPOCH x fine-tune epochs
    lr: float | None = None  # None: nnU-Net's tail (autoloss.nnunet.finetune.continuation_lr)


@dataclass
class FinetunePlan:
    """A fine-tune study's bases and recipe, resolved once the data is prepared."""

    base_dir: Path  # nnU-Net results layout: fold_K/checkpoint_final.pth
    base_epochs: int
    finetune_epochs: int
    lr: dict
    base_fidelity: Any  # the own base's Fidelity (all folds); None for a user's base
    seed: int | None
    user: UserBase | None = None
    results_root: Path | None = None  # own base: nnUNet_results of the base training
    folds: tuple[int, ...] = ()  # the folds the study uses (a user's base: only their checkpoints are its identity)

    @property
    def continuation(self) -> ft.Continuation:
        return ft.Continuation(str(self.base_dir), float(self.lr["initial_lr"]))

    def identity(self) -> dict:
        """The study identity's ``fidelity_mode``: what a resumed search must match."""
        base: dict[str, Any] = {"source": "user" if self.user else "autoloss", "folder": str(self.base_dir),
                                "epochs": self.base_epochs}
        if self.user:
            base.update(trainer=self.user.trainer, plans=self.user.plans_name,
                        configuration=self.user.configuration,
                        checkpoints={str(f): ft.file_sha256(self.user.checkpoints[f]) for f in self.folds})
        else:
            base.update(iterations_per_epoch=self.base_fidelity.iterations_per_epoch, seed=self.seed)
        return {"mode": "finetune", "base": base, "finetune_epochs": self.finetune_epochs, "lr": self.lr}


def user_defaults(base_path: str | Path) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """(configuration, screening folds, confirmation folds) a search from a user's base uses when not given: the
    base's configuration, its first fold with a checkpoint, and all its other folds with one."""
    base = open_base(base_path)
    folds = tuple(base.checkpoints)
    return base.configuration, folds[:1], folds[1:]


def open_user_base(settings: FinetuneSettings, dataset_name: str, configuration: str,
                   log: Callable[[str], None]) -> UserBase | None:
    """The user's base (None without ``--base``), checked against the dataset and the requested configuration."""
    if not settings.base:
        return None
    base = open_base(settings.base)
    if base.dataset_name != dataset_name:
        raise AutolossError(f"--base {base.path}: trained on {base.dataset_name}, but this search is on {dataset_name}")
    if configuration not in ("auto", base.configuration):
        raise AutolossError(f"--base {base.path} is a {base.configuration} model; drop --config {configuration} "
                            "(the search trains the base's configuration)")
    log(f"base: {base.describe()}, folds with a checkpoint: {', '.join(map(str, base.checkpoints))}"
        + (f"; without one (not used): {', '.join(map(str, base.unfinished))}" if base.unfinished else ""))
    return base


def make_plan(settings: FinetuneSettings, user: UserBase | None, prepared: PreparedDataset, fidelity,
              folds: list[int], work_dir: Path, seed: int | None) -> FinetunePlan:
    """Resolve the bases and the LR recipe; a user's base is checked against the study on ``folds``."""
    if fidelity.epochs < 1:
        raise AutolossError("--finetune-epochs must be at least 1")
    if user is not None:
        check_base(user, prepared, folds)
        epochs = int(ft.read_checkpoint(user.checkpoints[min(folds)]).get("current_epoch") or 1000)
        return FinetunePlan(user.path, epochs, fidelity.epochs, ft.lr_recipe(epochs, fidelity.epochs, settings.lr),
                            None, seed, user, folds=tuple(sorted(set(folds))))
    epochs = settings.base_epochs or BASE_EPOCHS_PER_FINETUNE_EPOCH * fidelity.epochs
    if epochs < 1:
        raise AutolossError("--base-epochs must be at least 1")
    base_fidelity = replace(fidelity, epochs=epochs)
    key = hashlib.sha1(json.dumps({
        "dataset": prepared.dataset_name, "cases": list(prepared.case_ids), "plans": prepared.load_plans(),
        "configuration": prepared.configuration, "epochs": epochs,
        "iterations_per_epoch": fidelity.iterations_per_epoch, "val_iterations": fidelity.val_iterations_per_epoch,
        "seed": seed}, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(work_dir) / "bases" / key
    return FinetunePlan(ft.base_folder(root, prepared), epochs, fidelity.epochs,
                        ft.lr_recipe(epochs, fidelity.epochs, settings.lr), base_fidelity, seed, None, root,
                        tuple(sorted(set(folds))))


def plan_search(cfg, user: UserBase | None, prepared: PreparedDataset, confirm_folds: list[int], work_dir: Path,
                log: Callable[[str], None]) -> FinetunePlan | None:
    """The fine-tune plan of a search (``cfg``: its SearchConfig; None from scratch), its cost logged."""
    from autoloss.searching import confirm

    if not cfg.finetune.enabled:
        return None
    folds = list(cfg.fidelity.folds) + list(confirm_folds)
    plan = make_plan(cfg.finetune, user, prepared, cfg.fidelity, folds, work_dir, cfg.seed)
    full = confirm.planned_cost(cfg.budget, cfg.fidelity, cfg.confirm, len(confirm_folds))[2]
    log_cost(plan, folds, prepared, round(full * confirm.FULL_TRAINING_ITERATIONS), log)
    return plan


def log_cost(plan: FinetunePlan, folds: list[int], prepared: PreparedDataset, continuation_iterations: int,
             log: Callable[[str], None]) -> None:
    """What the bases and the continuations cost (a user's base: at the speed its own training log shows)."""
    from autoloss.searching.confirm import FULL_TRAINING_ITERATIONS

    lr = plan.lr
    log(f"fine-tune: every training continues from its fold's Dice+CE base for {plan.finetune_epochs} epochs, "
        f"initial LR {lr['initial_lr']:.3g} ({lr['recipe']}, {lr['decay']}; the whole base network loaded, heads "
        "included); the control arm is Dice+CE continued the same way with the same seed")
    cases = sum(len(prepared.split(f)[1]) for f in folds)
    if plan.user is None:
        it = plan.base_fidelity.iterations_per_epoch
        log(f"bases: Dice+CE, {plan.base_epochs} x {it} iterations on fold(s) {', '.join(map(str, folds))} "
            f"(each trained once, then reused: {plan.base_dir})")
        return
    speed = seconds_per_iteration(plan.user)
    hours = f"; at the {speed:.2f} s/iteration of the base's own training about " \
            f"{continuation_iterations * speed / 3600:.1f} h" if speed else ""
    log(f"continuations: {continuation_iterations} iterations in all = "
        f"{continuation_iterations / FULL_TRAINING_ITERATIONS:.3g} x one full nnU-Net training{hours} "
        f"(the {plan.user.configuration} network of the base; {cases} validation cases on fold(s) "
        f"{', '.join(map(str, folds))})")


def bases(study: optuna.Study) -> dict[int, dict]:
    """The base records of a study, by fold."""
    prefix, out = BASE_ATTR.split("{")[0], {}
    for key, value in study.user_attrs.items():
        if key.startswith(prefix):
            out[int(key[len(prefix):])] = value
    return dict(sorted(out.items()))


def ensure_bases(plan: FinetunePlan, folds: list[int], study: optuna.Study, executor, job: Callable, fidelity,
                 work_dir: Path, log: Callable[[str], None]) -> dict[int, dict]:
    """Make the base of every fold in ``folds`` ready (train, resume, or reuse), record it in the study, and
    refuse a base that learned nothing. ``job``: the search's TrialJob factory; ``fidelity``: the study's (a
    user's base is validated as the continuations are)."""
    done = bases(study)
    todo = []
    for fold in folds:
        checkpoint = plan.base_dir / f"fold_{fold}" / ft.CHECKPOINT
        recorded = done.get(fold) or _own_record(plan, fold)
        if recorded and checkpoint.is_file() and recorded.get("sha256") == ft.file_sha256(checkpoint):
            if fold not in done:
                study.set_user_attr(BASE_ATTR.format(fold=fold), recorded)
            continue
        todo.append(fold)
    if todo:
        log(f"{'validating the base' if plan.user else 'training the Dice+CE base'} of fold(s) "
            f"{', '.join(map(str, todo))} ...")
    pending = {}
    queue = list(todo)
    while queue or pending:
        while queue and len(pending) < executor.slots:
            fold = queue.pop(0)
            number = -(100_000 + fold)  # driver-side id, apart from confirmation jobs
            training = ft.BaseTraining(checkpoint=str(plan.user.checkpoints[fold])) if plan.user else \
                ft.BaseTraining(results_root=str(plan.results_root), seed=plan.seed)
            executor.submit(job(number=number, trial_id=None, spec=baseline_spec(),
                                fidelity=replace(plan.base_fidelity or fidelity, folds=(fold,)),
                                seed=plan.seed, trial_dir=str(Path(work_dir) / "trials" / f"base_fold{fold}"),
                                continuation=None, base=training))
            pending[number] = fold
        for outcome in executor.wait():
            fold = pending.pop(outcome.number)
            if outcome.state != "complete":
                raise AutolossError(f"the Dice+CE base of fold {fold} failed: {outcome.reason} (log: "
                                    f"{Path(work_dir) / 'trials' / f'base_fold{fold}'}); re-run to resume it")
            record = {k: v for k, v in outcome.result.items() if k != "validation_seconds"}
            study.set_user_attr(BASE_ATTR.format(fold=fold), record)
            log(f"base fold {fold}: validation Dice {record['metrics']['mean']['dice']:.4f} after "
                f"{record['epochs']} epochs" + (f" (resumed at epoch {record['resumed_from']})"
                                                if record.get("resumed_from") else ""))
    ready = {f: r for f, r in bases(study).items() if f in folds}
    for fold, record in ready.items():
        dice = record["metrics"]["mean"]["dice"]
        if not dice >= MIN_BASELINE_SCORE:
            how = "train a longer base (--base-epochs)" if plan.user is None else "train it longer with nnU-Net"
            raise AutolossError(f"the Dice+CE base of fold {fold} reached validation Dice {dice:.3f} after "
                                f"{record['epochs']} epochs: it learned nothing, so no continuation from it can be "
                                f"judged; {how}, or search from scratch (drop --from-base)")
    return ready


def _own_record(plan: FinetunePlan, fold: int) -> dict | None:
    path = ft.base_record_path(plan.base_dir, fold)
    if plan.user is not None or not path.is_file():
        return None
    return json.loads(path.read_text())


def record_view(plan: FinetunePlan | None, study: optuna.Study) -> dict:
    """``fidelity_mode`` as a knowledge record carries it: no paths, the bases' validation Dice per fold."""
    if plan is None:
        return dict(SCRATCH)
    identity = plan.identity()
    base = {k: v for k, v in identity["base"].items() if k not in ("folder", "checkpoints")}
    base["validation_dice"] = {str(f): r["metrics"]["mean"]["dice"] for f, r in bases(study).items()}
    return identity | {"base": base}


def finetune_rows(study: optuna.Study, rows: list[dict]) -> list[dict]:
    """``results.csv`` rows with the fidelity that produced them; in fine-tune mode each row also carries its
    fold's base Dice, and one row per base (phase ``base``) comes first."""
    mode = (study.user_attrs.get("autoloss_settings") or {}).get("fidelity_mode") or SCRATCH
    if mode.get("mode") != "finetune":
        return [r | {"fidelity": "scratch"} for r in rows]
    found = bases(study)
    screen_folds = (study.user_attrs.get("autoloss_settings") or {}).get("fidelity", {}).get("folds", [])

    def base_dice(fold) -> float | None:
        folds = [fold] if fold is not None else screen_folds
        values = [found[f]["metrics"]["mean"]["dice"] for f in folds if f in found]
        return sum(values) / len(values) if values else None

    out = []
    for fold, record in found.items():
        m = record["metrics"]
        row = {"phase": "base", "trial": None, "fold": fold, "state": "complete",
               "loss": f"Dice+CE base ({record['epochs']} epochs)", "source": record.get("source"),
               "objective": None, "dice": m["mean"].get("dice"), "nsd": m["mean"].get("nsd")}
        row.update({f"{metric}_{cls}": v for cls, vals in m.items() if cls != "mean" for metric, v in vals.items()})
        out.append(row | {"epochs": record["epochs"], "seconds": record.get("seconds")})
    out += [r | {"base_dice": base_dice(r.get("fold"))} for r in rows]
    return [r | {"fidelity": "finetune"} for r in out]


def base_summary(study: optuna.Study) -> str | None:
    """One line on the bases of a fine-tune study (None for a from-scratch one)."""
    found = bases(study)
    if not found:
        return None
    first = next(iter(found.values()))
    return (f"fine-tuned from {'your' if first.get('source') == 'user' else 'its own'} Dice+CE base(s) of "
            f"{first['epochs']} epochs, validation Dice " + ", ".join(
                f"fold {f} {r['metrics']['mean']['dice']:.4f}" for f, r in found.items()))
