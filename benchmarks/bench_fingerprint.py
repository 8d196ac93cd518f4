"""autoloss fingerprint vs nnUNetv2_extract_fingerprint on the same datasets, in the same run.

Both run end to end as commands (interpreter start, imports, reading, writing the JSON), with the same number of
processes and a warm file cache: ``autoloss fingerprint DIR -j N -o FILE`` and
``nnUNetv2_extract_fingerprint -d ID -np N --clean`` (no --verify_dataset_integrity) with nnUNet_raw pointing at
the datasets folder and nnUNet_preprocessed at a scratch folder. autoloss also computes object statistics
(connected components, sizes, boundary, extent) that nnU-Net's fingerprint lacks. The bar: 3x faster.

    python benchmarks/bench_fingerprint.py [-np 2] [--datasets Dataset103_Hippocampus Dataset102_MontgomeryLungs]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DEFAULT = ["Dataset103_Hippocampus", "Dataset102_MontgomeryLungs"]


def _warm(folder: Path) -> None:
    """Read every file once so neither tool pays for a cold page cache."""
    for p in folder.rglob("*"):
        if p.is_file():
            p.read_bytes()


def _timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return seconds, out


def _nnunet_cmd() -> str:
    exe = Path(sys.executable).with_name("nnUNetv2_extract_fingerprint")
    return str(exe) if exe.exists() else (shutil.which("nnUNetv2_extract_fingerprint") or sys.exit(
        "nnUNetv2_extract_fingerprint not found (install nnunetv2)"))


def bench(folder: Path, processes: int, repeats: int, scratch: Path) -> dict:
    dataset_id = int(folder.name[7:10])
    env = dict(os.environ, nnUNet_raw=str(folder.parent), nnUNet_preprocessed=str(scratch / "pre"),
               nnUNet_results=str(scratch / "res"), PYTHONPATH=os.pathsep.join(
                   [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    _warm(folder)
    fp_file = scratch / f"{folder.name}.json"
    ours, theirs = [], []
    for _ in range(repeats):
        s, _ = _timed([sys.executable, "-m", "autoloss", "fingerprint", str(folder), "-j", str(processes),
                       "-o", str(fp_file)], env)
        ours.append(s)
        s, _ = _timed([_nnunet_cmd(), "-d", str(dataset_id), "-np", str(processes), "--clean"], env)
        theirs.append(s)
    fp = json.loads(fp_file.read_text())
    nn_fp = json.loads((scratch / "pre" / folder.name / "dataset_fingerprint.json").read_text())
    if len(nn_fp["spacings"]) != fp["dataset"]["num_cases_measured"]:
        sys.exit(f"{folder.name}: nnU-Net measured {len(nn_fp['spacings'])} cases, autoloss "
                 f"{fp['dataset']['num_cases_measured']}")
    objects = sum(c["objects_per_case"]["mean"] or 0 for c in fp["classes"].values())
    return {"dataset": folder.name, "cases": fp["dataset"]["num_cases_measured"], "autoloss": min(ours),
            "autoloss_compute": fp["timing"]["seconds"], "nnunet": min(theirs), "objects_per_case": objects}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-np", type=int, default=2, help="processes for both tools (default 2)")
    ap.add_argument("--datasets", nargs="+", default=DEFAULT,
                    help="dataset folders, or names under ../shared/datasets (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tool; the fastest counts (default 1)")
    args = ap.parse_args()
    folders = [Path(d) if Path(d).is_dir() else SHARED / d for d in args.datasets]
    for f in folders:
        if not (f / "dataset.json").is_file():
            sys.exit(f"{f}: not an nnU-Net raw dataset (the shared datasets live in {SHARED})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fp_") as tmp:
        for f in folders:
            rows.append(bench(f, args.np, args.repeats, Path(tmp)))
    print(f"{'dataset':<28} {'cases':>5} {'autoloss s':>10} {'(compute s)':>11} {'nnU-Net s':>9} {'ratio':>6}"
          f" {'objects/case':>12}")
    for r in rows:
        r["ratio"] = r["nnunet"] / r["autoloss"]
        print(f"{r['dataset']:<28} {r['cases']:>5} {r['autoloss']:>10.2f} {r['autoloss_compute']:>11.2f} "
              f"{r['nnunet']:>9.2f} {r['ratio']:>5.1f}x {r['objects_per_case']:>12.1f}")
    print(f"(-np {args.np}; wall time of each command end to end, best of {args.repeats}; '(compute s)' is "
          "autoloss's own in-process timing)")
    worst = min(r["ratio"] for r in rows)
    print(f"headline: autoloss fingerprint is {worst:.1f}x faster than nnUNetv2_extract_fingerprint "
          "(min over datasets; bar 3x)")


if __name__ == "__main__":
    main()
