"""`autoloss knowledge`: list, show, add/import, export, check (--fix) and remove knowledge records."""
from __future__ import annotations

import argparse
import json
import sys

from autoloss.knowledge.schema import network_of


def _store():
    from autoloss.knowledge.store import KnowledgeStore

    return KnowledgeStore()


def _best(record: dict) -> str:
    results = [r for r in record["results"] if r["gain"] is not None]
    if not results:
        return "-"
    r = max(results, key=lambda r: r["gain"])
    ci = r.get("ci")
    interval = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci and None not in ci else ""
    return f"{r['spec']['name']} {100 * r['gain']:+.1f}{interval}"


def summary(record: dict) -> dict:
    """The one-row view of a record (list --json prints these)."""
    v = record["verdict"]
    return {"id": record["id"], "kind": record["kind"], "dataset": record["dataset"], "metric": record["metric"],
            "decision": v["decision"], "loss": (v.get("loss") or {}).get("name"), "losses": len(record["results"]),
            "best_gain": _best(record), "network": (network_of(record) or {}).get("label"),
            "estimated_features": bool(record.get("estimated_features")),
            "created": record.get("created"), "source": record.get("source")}


def cmd_list(args: argparse.Namespace) -> int:
    store = _store()
    rows = [summary(r) for r in store.records(seeds=not args.no_seeds)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"knowledge records ({store.file}; seeds read-only)")
    for col in ("id", "kind", "dataset", "metric", "verdict", "best gain (points)", "losses", "network"):
        table.add_column(col, no_wrap=col in ("id", "dataset"))
    for r in rows:
        verdict = r["decision"] + (f" -> {r['loss']}" if r["loss"] else "")
        table.add_row(r["id"], r["kind"] + (" (est.)" if r["estimated_features"] else ""), r["dataset"],
                      r["metric"], verdict, r["best_gain"], str(r["losses"]), r["network"] or "")
    from autoloss.reporting.terminal import print_table

    print_table(table, Console())
    return 0


def _say(args: argparse.Namespace, text: str, result: dict) -> int:
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    # A record is JSON already: --json is accepted for symmetry with every other command.
    print(json.dumps(_store().get(args.id), indent=2))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    added, skipped = _store().import_file(args.file)
    return _say(args, f"added {added} record(s), skipped {skipped} already known",
                {"file": args.file, "added": added, "skipped": skipped})


def cmd_export(args: argparse.Namespace) -> int:
    n = _store().export(args.file, force=args.force, seeds=args.seeds)
    return _say(args, f"wrote {n} record(s) to {args.file}", {"file": args.file, "records": n})


def cmd_remove(args: argparse.Namespace) -> int:
    r = _store().remove(args.id)
    return _say(args, f"removed {r['id']} ({r['dataset']})", {"removed": r["id"], "dataset": r["dataset"]})


def cmd_check(args: argparse.Namespace) -> int:
    store = _store()
    problems = store.check()
    good = len(store.user_records()) if not problems else None
    if not problems:
        return _say(args, f"{store.file}: {good} record(s), every line valid", {"file": str(store.file),
                                                                            "bad_lines": [], "moved": 0})
    if args.fix:
        moved, aside = store.move_aside()
        return _say(args, f"moved {moved} bad line(s) from {store.file} to {aside}; the good records stay",
                    {"file": str(store.file), "bad_lines": problems, "moved": moved, "moved_to": str(aside)})
    if args.json:
        print(json.dumps({"file": str(store.file), "bad_lines": problems, "moved": 0}, indent=2))
    for problem in problems:
        print(f"autoloss: error: {problem} (`autoloss knowledge check --fix` moves it aside)", file=sys.stderr)
    return 2


def add_knowledge_parser(sub) -> None:
    p = sub.add_parser("knowledge", help="the records of confirmed searches that teach the prior",
                       description="Records hold fingerprint statistics and confirmed paired results only (no "
                                   "images, no case names): share them with export / import. Stored in "
                                   "$AUTOLOSS_HOME/knowledge (default ~/.autoloss).")
    ks = p.add_subparsers(dest="knowledge_command", required=True, metavar="ACTION")
    p.add_argument("--json", action="store_true", help="print results as JSON (also accepted after ACTION)")
    q = ks.add_parser("list", help="list records (the shipped seeds first)")
    q.add_argument("--no-seeds", action="store_true", help="only your own records")
    q.set_defaults(func=cmd_list)
    q = ks.add_parser("show", help="print one record (id or a unique prefix)")
    q.add_argument("id")
    q.set_defaults(func=cmd_show)
    for name in ("add", "import"):
        q = ks.add_parser(name, help="add records from a JSON-lines file (validated; duplicates skipped)")
        q.add_argument("file")
        q.set_defaults(func=cmd_add)
    q = ks.add_parser("export", help="write your records to a JSON-lines file to share")
    q.add_argument("file")
    q.add_argument("--seeds", action="store_true", help="include the shipped seed records")
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    q.set_defaults(func=cmd_export)
    q = ks.add_parser("check", help="name every bad line of your records file (exit 2 if any); --fix moves them "
                                    "aside to records.jsonl.rejected")
    q.add_argument("--fix", action="store_true", help="move the bad lines, verbatim, to records.jsonl.rejected")
    q.set_defaults(func=cmd_check)
    q = ks.add_parser("remove", help="delete one of your records")
    q.add_argument("id")
    q.set_defaults(func=cmd_remove)
    for q in ks.choices.values():
        # SUPPRESS: `autoloss knowledge --json list` and `... list --json` both work.
        q.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON")
