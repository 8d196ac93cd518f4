"""`autoloss` command line: a thin layer over the Python API (argument parsing, printing, exit codes).

User errors (AutolossError) print one line and exit 2; nothing here holds logic the API lacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from autoloss.errors import AutolossError


def _console():
    from rich.console import Console

    return Console()


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from autoloss.dataset import read_dataset
    from autoloss.fingerprint import compute_fingerprint, fingerprint_table, save_fingerprint

    ds = read_dataset(args.dataset, max_cases=args.max_cases)
    fp = compute_fingerprint(ds, num_workers=args.num_workers, progress=not args.json)
    out = Path(args.output) if args.output else None
    if out is not None:
        save_fingerprint(fp, out)
    if args.json:
        print(json.dumps(fp, indent=2))
    else:
        console = _console()
        console.print(fingerprint_table(fp))
        if out is not None:
            console.print(f"fingerprint saved to {out}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from autoloss.prior import recommend_from_fingerprint

    if args.fingerprint:
        from autoloss.fingerprint import load_fingerprint

        fp = load_fingerprint(args.fingerprint)
    else:
        from autoloss.dataset import read_dataset
        from autoloss.fingerprint import compute_fingerprint

        ds = read_dataset(args.dataset, max_cases=args.max_cases)
        fp = compute_fingerprint(ds, num_workers=args.num_workers, progress=not args.json)
    recs = recommend_from_fingerprint(fp, top=args.top)
    if args.json:
        print(json.dumps([r.to_dict() for r in recs], indent=2))
        return 0
    from autoloss.report import recommendation_table

    _console().print(recommendation_table(recs, fp))
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    from autoloss.losses import format_loss_table, list_losses

    if args.json:
        print(json.dumps([d.to_dict() for d in list_losses()], indent=2))
    else:
        _console().print(format_loss_table())
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

    p = sub.add_parser("recommend", help="fingerprint -> ranked losses with the reason for each")
    dataset_args(p, required=False)
    p.add_argument("--fingerprint", help="use a saved fingerprint JSON instead of measuring DATASET")
    p.add_argument("--top", type=int, default=5, help="how many losses to list (Dice+CE is always listed)")
    p.add_argument("--json", action="store_true", help="print a JSON list (name, params, schedule, score, reason)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("losses", help="list the registered losses with their parameters, defaults and ranges")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_losses)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# Commands defined in their own modules register here (search, export, demo) to keep this file thin.
_EXTRA_COMMANDS: list = []


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
        print(f"autoloss: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("autoloss: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
