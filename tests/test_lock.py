"""One search per work directory, with real processes: a live holder refuses a second `autoloss search` (one
line, exit 2, naming pid and host), and a holder killed with SIGKILL leaves a stale lock that is taken over."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoloss.searching.lock import LOCK_NAME, WorkDirLock, read_owner

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from autoloss.searching.lock import WorkDirLock
lock = WorkDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start_holder(work: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(work)], stdout=subprocess.PIPE, text=True,
                            env=_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def dataset(tmp_path) -> Path:
    from autoloss.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path / "raw", dim=2, num_cases=3, shape=(24, 24), num_classes=1,
                                  foreground_ratio=(0.1,), objects_per_case=(1,), seed=0, dataset_id=992,
                                  name="LockCheck")


def _search(dataset: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoloss", "search", str(dataset), "--work-dir", str(work),
                           "--device", "cpu", "--config", "2d", *extra],
                          capture_output=True, text=True, env=_env(), timeout=300)


def test_second_search_on_a_live_work_dir_is_refused(dataset, tmp_path):
    work = tmp_path / "work"
    holder = _start_holder(work)
    try:
        proc = _search(dataset, work, "--budget", "1")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"pid {holder.pid}" in lines[0] and socket.gethostname() in lines[0]
        assert "Traceback" not in proc.stderr
        assert not (work / "nnUNet_preprocessed").exists()  # refused before touching anything
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_search_is_stale_and_taken_over(dataset, tmp_path):
    work = tmp_path / "work"
    holder = _start_holder(work)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert read_owner(work / LOCK_NAME)["pid"] == holder.pid  # the dead process's record is still there
    # A real search gets past the lock: it fails later, at the (deliberately) unknown search space, and says so.
    proc = _search(dataset, work, "--budget", "1", "--space", "no_such_space")
    assert proc.returncode == 2
    assert "no_such_space" in proc.stderr and "in use" not in proc.stderr
    assert f"left by pid {holder.pid}" in proc.stdout
    # The search released the lock on its way out: the next one starts clean, with nothing stale to report.
    with WorkDirLock(work) as lock:
        assert lock.stale is None
        assert read_owner(work / LOCK_NAME)["pid"] == os.getpid()
    assert (work / LOCK_NAME).read_text() == ""


def test_children_outliving_a_killed_search_do_not_keep_its_lock(tmp_path):
    # nnU-Net's worker processes are forked from the search; one outliving a killed search must not hold the lock.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.replace(
        'print("locked"', 'import os\nchild = os.fork()\nif child == 0:\n    time.sleep(120)\n    os._exit(0)\n'
                          'print("locked", child'), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=_env())
    word, child = holder.stdout.readline().split()
    assert word == "locked"
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        os.kill(int(child), 0)  # the forked child still runs
        with WorkDirLock(tmp_path) as lock:
            assert lock.stale and lock.stale["pid"] == holder.pid
    finally:
        os.kill(int(child), signal.SIGKILL)


def test_lock_holder_timing_is_recorded(tmp_path):
    before = time.time()
    with WorkDirLock(tmp_path):
        owner = read_owner(tmp_path / LOCK_NAME)
    assert owner["host"] == socket.gethostname() and before <= owner["started"] <= time.time()


def test_two_real_searches_on_one_work_dir(dataset, tmp_path):
    """The slip the lock exists for: the same `autoloss search` started twice. The first holds the work directory
    while it fingerprints and preprocesses; the second exits 2 at once; after the first is killed with SIGKILL, a
    third run takes the stale lock over."""
    work = tmp_path / "work"
    first = subprocess.Popen([sys.executable, "-m", "autoloss", "search", str(dataset), "--work-dir", str(work),
                              "--device", "cpu", "--config", "2d", "--budget", "1", "--epochs", "1",
                              "--iterations-per-epoch", "2", "--val-iterations", "1", "--no-confirm"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True)
    try:
        deadline = time.time() + 120
        while read_owner(work / LOCK_NAME).get("pid") != first.pid:
            assert first.poll() is None and time.time() < deadline, "the first search never took the lock"
            time.sleep(0.2)
        second = _search(dataset, work, "--budget", "1")
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the search and its preprocessing workers, as kill -9 would
        first.wait()
    third = _search(dataset, work, "--budget", "1", "--space", "no_such_space")
    assert third.returncode == 2 and "no_such_space" in third.stderr
    assert f"left by pid {first.pid}" in third.stdout
