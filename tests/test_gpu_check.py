"""benchmarks/gpu_check.py runs every step at tiny sizes on the CPU, without the packages the GPU machine lacks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_step_with_the_bundle_only(tmp_path):
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    made = subprocess.run([sys.executable, str(SCRIPT), "--make-bundle", str(bundle)], capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert (bundle / "nnunetv2").is_dir() and (bundle / "dynamic_network_architectures").is_dir()
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    assert size < 16 * 2 ** 20  # travels with the tree (64 MiB in all)
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--bare", "--bundle",
                          str(bundle), "--out", str(out)], capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert f"nnunetv2 from {bundle}" in lines[0]  # not from this environment's site-packages
    assert "cc3d absent" in run.stdout  # --bare refused it, as the GPU machine lacks it
    assert lines[-1].startswith("headline (CPU, smoke sizes): worst region loss") and "nnU-Net 3d_fullres" in lines[-1]
    figures = json.loads((out / "gpu_check.json").read_text())
    from autoloss.losses import LOSS_NAMES

    assert [r["loss"] for r in figures["losses"]["rows"]] == list(LOSS_NAMES)
    assert [r["loss"] for r in figures["network"]["results"]] == ["DiceCE", "DiceCE+clDice"]
    assert all(r["iterations"] == 3 for r in figures["network"]["results"])
    assert (out / "losses.md").read_text().startswith("### Losses on CPU") and (out / "network.md").exists()


def test_gpu_check_without_nnunet_skips_in_one_line(tmp_path):
    code = ("import sys; sys.modules['nnunetv2'] = None; sys.argv = ['gpu_check', '--smoke', '--device', 'cpu'];"
            f"sys.path.insert(0, {str(SCRIPT.parent)!r}); import gpu_check; raise SystemExit(gpu_check.main())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("skipped: both steps need nnU-Net's DC_and_CE")
