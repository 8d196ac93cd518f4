"""autoloss verify vs nnU-Net's verify_dataset_integrity on the same datasets, in the same run.

Both run end to end as commands a user would run (interpreter start, imports, every case), with the same number
of processes and a warm file cache:

- ``autoloss verify DIR -j N``: nnU-Net's checks (dataset.json, files per case, channels, shape/spacing, label
  values, NaN) plus every image and label decoded whole (truncation, NaN/Inf in NIfTI too, all-background
  labels, images too small);
- ``verify_dataset_integrity(DIR, num_processes=N)`` (nnU-Net's own function, what
  ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` calls), run through ``python -c``.

The bar: autoloss no slower than nnU-Net's check alone. Each pair runs ``--repeats`` times, interleaved, and the
median is reported (the machine these run on is shared).

    python benchmarks/bench_verify.py [-np 2] [--repeats 3] [--datasets Dataset103_Hippocampus ...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
NNUNET = ("from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity; "
          "import sys; verify_dataset_integrity(sys.argv[1], num_processes=int(sys.argv[2]))")


def _warm(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            p.read_bytes()


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-np", type=int, default=2, help="processes for both (default 2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--datasets", nargs="+", default=sorted(p.name for p in SHARED.glob("Dataset*")))
    args = ap.parse_args()
    env = dict(os.environ, nnUNet_raw=str(SHARED), nnUNet_preprocessed="/tmp", nnUNet_results="/tmp")
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print("| dataset | cases | files | autoloss verify s | nnU-Net verify_dataset_integrity s | ratio |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for name in args.datasets:
        folder = SHARED / name
        _warm(folder)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(_timed([sys.executable, "-m", "autoloss", "verify", str(folder), "-j", str(args.np)]))
            theirs.append(_timed([sys.executable, "-c", NNUNET, str(folder), str(args.np)]))
        a, b = statistics.median(ours), statistics.median(theirs)
        cases = len(list((folder / "labelsTr").iterdir()))
        files = cases + len(list((folder / "imagesTr").iterdir()))
        worst = max(worst, a / b)
        print(f"| {name} | {cases} | {files} | {a:.2f} | {b:.2f} | {a / b:.2f}x |", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"headline: autoloss verify takes at most {worst:.2f}x the time of nnU-Net's verify_dataset_integrity "
          f"(bar: 1.00x, no slower) while decoding every file whole")


if __name__ == "__main__":
    main()
