"""Where records live: ``$AUTOLOSS_HOME/knowledge/records.jsonl`` (default ``~/.autoloss``), plus the read-only
seed records shipped in ``fingerprints/knowledge_seed.jsonl``.

JSON lines, appended under an exclusive ``fcntl`` lock on a side file, so two searches finishing at once never
interleave or lose a line; a rewrite (``remove``) goes through a temporary file and an atomic rename under the
same lock. Imports validate every line before writing any, so a bad file adds nothing and loses nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
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
    """Every record of a JSON-lines file, validated; a bad line -> one line naming the file and line number."""
    records = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise AutolossError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AutolossError(f"{path}: cannot read knowledge records ({exc})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AutolossError(f"{path}:{n}: not a JSON record ({exc.msg})") from None
        records.append(validate_record(record, f"{path}:{n}"))
    return records


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
        return read_records(self.file) if self.file.exists() else []

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
                with open(self.file, "a") as fh:
                    fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in new))
                    fh.flush()
                    os.fsync(fh.fileno())
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
        with self._locked():
            keep = [r for r in self.user_records() if r["id"] != record["id"]]
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".records.", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
            os.replace(tmp, self.file)
        return record
