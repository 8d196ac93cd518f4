"""What the user reads: tables for recommendations and search results, the comparison with Dice+CE."""
from __future__ import annotations

from typing import Any

from rich.table import Table


def recommendation_table(recs: list, fingerprint: dict[str, Any] | None = None) -> Table:
    title = "Recommended losses"
    if fingerprint:
        title += f" for {fingerprint['dataset'].get('name', '?')}"
    table = Table(title=title, show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("loss")
    table.add_column("score", justify="right")
    table.add_column("why")
    for i, rec in enumerate(recs, 1):
        table.add_row(str(i), rec.spec.describe(), f"{rec.score:.2f}",
                      rec.reason + ("\n[dim]" + "; ".join(dict.fromkeys(rec.evidence)) + "[/dim]" if rec.evidence else ""))
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
        from autoloss.search.records import screening_trials
        from autoloss.search.study import counted

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
