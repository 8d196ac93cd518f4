"""`autoloss` command line: a thin layer over the Python API (argument parsing, printing, exit codes).

User errors (AutolossError) print one line and exit 2; nothing here holds logic the API lacks.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
from pathlib import Path

from autoloss import api
from autoloss.errors import AutolossError


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def _logger(console):
    # Log lines are plain text (a path with brackets is no markup) and never folded into a pipe's 80 columns.
    return lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)


def _json(obj) -> None:
    from autoloss.searching.results import _dumps  # NaN -> null: every JSON reader can load it

    print(_dumps(obj))


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from autoloss.fingerprinting import fingerprint_table, save_fingerprint
    from autoloss.reporting.terminal import print_table

    fp = api.fingerprint(args.dataset, max_cases=args.max_cases, num_workers=args.num_workers,
                         progress=not args.json)
    out = Path(args.output) if args.output else None
    if out is not None:
        save_fingerprint(fp, out)
    if args.json:
        print(json.dumps(fp, indent=2))
        return 0
    print_table(fingerprint_table(fp))
    if out is not None:
        print(f"fingerprint saved to {out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = api.verify(args.dataset, max_cases=args.max_cases, num_workers=args.num_workers, progress=not args.json)
    if args.json:
        _json(report.to_dict())
    for line in report.warnings:
        print(f"autoloss: warning: {line}", file=sys.stderr)
    for line in report.errors:
        print(f"autoloss: error: {line}", file=sys.stderr)
    if not args.json and report.ok:
        print(f"{report.dataset}: {report.cases} case(s), {report.files} files decoded whole in {report.seconds:.2f} s:"
              f" no errors" + (f", {len(report.warnings)} warning(s)" if report.warnings else ""))
    return 0 if report.ok else 2


def cmd_recommend(args: argparse.Namespace) -> int:
    from autoloss.prior import region_training
    from autoloss.reporting.terminal import evidence_lines, print_table, recommendation_table

    if args.fingerprint:
        from autoloss.fingerprinting import load_fingerprint

        fp = load_fingerprint(args.fingerprint)
    else:
        fp = api.fingerprint(args.dataset, max_cases=args.max_cases, num_workers=args.num_workers,
                             progress=not args.json)
    recs = api.recommend(fp, top=args.top, memory=not args.no_memory)
    if args.json:
        from autoloss.objectives import metric_plan

        out = [r.to_dict() for r in recs]
        regions = region_training(fp)
        for r in out:  # the metric that judges each class travels with the losses (one list, as before)
            r["judged_by"] = metric_plan(fp)
            r["nested_labels"] = regions
        print(json.dumps(out, indent=2))
        return 0
    from autoloss.reporting.terminal import metric_table, region_training_text

    print_table(recommendation_table(recs, fp))
    print_table(metric_table(fp))
    if regions := region_training(fp):
        print("\n" + region_training_text(regions, recs))
    if args.explain:
        print("\nevidence behind the rules (survey and studies):")
        for line in evidence_lines(recs):
            print(line)
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from autoloss.losses import format_loss_table, list_losses
    from autoloss.reporting.terminal import loss_listing, table_width

    if args.json:
        print(json.dumps([d.to_dict() for d in list_losses()], indent=2))
        return 0
    console = _console()
    table = format_loss_table()
    if console.is_terminal and table_width(table) <= console.width:
        console.print(table)
    else:  # a narrow terminal or a pipe: plain text, folded per parameter, never a 3-character column
        print(loss_listing(console.width if console.is_terminal else 80), end="")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from autoloss.reporting.terminal import search_progress

    # With --json, stdout carries the result only; the progress display and the log go to stderr.
    console = _console(stderr=args.json)
    options = dict(storage=args.storage, study_name=args.study_name, seed=args.seed, timeout=args.timeout,
                   max_cases=args.max_cases, spaces=tuple(args.space), prior_top=args.prior_top, pruner=args.pruner,
                   workers=args.workers, ray_address=args.ray_address, gpus_per_trial=args.gpus_per_trial,
                   cpus_per_trial=args.cpus_per_trial, retry_failed=args.retry_failed,
                   preprocess_processes=args.num_workers, tta=args.tta, nsd_tolerance_mm=args.nsd_tolerance,
                   memory=not args.no_memory)
    with search_progress(console, args.budget) as progress:
        result = api.search(args.dataset, work_dir=args.work_dir, budget=args.budget, configuration=args.config,
                            epochs=args.epochs, iterations_per_epoch=args.iterations_per_epoch,
                            val_iterations=args.val_iterations, folds=tuple(args.folds) if args.folds else None,
                            metric=args.metric,
                            device=args.device, confirm=not args.no_confirm, confirm_top=args.confirm_top,
                            confirm_folds=args.confirm_folds, confirm_epochs=args.confirm_epochs,
                            control_seeds=args.control_seeds, confirm_extend=not args.no_confirm_extend,
                            network=args.network, from_base=args.from_base, base=args.base,
                            base_epochs=args.base_epochs, finetune_epochs=args.finetune_epochs,
                            finetune_lr=args.finetune_lr, progress=progress, log=_logger(console),
                            write_report=not args.no_report, **options)
    if args.json:
        _json(result.to_dict())
        return 0
    df = result.ranking
    cols = [c for c in ("rank", "phase", "trial", "fold", "state", "loss", "objective", "dice", "gain", "ci_low",
                        "ci_high", "p_value", "cases") if c in df and df[c].notna().any()]
    shown = df[cols].head(20).astype(object)
    console.print(shown.where(shown.notna(), "").to_string(index=False, float_format=lambda v: f"{v:.4f}"),
                  markup=False, soft_wrap=True)
    work = Path(args.work_dir)
    console.print(f"results: {work / 'results.csv'}, verdict: {work / 'verdict.json'}", soft_wrap=True)
    if result.report:
        console.print(f"report: {result.report}", soft_wrap=True)
    if result.decision == "switch":
        console.print(f"export the verdict's loss: autoloss export {shlex.quote(args.work_dir)} -o DIR",
                      soft_wrap=True)
    # The verdict is the last thing printed: it is the answer the search exists to give.
    console.print(result.summary, markup=False, soft_wrap=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autoloss.exporting import install_into_nnunet, supports_ext_trainer, usage_lines

    path = api.export(args.source, args.output, name=args.name, params=args.param, trial=args.trial,
                      study_name=args.study_name, epochs=args.epochs,
                      iterations_per_epoch=args.iterations_per_epoch, force=args.force)
    installed = install_into_nnunet(path, force=args.force) if args.install_into_nnunet else None
    dataset = args.dataset or _exported_dataset(path)
    if args.json:
        _json({"trainer_file": str(path), "class": path.stem, "installed_into_nnunet": str(installed) if installed
               else None, "usage": usage_lines(path, dataset)})
        return 0
    print(f"wrote {path}")
    if installed:
        print(f"installed into nnU-Net: {installed}")
    elif not supports_ext_trainer():
        print("this nnunetv2 has no nnUNet_extTrainer support (added in 2.8): re-run with --install-into-nnunet, "
              "or upgrade nnunetv2")
        return 0
    print("use it:")
    for line in usage_lines(path, dataset):
        print(f"  {line}")
    return 0


def _exported_dataset(path: Path) -> str | None:
    # The trainer file records its provenance; the dataset it came from goes into the printed commands.
    import ast

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.Assign) and getattr(item.targets[0], "id", "") == "PROVENANCE":
                    try:
                        return (ast.literal_eval(item.value) or {}).get("dataset")
                    except ValueError:
                        return None
    return None


def cmd_report(args: argparse.Namespace) -> int:
    from autoloss.reporting.html import FIGURES_DIR

    html = api.report(args.work_dir, study_name=args.study_name)
    figures = sorted((html.parent / FIGURES_DIR).glob("*.png"))
    if args.json:
        _json({"report": str(html), "figures": [str(f) for f in figures]})
        return 0
    print(f"wrote {html} ({len(figures)} figures embedded; PNG files in {html.parent / FIGURES_DIR})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from autoloss.cli.demo import run_demo

    console = _console(stderr=args.json)
    path = run_demo(Path(args.work_dir), budget=args.budget, console=console)
    if args.json:
        _json({"trainer_file": str(path), "work_dir": str(Path(args.work_dir).resolve())})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoloss",
        description="Measure an nnU-Net dataset, recommend and search its loss, export the winner as a trainer.",
    )
    parser.add_argument("--version", action="version", version=f"autoloss {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def dataset_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("dataset", metavar="DATASET", nargs=None if required else "?",
                       help="nnU-Net raw dataset folder, or a dataset id/name under $nnUNet_raw")
        p.add_argument("-j", "--num-workers", type=int, default=None,
                       help="processes reading cases (default: min(4, cores))")
        p.add_argument("--max-cases", type=int, default=None, help="use only the first M cases (sorted)")

    p = sub.add_parser("fingerprint", help="measure label statistics -> fingerprint.json")
    dataset_args(p)
    p.add_argument("-o", "--output", help="write the fingerprint JSON here")
    p.add_argument("--json", action="store_true", help="print the fingerprint as JSON")
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser("verify", help="check a dataset before training: every file decoded whole, one line per "
                                      "problem (exit 2 on errors)",
                       description="Everything nnU-Net's verify_dataset_integrity checks, plus every image and label "
                                   "decoded whole: truncated files, NaN/Inf voxels, labels that are background "
                                   "everywhere, images too small for any network. Every search runs it first.")
    dataset_args(p)
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("recommend", help="fingerprint -> ranked losses with the reason for each")
    dataset_args(p, required=False)
    p.add_argument("--fingerprint", help="use a saved fingerprint JSON instead of measuring DATASET")
    p.add_argument("--top", type=int, default=5, help="how many losses to list (Dice+CE is always listed)")
    p.add_argument("--json", action="store_true", help="print a JSON list (name, params, schedule, score, reason)")
    p.add_argument("--explain", action="store_true", help="also print the evidence behind each rule, once")
    p.add_argument("--no-memory", action="store_true",
                   help="the rules alone: do not read the knowledge records of similar datasets")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("losses", help="list the registered losses with their parameters, defaults and ranges")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_losses)

    p = sub.add_parser("search", help="prior-seeded Optuna search; every trial is a real nnU-Net training",
                       description="Search losses for DATASET. Defaults suit a GPU (3d_fullres where planned, 50 "
                                   "epochs of 250 iterations, fold 0). CPU smoke run: --device cpu --config 2d "
                                   "--epochs 2 --iterations-per-epoch 10 --val-iterations 2 --max-cases 6 --budget 3. "
                                   "Re-running the same command resumes the study.")
    p.add_argument("dataset", metavar="DATASET", help="nnU-Net raw dataset folder, or a dataset id/name")
    p.add_argument("--budget", type=int, default=20, help="trials to finish (default 20)")
    p.add_argument("--config", default="auto", help="nnU-Net configuration (default: 3d_fullres, 2d for 2D data)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iterations-per-epoch", type=int, default=250)
    p.add_argument("--val-iterations", type=int, default=50, help="pseudo-Dice iterations per epoch")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="screening fold(s) (default 0; with --base its first fold with a checkpoint)")
    p.add_argument("--confirm-folds", type=int, nargs="+", default=None,
                   help="folds for the confirmation (default: the first folds the screening did not use, at "
                        "least 2, more while they hold under 40 cases)")
    p.add_argument("--control-seeds", type=int, default=2,
                   help="Dice+CE trainings per confirmation fold, each with the next seed; a switch must beat "
                        "each (default 2; 1: one, cheaper, blind to a lucky or unlucky Dice+CE training)")
    p.add_argument("--no-confirm-extend", action="store_true",
                   help="never add folds to the confirmation (default: when a candidate beats one Dice+CE training "
                        "and not the other, or gains within the retraining noise, the free folds left are "
                        "confirmed too before the verdict)")
    p.add_argument("--confirm-top", type=int, default=2, help="screening candidates confirmed (default 2)")
    p.add_argument("--confirm-epochs", type=int, default=None,
                   help="epochs of a confirmation training (default: the screening's --epochs)")
    p.add_argument("--no-confirm", action="store_true",
                   help="screening only: the verdict can then only be keep or inconclusive")
    g = p.add_argument_group("fine-tune fidelity: continue every training from a Dice+CE base")
    g.add_argument("--from-base", action="store_true",
                   help="train one Dice+CE base per fold (once, in the work directory), then continue every "
                        "loss from it; the verdict compares with Dice+CE continued the same way")
    g.add_argument("--base", metavar="PATH", help="your nnU-Net results folder (TRAINER__PLANS__CONFIG made by "
                                                  "nnUNetv2_train) as the base; only read, never written")
    g.add_argument("--base-epochs", type=int, help="epochs of autoloss's own base (default 4 x --finetune-epochs)")
    g.add_argument("--finetune-epochs", type=int, help="epochs of every continuation (default --epochs)")
    g.add_argument("--finetune-lr", type=float,
                   help="fixed initial LR of the continuations (default: nnU-Net's tail, 0.01 (E/(N+E))^0.9)")
    p.add_argument("--max-cases", type=int, default=None, help="search on the first M cases only")
    p.add_argument("--metric", default="auto", choices=["auto", "dice", "nsd", "dice+nsd"],
                   help="objective (default auto: per class, Dice plus its regime's metric, e.g. clDice for "
                        "tubular and lesion F1 for many-instance classes; Dice is always reported)")
    p.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1)")
    p.add_argument("--tta", action="store_true", help="mirror test-time augmentation at validation")
    p.add_argument("--space", nargs="+", default=["compound"],
                   help="search space names in search_spaces/ or YAML paths (default: compound)")
    p.add_argument("--prior-top", type=int, default=4, help="prior picks enqueued first (Dice+CE always added)")
    p.add_argument("--pruner", default="median", choices=["median", "none"])
    p.add_argument("--storage", help="Optuna storage URL (default: a journal file in the work dir)")
    p.add_argument("--study-name")
    p.add_argument("--work-dir", default="autoloss_work", help="where preprocessing, trials and results go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--network", default="auto", choices=["auto", "full", "small", "tiny"],
                   help="the network every training uses: nnU-Net's own (full), or one scaled from its plan to a "
                        "CPU's cost (small, tiny); default auto: full on a GPU, small on a CPU")
    p.add_argument("--workers", type=int, default=None,
                   help="trials at a time through Ray (default: 1; with --ray-address, one per GPU of the cluster, on CPU one per node)")
    p.add_argument("--ray-address", help="use an existing Ray cluster ('auto' or host:port)")
    p.add_argument("--gpus-per-trial", type=float, help="default 1 when GPUs are visible")
    p.add_argument("--cpus-per-trial", type=int, help="CPU threads per trial (default: cores / workers)")
    p.add_argument("--retry-failed", action="store_true", help="re-run a trial whose worker died")
    p.add_argument("--no-memory", action="store_true",
                   help="no warm start from similar recorded datasets, and write no knowledge record")
    p.add_argument("-j", "--num-workers", type=int, default=None, help="nnU-Net preprocessing processes")
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    p.add_argument("--json", action="store_true", help="print the result (verdict, ranking, files) as JSON; the "
                                                        "progress goes to stderr")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("demo", help="the whole job on a generated dataset (CPU, a few minutes)")
    p.add_argument("--work-dir", default="autoloss_demo")
    p.add_argument("--budget", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the exported trainer and work dir as JSON at the end")
    p.set_defaults(func=lambda a: _demo(a))

    p = sub.add_parser("export", help="write a LossSpec as an nnU-Net v2 trainer file (for nnUNet_extTrainer)",
                       description="SOURCE: a search work directory (the verdict's loss; nothing when the verdict is "
                                   "keep or inconclusive, unless --trial N), a LossSpec JSON file, a storage URL with "
                                   "--study-name, or a loss name with --param NAME=VALUE.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, help="folder for the trainer file (nnUNet_extTrainer)")
    p.add_argument("--name", help="trainer is nnUNetTrainer_autoloss_<NAME> (default: the loss name)")
    p.add_argument("--param", action="append", default=[], help="NAME=VALUE, with a loss name as SOURCE")
    p.add_argument("--study-name", help="with a storage URL, or to pick a study in a work directory")
    p.add_argument("--trial", type=int, help="export this trial's loss even though the verdict did not pick it "
                                             "(the file records that it was not the verdict)")
    p.add_argument("--epochs", type=int, help="training epochs (default: nnU-Net's 1000)")
    p.add_argument("--iterations-per-epoch", type=int, help="default: nnU-Net's 250")
    p.add_argument("--dataset", help="dataset to put in the printed commands")
    p.add_argument("--force", action="store_true", help="overwrite an existing, different trainer file")
    p.add_argument("--install-into-nnunet", action="store_true",
                   help="also copy the file into nnunetv2's trainer folder (for versions without nnUNet_extTrainer)")
    p.add_argument("--json", action="store_true", help="print the trainer file, class and usage as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="report.html with figures (and the PNGs) for a search work directory",
                       description="Write WORK_DIR/report.html (self-contained: figures embedded, no network) and "
                                   "WORK_DIR/figures/*.png: the ranking with confidence intervals against Dice+CE, "
                                   "per-class Dice per loss, pseudo-Dice per epoch per trial, the verdict's paired "
                                   "per-case plot and the optimisation history. A search writes it at its end.")
    p.add_argument("work_dir", metavar="WORK_DIR")
    p.add_argument("--study-name", help="the study in the work directory (default: the search's)")
    p.add_argument("--json", action="store_true", help="print the report and figure paths as JSON")
    p.set_defaults(func=cmd_report)

    from autoloss.cli.knowledge import add_knowledge_parser

    add_knowledge_parser(sub)
    return parser


def _version() -> str:
    from autoloss import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "recommend" and not (args.dataset or args.fingerprint):
        print("autoloss: error: recommend needs DATASET or --fingerprint FILE", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except AutolossError as exc:
        for line in str(exc).splitlines() or [""]:  # several findings: one line each
            print(f"autoloss: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("autoloss: interrupted; finished trials are saved (re-run the same command to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a folder not writable, a file gone, a full disk: one line naming it, not a traceback
        if exc.errno not in _USER_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"autoloss: error: {where}{exc.strerror or exc} (check the path, its permissions and free space)",
              file=sys.stderr)
        return 2


_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR,
                errno.EISDIR}
