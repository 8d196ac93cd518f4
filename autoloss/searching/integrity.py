"""Does a search's study read back whole? Checked before anything (report, export, verdict, a resumed search) is
written from it, so a damaged study never overwrites good results.

Optuna's journal reader silently drops an incomplete last line, raises a bare JSONDecodeError on a broken line
elsewhere, and reads a journal cut at a line boundary as a shorter, valid one. So "whole" means:

1. the journal file (when the storage is one) parses line by line and ends with a complete line;
2. the study holds every trial that ``results.csv`` names, in the same state, with the same objective value.
   ``results.csv`` is written from the study after every trial, so a study holding less than it names has lost
   records. (Checked when ``results.csv`` belongs to this study: ``best_loss.json`` names its study; read before
   the study, so a search running meanwhile cannot make a whole study look damaged.)

A failure is one line naming the file and what to do; the caller writes nothing.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from autoloss.errors import AutolossError

RESULTS = "results.csv"
ADVICE = "nothing was rewritten from it; restore it from a backup, or start over with a new --work-dir"


def check_journal(path: Path, settle_s: float = 1.0) -> None:
    """Every line of an Optuna journal file is a JSON record and the last one is complete. A line being appended
    by a running search is waited for (up to ``settle_s``)."""
    path = Path(path)
    if not path.is_file():
        return
    deadline = time.monotonic() + settle_s
    while True:
        try:
            data = path.read_bytes()
            recent = time.time() - path.stat().st_mtime < 2.0  # a search may be appending right now
        except OSError as exc:
            raise AutolossError(f"{path}: cannot be read ({exc.strerror}); make it readable") from None
        if not data or data.endswith(b"\n") or not recent or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    lines = data.split(b"\n")
    if data and not data.endswith(b"\n"):
        raise AutolossError(f"{path}: damaged: it ends in the middle of a record (line {len(lines)}; the file was "
                            f"cut short); {ADVICE}")
    for number, line in enumerate(lines[:-1], 1):
        try:
            json.loads(line)
        except ValueError:
            raise AutolossError(f"{path}: damaged: line {number} is not a journal record; {ADVICE}") from None


def _results_owner(work_dir: Path) -> str | None:
    try:
        return json.loads((work_dir / "best_loss.json").read_text())["provenance"]["study"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_results(work_dir: Path) -> list[dict[str, str]] | None:
    """The rows of ``work_dir/results.csv`` (None when absent or unreadable). Read BEFORE the study is loaded: the
    file is written after the study holds its trials, so rows read first never name a trial a running search has
    not stored yet."""
    path = Path(work_dir) / RESULTS
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None  # absent or unreadable: no evidence about the study (it is rewritten from the study)


def check_results(study, rows: list[dict[str, str]] | None, work_dir: Path, storage_name: str) -> None:
    """The study holds every trial that ``rows`` (``read_results``) names (see the module docstring)."""
    work_dir = Path(work_dir)
    if rows is None or _results_owner(work_dir) not in (None, study.study_name):
        return
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    missing, differing = [], []
    for row in rows:
        try:
            number = int(row["trial"])
        except (KeyError, TypeError, ValueError):
            continue
        t = trials.get(number)
        if t is None:
            missing.append(number)
            continue
        state = (row.get("state") or "").lower()
        if state in ("complete", "pruned", "fail") and t.state.name.lower() != state:
            differing.append(number)
        elif state == "complete" and row.get("objective") not in (None, ""):
            try:
                value = float(row["objective"])
            except ValueError:
                continue
            if t.value is None or not math.isclose(t.value, value, rel_tol=1e-6, abs_tol=1e-9):
                differing.append(number)
    if missing or differing:
        what = (f"lacks trial(s) {_numbers(missing)}" if missing else "") + (" and " if missing and differing else "") \
            + (f"disagrees on trial(s) {_numbers(differing)}" if differing else "")
        raise AutolossError(f"{storage_name}: damaged: study {study.study_name!r} {what} that {work_dir / RESULTS} "
                            f"names (cut short or overwritten?); {ADVICE}")


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(map(str, sorted(numbers)[:8]))
    return shown + (f" (+{len(numbers) - 8} more)" if len(numbers) > 8 else "")
