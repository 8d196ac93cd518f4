"""Exclusive file locks that name their holder: one search per work directory, one driver per journal study.

A lock file holds the owner's pid, host, start time and command, under an OS record lock (``fcntl.lockf``):

- the kernel drops the record lock when its process dies, however it dies (``kill -9`` included), so a lock file
  whose record lock is free is stale by construction and the next search takes it over, saying whose it was;
- record locks are per process and not inherited by ``fork``: nnU-Net's worker processes that outlive a killed
  search do not keep its lock alive;
- they also work over NFS (lockd, or NFSv4's own leases), where work directories shared by Ray workers live.

``WorkDirLock`` (``WORK/autoloss.lock``) keeps two searches out of one work directory (they would preprocess into
the same folders). The per-study lease of a journal file is the same lock on a file beside the journal
(``autoloss.searching.lease``).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from autoloss.errors import AutolossError, check_writable

LOCK_NAME = "autoloss.lock"


class FileLock:
    """``with FileLock(path, busy): ...`` holds ``path`` for this process, or raises AutolossError with
    ``busy(owner_record)``. ``stale`` is the previous owner's record when a lock left by a dead process was taken
    over (None otherwise)."""

    def __init__(self, path: str | Path, busy: Callable[[dict], str]):
        self.path = Path(path)
        self.busy = busy
        self.stale: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        check_writable(self.path.parent, "a lock file (the search's work: lock, journal, results)")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AutolossError(f"{self.path}: cannot open the lock file ({exc.strerror}); make its folder "
                                "writable or use another --work-dir") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise AutolossError(f"{self.path}: cannot take the lock ({exc.strerror})") from None
            raise AutolossError(self.busy(_holder(self.path))) from None
        previous = _parse(os.pread(fd, 65536, 0))
        if previous.get("pid"):
            self.stale = previous  # its process is gone (else the record lock would be held)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner_record()).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty, unlocked file: nothing to report as stale next time
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class WorkDirLock(FileLock):
    """One search per work directory: ``WORK/autoloss.lock``."""

    def __init__(self, work_dir: str | Path):
        super().__init__(Path(work_dir) / LOCK_NAME, self._busy_message)

    def _busy_message(self, owner: dict) -> str:
        if not owner:
            return f"{self.path.parent} is in use by another autoloss search (lock {self.path}); wait for it to end"
        return (f"{self.path.parent} is in use by a running search: {describe_owner(owner)}; wait for it, stop it, "
                "or use another --work-dir")


def owner_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join(sys.argv)[:500]}


def describe_owner(owner: dict) -> str:
    """'pid 123 on host h, started 2026-01-01 10:00:00' (the words every lock and lease message uses)."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started") or 0))
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {started}"


def read_owner(path: str | Path) -> dict:
    """The record in a lock file ({} when empty, missing or unreadable)."""
    try:
        return _parse(Path(path).read_bytes())
    except OSError:
        return {}


def _holder(path: Path, wait: float = 2.0) -> dict:
    """The record of the process holding the lock. A holder writes its record just after it takes the lock, so for
    a moment the file is empty or still names the previous (dead) owner: wait briefly for a live record."""
    deadline = time.time() + wait
    while True:
        owner = read_owner(path)
        if owner.get("pid") and (owner.get("host") != socket.gethostname() or _alive(owner["pid"])):
            return owner
        if time.time() > deadline:
            return owner
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def describe_stale(owner: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return (f"took over the work directory's lock left by pid {owner.get('pid')} on host {owner.get('host')} "
            f"(started {started}; that process is gone)")


def _parse(raw: bytes) -> dict:
    try:
        data = json.loads(raw.decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
