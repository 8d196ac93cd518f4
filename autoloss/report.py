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


def trials_frame(study):
    """One row per finished or running trial, best first: the ranked table of a search."""
    import optuna
    import pandas as pd

    from autoloss.spec import LossSpec

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("interrupted") or t.state == optuna.trial.TrialState.WAITING:
            continue
        spec = t.user_attrs.get("autoloss_spec")
        m = t.user_attrs.get("metrics") or {}
        row = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "loss": LossSpec.from_dict(spec).describe() if spec else "?",
            "source": t.user_attrs.get("source", "sampler"),
            "objective": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
            "dice": (m.get("mean") or {}).get("dice"),
            "nsd": (m.get("mean") or {}).get("nsd"),
        }
        for cls, vals in m.items():
            if cls != "mean":
                row[f"dice_{cls}"] = vals.get("dice")
                row[f"nsd_{cls}"] = vals.get("nsd")
        row.update(epochs=t.user_attrs.get("epochs_run"), seconds=t.user_attrs.get("seconds"),
                   overhead_s=t.user_attrs.get("overhead_seconds"), reason=t.user_attrs.get("reason"))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values(["objective", "trial"], ascending=[False, True], na_position="last")
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.reset_index(drop=True)


def best_and_baseline(study):
    """(best complete trial, Dice+CE baseline trial) — either may be None."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    best = max(done, key=lambda t: (t.value, -t.number)) if done else None
    baseline = next((t for t in sorted(done, key=lambda t: t.number)
                     if (t.user_attrs.get("autoloss_spec") or {}).get("name") == "DiceCE"
                     and not (t.user_attrs.get("autoloss_spec") or {}).get("params")), None)
    return best, baseline


def baseline_comparison(study) -> str:
    """Plain words: the gain of the winner over Dice+CE per class, or that the default is best."""
    from autoloss.spec import LossSpec

    best, base = best_and_baseline(study)
    if best is None:
        return "No trial completed yet."
    spec = LossSpec.from_dict(best.user_attrs["autoloss_spec"])
    if base is None:
        return f"Best so far: {spec.describe()} ({best.value:.4f}); the Dice+CE baseline has not completed yet."
    if base.number == best.number or best.value <= base.value:
        return (f"Dice+CE (nnU-Net's default) is the best loss at this fidelity ({base.value:.4f}): keep it. "
                "No searched loss beat it.")
    bm, km = best.user_attrs["metrics"], base.user_attrs["metrics"]
    lines = [f"{spec.describe()} beats Dice+CE: objective {best.value:.4f} vs {base.value:.4f} "
             f"({best.value - base.value:+.4f})."]
    for cls in bm:
        if cls == "mean":
            continue
        d = bm[cls]["dice"] - km[cls]["dice"]
        n = bm[cls]["nsd"] - km[cls]["nsd"]
        lines.append(f"  class {cls}: Dice {bm[cls]['dice']:.4f} ({d:+.4f}), NSD {bm[cls]['nsd']:.4f} ({n:+.4f})")
    if best.value - base.value < 0.01:
        lines.append("  The gain is under 1 point on one validation fold: within noise; confirm on more folds "
                     "before switching.")
    return "\n".join(lines)


def save_results(study, work_dir) -> None:
    """results.csv, results.md, best_loss.json and summary.txt in the work directory (after every trial)."""
    import json
    from pathlib import Path

    work_dir = Path(work_dir)
    df = trials_frame(study)
    if df.empty:
        return
    df.to_csv(work_dir / "results.csv", index=False)
    cols = [c for c in ("rank", "trial", "state", "loss", "source", "objective", "dice", "nsd", "epochs",
                        "seconds", "reason") if c in df.columns]
    (work_dir / "results.md").write_text(df[cols].to_markdown(index=False, floatfmt=".4f")
                                         if _has_tabulate() else df[cols].to_string(index=False))
    best, base = best_and_baseline(study)
    if best is not None:
        payload = dict(best.user_attrs["autoloss_spec"])
        payload["provenance"] = {"study": study.study_name, "trial": best.number, "objective": best.value,
                                 "metrics": best.user_attrs.get("metrics"),
                                 "baseline_objective": base.value if base else None,
                                 "settings": study.user_attrs.get("autoloss_settings")}
        (work_dir / "best_loss.json").write_text(json.dumps(payload, indent=2))
    (work_dir / "summary.txt").write_text(baseline_comparison(study) + "\n")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


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
        from autoloss.search.study import counted

        done = len(counted(study))
        best = ""
        try:
            best = f" | best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            pass
        if event == "start":
            self.progress.update(self.task, completed=done, description=f"trial {number}: {payload.describe()}{best}")
        else:
            value = f"{payload.value:.4f}" if payload.value is not None else "-"
            why = f" ({payload.reason})" if payload.reason else ""
            self.console.print(f"trial {number} {payload.state}: objective {value}{why}")
            self.progress.update(self.task, completed=done, description=best.strip(" |"))
