"""One search per work directory: a lock file naming the process that drives the search.

Two searches in one work directory would preprocess into the same folders and drive the same study at once (the
second crashed deep inside nnU-Net's preprocessing). ``WORK/autoloss.lock`` holds the owner's pid, host, start
time and command, under an OS record lock (``fcntl.lockf``):

- the kernel drops the record lock when its process dies, however it dies (``kill -9`` included), so a lock file
  whose record lock is free is stale by construction and the next search takes it over, saying whose it was;
- record locks are per process and not inherited by ``fork``: nnU-Net's worker processes that outlive a killed
  search do not keep its lock alive;
- they also work over NFS (lockd), where work directories shared by Ray workers live.
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

from autoloss.errors import AutolossError, check_writable

LOCK_NAME = "autoloss.lock"


class WorkDirLock:
    """``with WorkDirLock(work_dir): ...`` holds the work directory for this process, or raises AutolossError
    naming the pid and host of the search that holds it. ``stale`` is the previous owner's record when a lock
    left by a dead process was taken over (None otherwise)."""

    def __init__(self, work_dir: str | Path):
        self.path = Path(work_dir) / LOCK_NAME
        self.stale: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> "WorkDirLock":
        check_writable(self.path.parent, "the search's work (lock, journal, results)")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AutolossError(f"{self.path}: cannot open the work directory's lock ({exc.strerror}); make it "
                                "writable or use another --work-dir") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise AutolossError(f"{self.path}: cannot lock the work directory ({exc.strerror})") from None
            raise AutolossError(self._busy_message(read_owner(self.path))) from None
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

    def __enter__(self) -> "WorkDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy_message(self, owner: dict) -> str:
        if not owner:
            return f"{self.path.parent} is in use by another autoloss search (lock {self.path}); wait for it to end"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
        return (f"{self.path.parent} is in use by a running search: pid {owner.get('pid')} on host "
                f"{owner.get('host')}, started {started}; wait for it, stop it, or use another --work-dir")


def owner_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join(sys.argv)[:500]}


def read_owner(path: str | Path) -> dict:
    """The record in a lock file ({} when empty, missing or unreadable)."""
    try:
        return _parse(Path(path).read_bytes())
    except OSError:
        return {}


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
