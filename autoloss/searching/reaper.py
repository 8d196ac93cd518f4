"""No process of a search outlives its driver: a watchdog ends the driver's process tree when the driver dies.

Nothing runs inside a driver killed with ``kill -9``, and its children do not notice: nnU-Net's data-augmentation
workers block on their queues, spawn-pool workers wait for tasks, a local Ray cluster's raylet and workers keep
running. A parent-death signal set in each child would need a hook in every library that starts one (nnU-Net's
loaders fork, its preprocessing spawns, Ray execs), so instead :func:`guard_process_tree` starts one small watchdog
process (standard library only) that

- follows the driver with a pidfd (woken the moment it exits; polling where pidfds are missing),
- notes the driver's descendants (pid and start time, from /proc) every ``SCAN_S`` seconds,
- when the driver is gone: adds the still-living children of what it noted, sends them SIGTERM, and SIGKILL to
  whatever is left after ``GRACE_S`` seconds. Start times guard against a reused pid.

A driver that ends normally (or by Ctrl-C, an exception) stops the watchdog first; its own clean-up (Ray shutdown,
nnU-Net's loaders) is unchanged. Linux only (/proc); elsewhere the guard does nothing.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from typing import Iterator

SCAN_S = 1.0
GRACE_S = 2.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid``; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
    return children


def _descendants(roots: list[int], children: dict[int, list[int]]) -> set[int]:
    out, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _alive(known: dict[int, int]) -> dict[int, int]:
    """The processes of ``known`` (pid -> start time) still running as themselves."""
    return {pid: start for pid, start in known.items() if (st := _stat(pid)) is not None and st[1] == start}


def _wait_for_exit(driver: int, fd: int | None, timeout: float) -> bool:
    if fd is not None:
        return bool(select.select([fd], [], [], timeout)[0])
    time.sleep(timeout)
    return _stat(driver) is None


def watch(driver: int) -> None:
    """The watchdog's loop (run as ``python -m autoloss.searching.reaper PID``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it stops us then
    me = os.getpid()
    try:
        fd = os.pidfd_open(driver)
    except (AttributeError, OSError):
        fd = None
    known: dict[int, int] = {}
    while True:
        for pid in _descendants([driver], _children_map()) - {me}:
            st = _stat(pid)
            if st is not None:
                known[pid] = st[1]
        if _wait_for_exit(driver, fd, SCAN_S) or _stat(driver) is None:
            break
    # The driver is gone; its children were re-parented, but the children of those we know are still theirs.
    living = _alive(known)
    for pid in _descendants(list(living), _children_map()) - {me} - set(living):
        st = _stat(pid)
        if st is not None:
            living[pid] = st[1]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _alive(living):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + GRACE_S
        while _alive(living) and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def guard_process_tree() -> Iterator[None]:
    """While the block runs, a watchdog ends this process's descendants if this process dies without cleaning
    up (kill -9, a crash); a normal exit from the block stops the watchdog."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        yield
        return
    proc = subprocess.Popen([sys.executable, "-m", "autoloss.searching.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=True)
    try:
        yield
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
