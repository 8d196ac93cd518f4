"""Shared fixtures: the shared datasets (skipped when ../shared is absent) and one nnU-Net preprocessing of a
small Hippocampus subset, made once per test session and copied into each search test's work directory."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Ray test clusters (a local one, and the multi-node harness of tests/test_cluster.py) on loopback only: with this,
# Ray takes 127.0.0.1 as every node's address instead of the machine's network address. Set before Ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
HIPPO = SHARED_DATASETS / "Dataset103_Hippocampus"

# Tiny CPU fidelity: real nnU-Net training and validation, a few seconds a trial.
TINY = dict(configuration="2d", epochs=2, iterations_per_epoch=4, val_iterations_per_epoch=1)
MAX_CASES = 6


def need_shared(path: Path = SHARED_DATASETS) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (tests read ../shared/datasets)")
    return path


@pytest.fixture(autouse=True)
def _isolated_nnunet_env():
    # Never touch the developer's own nnU-Net folders, and undo whatever a test's code sets in os.environ.
    snapshot = dict(os.environ)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        os.environ.pop(var, None)
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    os.environ["nnUNet_def_n_proc"] = "2"
    os.environ["nnUNet_compile"] = "false"
    yield
    os.environ.clear()
    os.environ.update(snapshot)


@pytest.fixture(autouse=True)
def _isolated_autoloss_home(tmp_path_factory, monkeypatch):
    # The knowledge store lives in $AUTOLOSS_HOME: never read or write the developer's own records.
    monkeypatch.setenv("AUTOLOSS_HOME", str(tmp_path_factory.mktemp("autoloss_home")))


@pytest.fixture(scope="session")
def hippo_prepared(tmp_path_factory) -> Path:
    """A work directory holding nnU-Net's 2d preprocessing of the first 6 Hippocampus cases."""
    need_shared(HIPPO)
    from autoloss.dataset import read_dataset
    from autoloss.nnunet import env
    from autoloss.nnunet.prepare import prepare

    work = tmp_path_factory.mktemp("hippo_base")
    snapshot = dict(os.environ)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.pop(k, None)
    try:
        env.configure(work, processes=2)
        prepare(read_dataset(HIPPO, max_cases=MAX_CASES), "2d", work, max_cases=MAX_CASES, num_processes=2,
                log=lambda s: None)
    finally:
        os.environ.clear()
        os.environ.update(snapshot)
    return work


def hippo_trial_dataset(hippo_prepared: Path, network: str = "tiny"):
    """The session's Hippocampus preprocessing as a PreparedDataset that trains a scaled network (CPU tests that
    train use one: nnU-Net's own 2d plan for these cases is a batch of ~80 slices through features 32-512)."""
    from autoloss.dataset import read_dataset
    from autoloss.nnunet import env, scaled
    from autoloss.nnunet.prepare import prepare

    env.configure(hippo_prepared, processes=2)
    prepared = prepare(read_dataset(HIPPO, max_cases=MAX_CASES), "2d", hippo_prepared, max_cases=MAX_CASES,
                       num_processes=2, log=lambda s: None)
    return scaled.apply(prepared, scaled.network_for(prepared, network, "cpu", None), log=lambda s: None)


@pytest.fixture
def search_work_dir(hippo_prepared, tmp_path) -> Path:
    """A fresh search work directory that already holds the session's preprocessing (links re-pointed)."""
    work = tmp_path / "work"
    shutil.copytree(hippo_prepared / "nnunet", work / "nnunet", symlinks=True)
    return work


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL server for the test run (tests/postgres_server.py); ``postgres.database(name)`` -> URL."""
    from postgres_server import _Unavailable, running_postgres

    try:
        with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
            yield server
    except _Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL server for the tests: {exc}")
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
