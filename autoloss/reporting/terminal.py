"""What the user reads at the terminal: tables for recommendations and losses, printed so they stay readable at
80 columns and in pipes, and the live display of a search. (The HTML report with figures: ``reporting.html``.)"""
from __future__ import annotations

import textwrap
from typing import Any

from rich.markup import escape
from rich.table import Table


def recommendation_table(recs: list, fingerprint: dict[str, Any] | None = None) -> Table:
    """One row per loss; each reason on one line (the evidence behind them: :func:`evidence_lines`)."""
    title = "Recommended losses"
    if fingerprint:
        title += f" for {fingerprint['dataset'].get('name', '?')}"
    table = Table(title=escape(title),
                  caption=escape("[rule id] in brackets; --explain prints the evidence behind the rules"))
    table.add_column("#", justify="right")
    table.add_column("loss", no_wrap=True)
    table.add_column("score", justify="right")
    table.add_column("why")
    for i, rec in enumerate(recs, 1):
        # escape: the rule ids in brackets are not rich markup
        table.add_row(str(i), escape(rec.spec.describe()), f"{rec.score:.2f}",
                      escape("\n".join(rec.reasons) if rec.reasons else rec.reason))
    return table


def metric_table(fingerprint: dict[str, Any]) -> Table:
    """Per class: its regime and the metric `autoloss search --metric auto` judges it by, and why."""
    from autoloss.objectives import METRIC_NAMES, auto_objective, describe, metric_plan

    objective = auto_objective(fingerprint)
    table = Table(title="Judged by (--metric auto: " + describe(objective) + "; Dice is always reported)",
                  show_lines=False)
    for col in ("class", "regime", "metric", "why"):
        table.add_column(col)
    for label, p in metric_plan(fingerprint).items():
        table.add_row(f"{label} {p['name']}", p["regime"] or "-", " + ".join(METRIC_NAMES.get(m, m)
                                                                        for m in p["metrics"]), p["why"])
    return table


def region_training_text(suggestion: dict[str, Any] | None, recs: list = (), width: int = 100) -> str:
    """The nested-labels block of `autoloss recommend`: the chains, nnU-Net's region-based training as a
    suggestion (the dataset.json entries, written out, not applied), its evidence, and which losses train it."""
    import json

    if not suggestion:
        return ""

    def wrap(text: str, indent: str = "  ") -> str:
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent)

    out = []
    for c in suggestion["chains"]:
        held = ", ".join(f"{100 * e:.0f} %" for e in c["enclosed"])
        out.append(wrap(f"Nested labels: {' > '.join(c['names'])} (each enclosed by the one before it, which holds "
                        f"{held} of the outer boundary of what it encloses).", ""))
    out.append(wrap("nnU-Net can train nested labels as regions (each layer with everything inside it; one sigmoid "
                    "output per region, Dice + BCE). A suggestion: your dataset.json is not changed. To try it, "
                    "set in a copy of the dataset:"))
    out.append(f'    "labels": {json.dumps(suggestion["labels"])},')
    out.append(f'    "regions_class_order": {json.dumps(suggestion["regions_class_order"])}')
    out.append(wrap("Evidence: " + suggestion["evidence"]))
    refused = suggestion["losses_without_regions"]
    proposed = [r.spec.name for r in recs if r.spec.name in refused]
    out.append(wrap(f"Losses: every autoloss loss trains region-based datasets except {', '.join(refused)} "
                    "(their targets are made from a label map in the data loader)"
                    + (f"; of those above, {', '.join(proposed)} would not run on the regions." if proposed
                       else "; every loss above does.")))
    return "\n".join(out)


def evidence_lines(recs: list) -> list[str]:
    """Each distinct piece of evidence once, with the losses it supports (not repeated per recommendation)."""
    by_evidence: dict[str, list[str]] = {}
    for rec in recs:
        for ev in rec.evidence:
            names = by_evidence.setdefault(ev, [])
            if rec.spec.name not in names:
                names.append(rec.spec.name)
    return [f"- {ev} (supports {', '.join(names)})" for ev, names in by_evidence.items()]


def loss_listing(width: int = 80) -> str:
    """The loss registry as plain text folded at ``width``: one heading line per loss, one line per parameter
    (the meaning folds under itself), readable at 80 columns and in pipes."""
    from autoloss.losses import list_losses

    out = ["Registered losses (parameters are <term>.<name>; absent ones take the default)", ""]
    for d in list_losses():
        out += textwrap.wrap(f"{d.name} = {' + '.join(d.terms)}: {d.description} ({d.reference})", width,
                             subsequent_indent="    ")
        if d.params:
            name_w = max(len(p.name) for p in d.params)
            default_w = max(len(str(p.default)) for p in d.params)
            range_w = max(len(p.range_text()) for p in d.params)
            for p in d.params:
                head = f"  {p.name:<{name_w}}  default {p.default!s:<{default_w}}  {p.range_text():<{range_w}}"
                if len(head) + 2 + len(p.help) <= width:
                    out.append(f"{head}  {p.help}".rstrip())
                else:  # the meaning on its own lines under the parameter, never squeezed into a column
                    out.append(head.rstrip())
                    out += textwrap.wrap(p.help, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def table_width(table: Table) -> int:
    """The width a rich table needs to show every cell unwrapped."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=100_000)
    return Measurement.get(console, console.options, table).maximum


def print_table(table: Table, console=None, file=None) -> None:
    """Print ``table`` so it stays readable: at a terminal wide enough, as a table; at a narrower terminal, one
    block of "column: value" lines per row; when not a terminal (a pipe, a file), at its full width so no value
    is wrapped into fragments."""
    from rich.console import Console

    console = console or Console(file=file)
    width = table_width(table)
    if not console.is_terminal:
        Console(file=console.file, width=width, no_color=True, highlight=False).print(table)
    elif width <= console.width:
        console.print(table)
    else:
        console.print(records_text(table, console.width), markup=False, highlight=False, soft_wrap=True)


def records_text(table: Table, width: int = 80) -> str:
    """A table as blocks of "column: value" lines, one block per row (for terminals narrower than the table)."""
    from rich.text import Text

    def plain(cell) -> str:
        return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain

    headers = [plain(c.header) for c in table.columns]
    cells = [[plain(x) for x in c._cells] for c in table.columns]  # rich has no public cell accessor
    pad = max(map(len, headers), default=0)
    out = textwrap.wrap(plain(table.title), width) if table.title else []
    for r in range(table.row_count):
        out.append("")
        for h, col in zip(headers, cells):
            first = f"{h:>{pad}}: "
            for i, line in enumerate(col[r].splitlines() or [""]):
                out += textwrap.wrap(line, width, initial_indent=first if i == 0 else " " * len(first),
                                     subsequent_indent=" " * len(first)) or [first.rstrip()]
    if table.caption:
        out += [""] + textwrap.wrap(plain(table.caption), width)
    return "\n".join(out)


class search_progress:
    """Live display of a search: trial k of N, the LossSpec running now, the best so far."""

    def __init__(self, console, budget: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), console=console)
        self.task = self.progress.add_task("", total=budget)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, event: str, number: int, payload, study) -> None:
        from autoloss.searching.records import screening_trials
        from autoloss.searching.study import counted

        if event == "verdict":
            return  # the caller prints the verdict after the display has stopped
        if event.startswith("confirm"):
            if event == "confirm-start":
                self.progress.update(self.task, description=f"confirming {payload.describe()} on fold {number}")
            else:
                value = f"{payload.value:.4f}" if payload.value is not None else "-"
                why = f" ({payload.reason})" if payload.reason else ""
                self.console.print(f"confirmation fold {number} {payload.state}: objective {value}{why}")
            return
        done = len(counted(study))
        screened = screening_trials(study)
        best = ""
        if screened:
            top = max(screened, key=lambda t: (t.value, -t.number))
            best = f" | best {top.value:.4f} (trial {top.number})"
        if event == "start":
            self.progress.update(self.task, completed=done, description=f"trial {number}: {payload.describe()}{best}")
        else:
            value = f"{payload.value:.4f}" if payload.value is not None else "-"
            why = f" ({payload.reason})" if payload.reason else ""
            self.console.print(f"trial {number} {payload.state}: objective {value}{why}")
            self.progress.update(self.task, completed=done, description=best.strip(" |"))
