"""autoloss as a user installs it: a wheel built from the checkout, installed WITHOUT -e into a fresh virtual
environment, run from a directory outside the checkout (so nothing can be read from the repository by accident).

The fresh environment reuses the pinned environment's third-party packages through a path line in a .pth file
(site-packages of the running interpreter), which adds those packages but not the .pth hooks of an editable
autoloss installed there: the only autoloss it can import is the wheel's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from autoloss.resources import KINDS, data_dir

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "autoloss", *KINDS)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy: building in place would leave build/ and *.egg-info in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
         cwd=src)
    (whl,) = out.glob("autoloss-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
         cwd=venv)
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=venv).stdout.strip())
    (purelib / "pinned_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_carries_the_data_folders_identical_to_the_checkout(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for kind in KINDS:
            for path in sorted((ROOT / kind).iterdir()):
                if path.is_file():
                    member = f"autoloss/data/{kind}/{path.name}"
                    assert member in names, f"{member} missing from {wheel.name}"
                    assert zf.read(member) == path.read_bytes(), f"{member} differs from {kind}/{path.name}"
        assert "autoloss/resources.py" in names


def test_checkout_reads_its_own_top_level_folders():
    # In a checkout the user-editable top-level folders win over any packaged copy.
    for kind in KINDS:
        assert data_dir(kind) == ROOT / kind


@pytest.mark.slow
def test_wheel_install_recommends_and_exports_from_outside_the_checkout(installed, tmp_path):
    from autoloss.synthetic import make_synthetic_dataset

    python, cli = installed / "bin" / "python", installed / "bin" / "autoloss"
    where = _run([str(python), "-c", "import autoloss, autoloss.resources as r; print(autoloss.__file__); "
                                     "print(r.data_dir('fingerprints'))"], cwd=tmp_path).stdout.split()
    assert where[0].startswith(str(installed)), f"imported {where[0]}, not the wheel's autoloss"
    assert where[1].startswith(str(installed)), "the installed package must read its packaged data"

    dataset = make_synthetic_dataset(tmp_path / "raw", dim=2, num_cases=3, shape=(32, 32), num_classes=1,
                                     foreground_ratio=(0.05,), objects_per_case=(1,), seed=1, dataset_id=991,
                                     name="WheelCheck")
    rec = _run([str(cli), "recommend", str(dataset), "--json", "-j", "1"], cwd=tmp_path)
    names = [r["name"] for r in json.loads(rec.stdout)]
    assert "DiceCE" in names and len(names) >= 2
    _run([str(cli), "search", "--help"], cwd=tmp_path)  # the search spaces are found (help lists none, but
    # loading the default space is what a search does first:)
    _run([str(python), "-c", "from autoloss.searching.space import SearchSpace; "
                             "assert SearchSpace.load(['compound']).losses"], cwd=tmp_path)

    # An exported trainer imports autoloss: it must load against the wheel install.
    _run([str(cli), "export", "DiceFocal", "-o", str(tmp_path / "trainers")], cwd=tmp_path)
    (trainer,) = (tmp_path / "trainers").glob("nnUNetTrainer_autoloss_*.py")
    _run([str(python), "-c", f"import sys; sys.path.insert(0, {str(trainer.parent)!r}); "
                             f"import {trainer.stem} as m; cls = getattr(m, {trainer.stem!r}); "
                             f"assert cls.LOSS_SPEC['name'] == 'DiceFocal', cls.LOSS_SPEC"], cwd=tmp_path)
