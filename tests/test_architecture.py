"""The package's structure as a checked contract: the layers in pyproject.toml ([tool.importlinter]) hold, no module
doubles as a public function, and ``import autoloss`` stays light."""
from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import autoloss

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
HEAVY = ("torch", "nnunetv2", "optuna", "ray", "SimpleITK")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))  # the copy's package, before the installed one
    return subprocess.run([str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layer_contract_holds():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(ROOT / "autoloss", root / "autoloss", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


@pytest.mark.parametrize("module, line, broken", [
    # an upward import: the losses (low) reaching into the search driver (high)
    ("losses/base.py", "from autoloss.searching import runner  # noqa", "stages import downward only"),
    # the prior reading the memory again (memory sits above the prior; it passes itself in instead)
    ("prior.py", "from autoloss.knowledge import ranking  # noqa", "stages import downward only"),
    # a circle inside one package: records <-> runner
    ("searching/records.py", "from autoloss.searching import runner  # noqa", "no import circles"),
])
def test_the_contract_check_fails_on_an_upward_import_or_a_circle(tmp_path, module, line, broken):
    root = _copy(tmp_path)
    assert _lint(root).returncode == 0
    target = root / "autoloss" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    out = _lint(root)
    assert out.returncode != 0, out.stdout
    assert f"{broken}" in out.stdout and "BROKEN" in out.stdout, out.stdout


def test_import_autoloss_loads_no_heavy_package():
    code = ("import sys, time; t = time.perf_counter(); import autoloss; ms = 1000 * (time.perf_counter() - t); "
            f"import json; print(json.dumps([ms, [m for m in {HEAVY!r} if m in sys.modules]]))")
    ms, loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout)
    assert loaded == []
    print(f"import autoloss: {ms:.1f} ms")


def test_public_names_are_functions_of_the_api_and_no_module_is_callable():
    api = importlib.import_module("autoloss.api")
    for name in ("fingerprint", "recommend", "search", "load_search", "export", "report"):
        fn = getattr(autoloss, name)
        assert inspect.isfunction(fn) and fn is getattr(api, name), name
    modules = {m.name for m in pkgutil.walk_packages(autoloss.__path__, "autoloss.")}
    for name in autoloss.__all__:
        assert f"autoloss.{name}" not in modules, f"autoloss.{name} is both a module and a public name"
    for name in sorted(modules - {"autoloss.__main__"}):  # importing __main__ would run the CLI
        module = importlib.import_module(name)
        assert not callable(module), name
    # importing every stage first must not rebind a public name to a module
    for name in ("fingerprint", "search", "export", "report"):
        assert inspect.isfunction(getattr(autoloss, name)), name


def test_every_module_of_the_package_sits_in_a_layer():
    import re
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = config["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {part.strip() for layer in layers for part in re.split(r"[|:]", layer)}
    top = {m.name for m in pkgutil.iter_modules(autoloss.__path__)} - {"__main__"}
    assert top - named == set(), f"modules outside the layer contract: {sorted(top - named)}"
