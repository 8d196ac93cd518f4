"""Where records live: ``$AUTOLOSS_HOME/knowledge/records.jsonl`` (default ``~/.autoloss``), plus the read-only
seed records shipped in ``fingerprints/knowledge_seed.jsonl``.

JSON lines, appended under an exclusive ``fcntl`` lock on a side file, so two searches finishing at once never
interleave or lose a line; a rewrite (``remove``) goes through a temporary file and an atomic rename under the
same lock. Imports validate every line before writing any, so a bad file adds nothing and loses nothing.

A bad line in the user's own file (hand-edited, cut by a full disk) never blocks the store: every bad line is
named on stderr (file:line) and skipped, the good records serve, and ``autoloss knowledge check --fix`` moves the
bad lines, verbatim, to ``records.jsonl.rejected``.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from autoloss.errors import AutolossError
from autoloss.resources import data_file
from autoloss.knowledge.schema import validate_record

SEED_FILE = data_file("fingerprints", "knowledge_seed.jsonl")


def autoloss_home() -> Path:
    return Path(os.environ.get("AUTOLOSS_HOME") or Path.home() / ".autoloss").expanduser()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file, validated; a bad line -> one line naming the file and line number (for
    files given on purpose, e.g. an import: a bad file adds nothing)."""
    records, problems = scan_records(path)
    if problems:
        raise AutolossError(problems[0][1])
    return records


def scan_records(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """(the valid records, [(line number, "FILE:LINE: what is wrong")]) of a JSON-lines file; a missing or
    unreadable file is an AutolossError."""
    records, problems = [], []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        raise AutolossError(f"{path}: no such file") from None
    except OSError as exc:
        raise AutolossError(f"{path}: cannot read knowledge records ({exc.strerror or exc})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((n, f"{path}:{n}: not a JSON record ({exc.msg})"))
            continue
        try:
            records.append(validate_record(record, f"{path}:{n}"))
        except AutolossError as exc:
            problems.append((n, str(exc)))
    return records, problems


_REPORTED: set[tuple] = set()


def _warn_once(path: Path, problems: list[str]) -> None:
    """Name every bad line on stderr, once per process and state of the file (a search reads the store often)."""
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        key = (str(path),)
    if key in _REPORTED:
        return
    _REPORTED.add(key)
    for problem in problems:
        print(f"autoloss: warning: {problem}; skipped (`autoloss knowledge check --fix` moves bad lines aside)",
              file=sys.stderr)


def _line_id(line: str) -> str | None:
    try:
        return json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None


class KnowledgeStore:
    """The user's records (writable) and the shipped seeds (read-only)."""

    def __init__(self, home: str | Path | None = None, seed_file: Path | None = SEED_FILE):
        self.dir = (Path(home) if home else autoloss_home()) / "knowledge"
        self.file = self.dir / "records.jsonl"
        self.seed_file = seed_file

    @contextlib.contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def user_records(self) -> list[dict[str, Any]]:
        """The user's valid records; a bad line (or an unreadable file) is named on stderr and skipped, so the
        good records still serve."""
        if not self.file.exists():
            return []
        try:
            records, problems = scan_records(self.file)
        except AutolossError as exc:
            _warn_once(self.file, [str(exc)])
            return []
        if problems:
            _warn_once(self.file, [p for _, p in problems])
        return records

    def check(self) -> list[str]:
        """Every bad line of the user's file, one "FILE:LINE: what is wrong" each."""
        return [p for _, p in scan_records(self.file)[1]] if self.file.exists() else []

    def move_aside(self) -> tuple[int, Path | None]:
        """Move the bad lines of the user's file, verbatim, to ``records.jsonl.rejected`` (appended) and keep the
        good ones; returns (lines moved, where)."""
        if not self.file.exists():
            return 0, None
        with self._locked():
            _, problems = scan_records(self.file)
            if not problems:
                return 0, None
            bad = {n for n, _ in problems}
            lines = self.file.read_text(errors="replace").splitlines(keepends=True)
            aside = self.file.with_name(self.file.name + ".rejected")
            with open(aside, "a") as fh:
                fh.write("".join(ln if ln.endswith("\n") else ln + "\n" for i, ln in enumerate(lines, 1) if i in bad))
                fh.flush()
                os.fsync(fh.fileno())
            self._rewrite([ln for i, ln in enumerate(lines, 1) if i not in bad])
        return len(bad), aside

    def _rewrite(self, lines: list[str]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".records.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(lines))
        os.replace(tmp, self.file)

    def seed_records(self) -> list[dict[str, Any]]:
        return read_records(self.seed_file) if self.seed_file and self.seed_file.exists() else []

    def records(self, seeds: bool = True) -> list[dict[str, Any]]:
        return (self.seed_records() if seeds else []) + self.user_records()

    def get(self, record_id: str) -> dict[str, Any]:
        """A record by id or unique id prefix."""
        hits = [r for r in self.records() if r["id"].startswith(record_id)]
        if not hits:
            raise AutolossError(f"no knowledge record {record_id!r} (see: autoloss knowledge list)")
        if len({r["id"] for r in hits}) > 1:
            raise AutolossError(f"{record_id!r} matches {len(hits)} records; give more of the id")
        return hits[0]

    def add(self, records: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """Append validated records; returns (added, skipped as duplicates of stored or seed records)."""
        records = list(records)
        with self._locked():
            known = {r["id"] for r in self.records()}
            new = []
            for r in records:
                if r["id"] not in known:
                    known.add(r["id"])
                    new.append(r)
            if new:
                try:
                    with open(self.file, "a") as fh:
                        fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in new))
                        fh.flush()
                        os.fsync(fh.fileno())
                except OSError as exc:
                    raise AutolossError(f"{self.file}: cannot add records ({exc.strerror or exc})") from None
        return len(new), len(records) - len(new)

    def import_file(self, path: str | Path) -> tuple[int, int]:
        """Records from a colleague's file: all validated first (a bad line adds nothing), duplicates skipped."""
        return self.add(read_records(Path(path)))

    def export(self, path: str | Path, force: bool = False, seeds: bool = False) -> int:
        """Write the user's records (and the seeds with ``seeds``) to ``path``; never overwrites without force."""
        path = Path(path)
        if path.exists() and not force:
            raise AutolossError(f"{path} exists; use --force to overwrite it")
        records = self.records(seeds=seeds)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        return len(records)

    def remove(self, record_id: str) -> dict[str, Any]:
        record = self.get(record_id)
        if record["kind"] == "seed" or record["id"] in {r["id"] for r in self.seed_records()}:
            raise AutolossError(f"{record['id']} is a shipped seed record (read-only); it cannot be removed")
        with self._locked():  # line by line: a bad line elsewhere in the file is kept as it is, not dropped
            lines = self.file.read_text(errors="replace").splitlines(keepends=True)
            self._rewrite([ln for ln in lines if _line_id(ln) != record["id"]])
        return record
