"""Export a LossSpec as an nnU-Net v2 trainer file that `nnUNetv2_train -tr` finds through ``nnUNet_extTrainer``.

The file is a few lines: a subclass of ``autoloss.nnunet.trainer.nnUNetTrainer_autoloss`` (the class every search
trial trains with) that sets ``LOSS_SPEC`` and, optionally, the epoch count. No loss code is copied into it.
A fine-tune search exports the recipe it tested (:func:`finetune_recipe`): a trainer that fine-tunes from a base
under ``nnUNetv2_train -pretrained_weights``, and beside it the from-scratch approximation.
"""
from __future__ import annotations

import json
import os
import pprint
import shlex
import site
import sysconfig
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autoloss.errors import AutolossError, check_writable
from autoloss.spec import LossSpec


PREFIX = "nnUNetTrainer_autoloss_"

TEMPLATE = '''"""nnU-Net v2 trainer exported by autoloss {version} on {date}.

Loss: {describe}
{provenance_text}
Use it:
    export nnUNet_extTrainer={folder}
    nnUNetv2_train DATASET CONFIG FOLD -tr {class_name}
(nnUNet_extTrainer must also be set for nnUNetv2_predict with this trainer.)
"""
from autoloss.nnunet.trainer import nnUNetTrainer_autoloss


class {class_name}(nnUNetTrainer_autoloss):
    LOSS_SPEC = {spec}
    NUM_EPOCHS = {epochs}
    NUM_ITERATIONS_PER_EPOCH = {iterations}
    PROVENANCE = {provenance}
'''


@dataclass
class ExportSource:
    spec: LossSpec
    provenance: dict[str, Any]
    finetune: dict[str, Any] | None = None  # a fine-tune search's recipe (finetune_recipe)


def resolve_source(source: str, params: list[str] | None = None, study_name: str | None = None,
                   trial: int | None = None) -> ExportSource:
    """SOURCE is a search work directory, a LossSpec JSON file, a storage URL (+ study name) or a loss name.

    From a search (work directory or storage) the export follows the verdict: the `switch` loss, or an error when
    the verdict is `keep` or `inconclusive`; ``trial`` exports that trial's loss anyway, recorded as not the
    verdict's choice."""
    path = Path(source)
    if path.is_dir():
        if not (path / "study.json").exists():
            raise AutolossError(f"{path}: not an autoloss search directory (no study.json); "
                                "give a work directory, a LossSpec JSON file or a loss name")
        from autoloss.searching.study import open_work_dir_study

        study = open_work_dir_study(path, study_name)  # refuses a study that does not read back whole
        return _from_study(study, trial)
    if path.suffix == ".json":
        if not path.exists():
            raise AutolossError(f"{path}: no such LossSpec file")
        data = _read_json(path)
        return ExportSource(LossSpec.from_dict(data), dict(data.get("provenance") or {"source": str(path)}))
    if "://" in source or source.endswith((".journal", ".log")):
        if not study_name:
            raise AutolossError("exporting from a storage URL needs --study-name")
        return _from_study(_load_study(source, study_name), trial)
    if os.sep in source or source.startswith(("~", ".")) or (os.altsep and os.altsep in source):
        # a path, not a loss name (loss names hold no path separator)
        raise AutolossError(f"{source}: no such search work directory or LossSpec file; give a work directory, a "
                            "LossSpec JSON file, a storage URL with --study-name, or a loss name")
    if trial is not None:
        raise AutolossError("--trial needs a search work directory or a storage URL as SOURCE")
    return ExportSource(LossSpec(source, _parse_params(params or [])), {"source": "command line"})


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AutolossError(f"{path}: not valid JSON ({exc})") from None


def _parse_params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise AutolossError(f"--param {item!r}: expected NAME=VALUE, e.g. focal.gamma=2")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _load_study(storage_url: str, study_name: str):
    import optuna

    from autoloss.searching.integrity import check_journal
    from autoloss.searching.study import journal_path, make_storage

    journal = journal_path(storage_url, Path("."))
    if journal is not None:
        if not journal.is_file():
            raise AutolossError(f"{journal}: no such journal file")
        check_journal(journal)
    try:
        return optuna.load_study(study_name=study_name, storage=make_storage(storage_url, Path(".")))
    except KeyError:
        raise AutolossError(f"no study named {study_name!r} in {storage_url}") from None


def _from_study(study, trial: int | None) -> ExportSource:
    import optuna

    from autoloss.searching import records as rec
    from autoloss.searching.verdict import compute_verdict

    study_name = study.study_name
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        raise AutolossError(f"study {study_name!r} has no completed trial yet: run or resume `autoloss search` first")
    from autoloss.nnunet.scaled import describe

    verdict = compute_verdict(study)
    settings = study.user_attrs.get(rec.SETTINGS, {})
    provenance = {"dataset": settings.get("dataset"), "study": study_name, "objective": settings.get("objective"),
                  "fidelity": settings.get("fidelity"), "judged_with": describe(settings.get("network")),
                  "verdict": verdict.decision,
                  "verdict_message": verdict.message}
    if trial is None:
        if verdict.decision != "switch":
            raise AutolossError(f"nothing exported: the verdict is {verdict.decision.upper()} ({verdict.message}) "
                                "Use --trial N to export a trial anyway.")
        c = verdict.comparison.overall
        return ExportSource(verdict.loss, provenance | {"chosen_by": "verdict", "gain": c.mean_gain,
                                                        "ci": list(c.ci), "p_value": c.p_value, "cases": c.cases},
                            finetune_recipe(study, None))
    chosen = next((t for t in study.get_trials(deepcopy=False) if t.number == trial), None)
    if chosen is None or rec.spec_of(chosen) is None:
        raise AutolossError(f"study {study_name!r} has no trial {trial} (see results.csv for trial numbers)")
    spec = rec.spec_of(chosen)
    note = "the verdict's loss" if verdict.decision == "switch" and spec == verdict.loss else \
        f"chosen with --trial {trial}, NOT the verdict's choice (verdict: {verdict.decision})"
    return ExportSource(spec, provenance | {"chosen_by": note, "trial": trial, "value": chosen.value,
                                            "metrics": chosen.user_attrs.get(rec.METRICS)},
                        finetune_recipe(study, chosen))


def supports_ext_trainer() -> bool:
    import nnunetv2.paths

    return hasattr(nnunetv2.paths, "nnUNet_extTrainer")


def export_trainer(spec: LossSpec, out_dir: str | Path, *, name: str | None = None,
                   provenance: dict | None = None, epochs: int | None = None,
                   iterations_per_epoch: int | None = None, force: bool = False,
                   finetune: dict | None = None) -> Path:
    """Write ``out_dir/<class name>.py``; returns its path. Refuses to overwrite a different file unless forced.
    ``finetune``: a fine-tune search's recipe (``finetune_recipe``): the file then fine-tunes from a base."""
    from autoloss import __version__
    from autoloss.losses import validate_spec

    validate_spec(spec)
    for option, value in (("--epochs", epochs), ("--iterations-per-epoch", iterations_per_epoch)):
        if value is not None and value < 1:
            raise AutolossError(f"{option} must be at least 1, got {value}")
    name = spec.name.replace("+", "_") if name is None else name  # "DiceCE+clDice" -> a class-name part
    if not name.isidentifier():
        raise AutolossError(f"--name {name!r} is not a valid Python identifier (letters, digits, _; no leading digit)")
    out_dir = Path(out_dir).resolve()
    if _is_site_packages(out_dir):
        raise AutolossError(f"{out_dir} is inside site-packages: nnU-Net imports every module of an "
                            "nnUNet_extTrainer folder, so give it a folder of its own")
    class_name = PREFIX + name
    provenance = provenance or {}
    fields = dict(
        version=__version__, date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), describe=spec.describe(),
        provenance_text="".join(f"{k}: {v}\n" for k, v in provenance.items() if k != "metrics" and v is not None),
        folder=shlex.quote(str(out_dir)), class_name=class_name, spec=_py(spec.to_dict()), epochs=epochs,
        iterations=iterations_per_epoch, provenance=_py(provenance))
    text = finetune_text(fields, finetune, provenance) if finetune else TEMPLATE.format(**fields)
    target = out_dir / f"{class_name}.py"
    if target.exists() and not force:
        if _body(target.read_text()) == _body(text):
            return target
        raise AutolossError(f"{target} exists with different content; use --force to overwrite it")
    check_writable(out_dir, "the trainer file")
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    compile(text, str(target), "exec")  # never leave a file that breaks nnU-Net's trainer lookup
    os.replace(tmp, target)
    return target


def install_into_nnunet(trainer_file: Path, force: bool = False) -> Path:
    """For nnunetv2 without nnUNet_extTrainer: copy the file where that version looks for trainers."""
    import nnunetv2

    dest_dir = Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer" / "variants" / "autoloss"
    dest_dir.mkdir(parents=True, exist_ok=True)
    (dest_dir / "__init__.py").touch()
    dest = dest_dir / trainer_file.name
    if dest.exists() and not force and dest.read_text() != trainer_file.read_text():
        raise AutolossError(f"{dest} exists with different content; use --force to overwrite it")
    dest.write_text(trainer_file.read_text())
    return dest


def usage_lines(trainer_file: Path, dataset: str | None = None) -> list[str]:
    """The shell commands that train and predict with an exported trainer, quoted so they paste as they are."""
    class_name = trainer_file.stem
    tuned = finetune_usage(trainer_file, dataset)
    if tuned:
        return tuned
    ds = shlex.quote(dataset) if dataset else "DATASET"
    return [f"export nnUNet_extTrainer={shlex.quote(str(trainer_file.parent))}",
            f"nnUNetv2_train {ds} CONFIG FOLD -tr {class_name}",
            f"nnUNetv2_predict -i INPUT -o OUTPUT -d {ds} -c CONFIG -f FOLD -tr {class_name}"]


def _body(text: str) -> str:
    # The date line changes between exports of the same spec; compare everything else.
    return "\n".join(line for line in text.splitlines() if not line.startswith('"""nnU-Net v2 trainer exported'))


def _py(value: Any) -> str:
    return pprint.pformat(json.loads(json.dumps(value, default=float)), indent=4, width=100, sort_dicts=True)


def _is_site_packages(path: Path) -> bool:
    roots = {Path(p).resolve() for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]}
    return any(path == r or r in path.parents for r in roots)


# ---- the fine-tune recipe --------------------------------------------------------------------------------------
FINETUNE_TEMPLATE = '''"""nnU-Net v2 trainers exported by autoloss {version} on {date}: fine-tune with {describe}.

What was tested: {describe} continued for {epochs} epochs x {iterations} iterations from a Dice+CE base
({base}), the whole base network loaded (output heads included), initial LR {lr:.4g} decaying to 0 by nnU-Net's
poly schedule, against Dice+CE continued the same way from the same base with the same seed (the control).
{provenance_text}
1. {class_name}: the recipe that was tested. It loads BASE_CHECKPOINT (fold K: fold_K/checkpoint_final.pth) whole
   before its first epoch, as the search's continuations did. nnU-Net's own -pretrained_weights would leave the
   output heads fresh; given the same checkpoint it is accepted and the trainer restores the heads after it
   (another checkpoint is refused). An interrupted fine-tune resumes with --c.
{finetune_commands}

2. {class_name}_fromscratch: an APPROXIMATION of what was tested, for a user without a base: one nnU-Net
   training of {total} epochs with Dice+CE until epoch {switch}, then {describe} for the last {epochs} epochs (its
   LR at the switch is nnU-Net's, {switch_lr:.4g}; {iterations_note}).
    nnUNetv2_train {dataset} {configuration} FOLD -tr {class_name}_fromscratch
(nnUNet_extTrainer must also be set for nnUNetv2_predict with these trainers.)
"""
from autoloss.nnunet.trainer import nnUNetTrainer_autoloss


class {class_name}(nnUNetTrainer_autoloss):
    LOSS_SPEC = {spec}
    NUM_EPOCHS = {epochs}
    NUM_ITERATIONS_PER_EPOCH = {iterations}
    INITIAL_LR = {lr!r}
    BASE_CHECKPOINT = {base_checkpoint!r}
    PROVENANCE = {provenance}


class {class_name}_fromscratch(nnUNetTrainer_autoloss):
    LOSS_SPEC = {spec}
    WARMUP_LOSS_SPEC = {warmup}
    WARMUP_EPOCHS = {switch}
    NUM_EPOCHS = {total}
    PROVENANCE = {approx_provenance}
'''
NNUNET_EPOCHS = 1000  # the approximation's length: nnU-Net's default schedule


def finetune_recipe(study, trial=None) -> dict | None:
    """What a fine-tune study tested, for the exporter (None for a from-scratch study): the continuation's epochs
    (the confirmation's for the verdict's loss, else the trial's), iterations, initial LR, the bases by fold."""
    from autoloss.searching import records as rec
    from autoloss.searching.base import bases

    settings = study.user_attrs.get(rec.SETTINGS) or {}
    mode = settings.get("fidelity_mode") or {}
    if mode.get("mode") != "finetune":
        return None
    plan = study.user_attrs.get(rec.CONFIRM_PLAN) or {}
    if trial is None or rec.phase(trial) == "confirm":
        epochs = trial.user_attrs.get(rec.EPOCHS) if trial is not None else plan.get("epochs")
    else:
        epochs = mode["finetune_epochs"]
    fid = settings.get("fidelity") or {}
    return {"epochs": int(epochs or mode["finetune_epochs"]), "iterations_per_epoch": fid.get("iterations_per_epoch"),
            "initial_lr": mode["lr"]["initial_lr"], "lr_recipe": mode["lr"]["recipe"],
            "base_folder": mode["base"]["folder"], "base_source": mode["base"]["source"],
            "base_epochs": mode["base"]["epochs"], "configuration": fid.get("configuration"),
            "folds": sorted(bases(study)) or sorted(set(fid.get("folds", [])) | set(plan.get("folds", []))),
            "dataset": settings.get("dataset")}


def finetune_text(fields: dict, recipe: dict, provenance: dict) -> str:
    """The trainer file of a fine-tune verdict (``fields``: the plain template's; ``--epochs`` and
    ``--iterations-per-epoch`` of the export replace the tested ones)."""
    from autoloss.losses import baseline_spec

    epochs = fields["epochs"] or recipe["epochs"]
    iterations = fields["iterations"] or recipe["iterations_per_epoch"]
    switch = max(0, NNUNET_EPOCHS - epochs)
    tuned = provenance | {"finetune": recipe | {"epochs": epochs, "iterations_per_epoch": iterations}}
    approx = {"approximation_of": fields["class_name"], "switch_epoch": switch}
    lines = finetune_usage_lines(fields["class_name"], Path(fields["folder"]), tuned["finetune"],
                                 tuned["finetune"]["dataset"])
    return FINETUNE_TEMPLATE.format(
        **(fields | {"epochs": epochs, "iterations": iterations, "provenance": _py(tuned)}),
        lr=float(recipe["initial_lr"]),
        base=f"{'your' if recipe['base_source'] == 'user' else 'autoloss'}'s, {recipe['base_epochs']} epochs, "
             f"{recipe['base_folder']}",
        finetune_commands="\n".join("    " + line for line in lines),
        base_checkpoint=str(Path(recipe["base_folder"]) / "fold_{fold}" / "checkpoint_final.pth"),
        iterations_note="nnU-Net's 250 iterations per epoch" if iterations in (None, 250) else
        f"nnU-Net's 250 iterations per epoch, not the {iterations} tested",
        total=NNUNET_EPOCHS, switch=switch, switch_lr=0.01 * (1 - switch / NNUNET_EPOCHS) ** 0.9,
        dataset=shlex.quote(str(recipe.get("dataset") or "DATASET")),
        configuration=shlex.quote(str(recipe.get("configuration") or "CONFIG")),
        warmup=_py(baseline_spec().to_dict()), approx_provenance=_py(approx))


def finetune_usage_lines(class_name: str, folder: Path, recipe: dict, dataset: str | None) -> list[str]:
    """Shell-quoted commands: one fine-tune per fold that has a base (``-pretrained_weights`` names the base the
    trainer loads whole, heads included; it may be left out), and the prediction."""
    q = shlex.quote
    d, c = q(str(dataset or "DATASET")), q(str(recipe.get("configuration") or "CONFIG"))
    lines = [f"export nnUNet_extTrainer={q(str(folder))}"]
    for fold in recipe.get("folds") or [0]:
        ckpt = Path(recipe["base_folder"]) / f"fold_{fold}" / "checkpoint_final.pth"
        lines.append(f"nnUNetv2_train {d} {c} {fold} -tr {class_name} -pretrained_weights {q(str(ckpt))}")
    lines.append(f"nnUNetv2_predict -i INPUT -o OUTPUT -d {d} -c {c} -f FOLD -tr {class_name}")
    return lines


def finetune_usage(trainer_file: Path, dataset: str | None = None) -> list[str] | None:
    """The commands of an exported fine-tune trainer file (None for a plain one)."""
    import ast

    for node in ast.parse(Path(trainer_file).read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == trainer_file.stem:
            for item in node.body:
                if isinstance(item, ast.Assign) and getattr(item.targets[0], "id", "") == "PROVENANCE":
                    recipe = (ast.literal_eval(item.value) or {}).get("finetune")
                    if recipe:
                        return finetune_usage_lines(node.name, trainer_file.parent, recipe,
                                                    dataset or recipe.get("dataset"))
    return None
