"""The command line as a user meets it: exit codes, one-line errors, JSON output."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import SHARED_DATASETS, need_shared

DATASETS = ["Dataset101_ISBIMembrane", "Dataset102_MontgomeryLungs", "Dataset103_Hippocampus",
            "Dataset104_AxonMyelin", "Dataset105_SpinalCordTiny"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoloss", *args], capture_output=True, text=True, timeout=600,
                          env=env)


@pytest.mark.parametrize("args", [
    ("fingerprint", "/no/such/folder"),
    ("recommend", "/no/such/folder"),
    ("search", "/no/such/folder", "--budget", "1", "--config", "2d"),
    ("recommend", "--fingerprint", "/no/such/fingerprint.json"),
    ("export", "/no/such/spec.json", "-o", "/tmp/autoloss-never"),
])
def test_user_errors_are_one_line_exit_2_no_traceback(args):
    out = run(*args)
    assert out.returncode == 2, out
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("autoloss: error:"), out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("name", DATASETS)
def test_recommend_json_on_every_shared_dataset(name):
    need_shared()
    out = run("recommend", str(SHARED_DATASETS / name), "--json", "--max-cases", "3", "-j", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    recs = json.loads(out.stdout)
    assert isinstance(recs, list) and recs
    for r in recs:
        assert set(r) >= {"name", "params", "schedule", "score", "reason"}
    assert "DiceCE" in [r["name"] for r in recs]


@pytest.mark.parametrize("name", DATASETS)
def test_fingerprint_on_every_shared_dataset(name, tmp_path):
    need_shared()
    out_file = tmp_path / "fp.json"
    out = run("fingerprint", str(SHARED_DATASETS / name), "--max-cases", "3", "-j", "2", "-o", str(out_file))
    assert out.returncode == 0, out.stderr[-2000:]
    fp = json.loads(out_file.read_text())
    assert fp["autoloss_fingerprint_version"] == 2 and fp["classes"]
    assert all(c["regime"] for c in fp["classes"].values())
    # and recommend reads the saved fingerprint without touching the data again
    again = run("recommend", "--fingerprint", str(out_file), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)


def test_dataset_by_id_through_nnunet_raw():
    need_shared()
    import os

    env = dict(os.environ, nnUNet_raw=str(SHARED_DATASETS))
    out = run("recommend", "103", "--json", "--max-cases", "2", env=env)
    assert out.returncode == 0, out.stderr[-2000:]


def test_losses_lists_the_registry():
    out = run("losses")
    assert out.returncode == 0
    for name in ("DiceCE", "DiceTopK", "DiceFocal", "DiceHD", "DiceBD", "Lovasz", "ELL"):
        assert name in out.stdout
    js = run("losses", "--json")
    assert js.returncode == 0 and len(json.loads(js.stdout)) >= 22
