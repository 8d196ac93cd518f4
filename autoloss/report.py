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
