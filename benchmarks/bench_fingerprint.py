"""autoloss fingerprint vs nnUNetv2_extract_fingerprint on the same datasets, in the same run.

Both run end to end as commands (interpreter start, imports, reading, writing the JSON), with the same number of
processes and a warm file cache: ``autoloss fingerprint DIR -j N -o FILE`` and ``nnUNetv2_extract_fingerprint -d ID
-np N --clean`` (no --verify_dataset_integrity) with nnUNet_raw pointing at the datasets folder and
nnUNet_preprocessed at a scratch folder. autoloss also computes object statistics (connected components, weighted
sizes, instances, thickness, curve-or-surface dimension, regimes, nested labels, boundary, extent) that nnU-Net's
fingerprint lacks. Peak memory is the largest sum over the command's process tree of each process's proportional set
size (PSS, /proc/PID/smaps_rollup: pages shared by forked workers counted once), sampled every 20 ms. The bars: at
least 5x faster and at most a quarter of nnU-Net's peak memory.

Two generated 3D datasets with large volumes join the shared ones (--large3d, default on; written to the scratch
folder): 4 cases of 155x240x240 with 4 classes of 1-6 ellipsoids each, and 4 cases of the same grid with nested
layers as in a brain tumour (a core inside a rim 3-4 voxels thick inside a thick outer layer, plus specks), which
exercises the thin-rim path (full-resolution thickness, curve-or-surface dimension, nested labels).

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
import threading
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


def _tree(root: int) -> list[int]:
    """``root`` and its live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak PSS (MB) of the process tree of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    result: dict = {}
    reader = threading.Thread(target=lambda: result.update(zip(("out", "err"), proc.communicate())))
    reader.start()
    while proc.poll() is None:
        peak = max(peak, sum(_pss_kb(p) for p in _tree(proc.pid)))
        time.sleep(0.02)
    reader.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{result.get('err', '')[-3000:]}")
    return seconds, peak / 1024


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
    ours, theirs, our_mem, their_mem = [], [], [], []
    for _ in range(repeats):
        s, m = _timed([sys.executable, "-m", "autoloss", "fingerprint", str(folder), "-j", str(processes),
                       "-o", str(fp_file)], env)
        ours.append(s)
        our_mem.append(m)
        s, m = _timed([_nnunet_cmd(), "-d", str(dataset_id), "-np", str(processes), "--clean"], env)
        theirs.append(s)
        their_mem.append(m)
    fp = json.loads(fp_file.read_text())
    nn_fp = json.loads((scratch / "pre" / folder.name / "dataset_fingerprint.json").read_text())
    if len(nn_fp["spacings"]) != fp["dataset"]["num_cases_measured"]:
        sys.exit(f"{folder.name}: nnU-Net measured {len(nn_fp['spacings'])} cases, autoloss "
                 f"{fp['dataset']['num_cases_measured']}")
    regimes = ",".join(sorted({c["regime"] for c in fp["classes"].values()}))
    return {"dataset": folder.name, "cases": fp["dataset"]["num_cases_measured"], "autoloss": min(ours),
            "autoloss_compute": fp["timing"]["seconds"], "nnunet": min(theirs), "autoloss_mb": max(our_mem),
            "nnunet_mb": max(their_mem), "regimes": regimes}


def large_3d(scratch: Path) -> Path:
    """4 cases of 155x240x240 (a BraTS-sized grid) with 4 classes of 1-6 objects each."""
    sys.path.insert(0, str(ROOT))
    from autoloss.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(scratch / "raw3d", dim=3, num_cases=4, shape=(155, 240, 240), num_classes=4,
                                  foreground_ratio=(0.05, 0.02, 0.01, 0.004), objects_per_case=(1, 2, 3, 6),
                                  dataset_id=997, name="Large3D", seed=0)


def nested_3d(scratch: Path) -> Path:
    """4 cases of 155x240x240: label 1 a core, 2 a rim 3-4 voxels thick around it, 3 an outer layer; 30 specks."""
    sys.path.insert(0, str(ROOT))
    from autoloss.synthetic import layered_ball, write_labels_dataset

    labels = [layered_ball((155, 240, 240), (core, core + rim, core + rim + 20), specks=30, seed=i)
              for i, (core, rim) in enumerate(((14, 3), (18, 4), (22, 3), (26, 4)))]
    return write_labels_dataset(scratch / "raw3d", labels, dataset_id=996, name="Nested3D",
                                label_names={"background": 0, "core": 1, "rim": 2, "outer": 3})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-np", type=int, default=2, help="processes for both tools (default 2)")
    ap.add_argument("--datasets", nargs="+", default=DEFAULT,
                    help="dataset folders, or names under ../shared/datasets (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tool; the fastest counts (default 1)")
    ap.add_argument("--no-large3d", dest="large3d", action="store_false",
                    help="skip the generated 3D datasets of large volumes")
    args = ap.parse_args()
    folders = [Path(d) if Path(d).is_dir() else SHARED / d for d in args.datasets]
    for f in folders:
        if not (f / "dataset.json").is_file():
            sys.exit(f"{f}: not an nnU-Net raw dataset (the shared datasets live in {SHARED})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fp_") as tmp:
        if args.large3d:
            folders += [large_3d(Path(tmp)), nested_3d(Path(tmp))]
        for f in folders:
            rows.append(bench(f, args.np, args.repeats, Path(tmp)))
    print(f"{'dataset':<27} {'cases':>5} {'autoloss s':>10} {'nnU-Net s':>9} {'speed-up':>8} {'autoloss MB':>11} "
          f"{'nnU-Net MB':>10} {'mem':>5}  regimes")
    for r in rows:
        r["ratio"] = r["nnunet"] / r["autoloss"]
        r["mem"] = r["autoloss_mb"] / r["nnunet_mb"]
        print(f"{r['dataset']:<27} {r['cases']:>5} {r['autoloss']:>10.2f} {r['nnunet']:>9.2f} {r['ratio']:>7.1f}x "
              f"{r['autoloss_mb']:>11.0f} {r['nnunet_mb']:>10.0f} {r['mem']:>5.2f}  {r['regimes']}")
    print(f"(-np {args.np}; wall time of each command end to end, best of {args.repeats}; peak PSS of its process "
          "tree; mem = autoloss / nnU-Net)")
    worst = min(r["ratio"] for r in rows)
    worst_mem = max(r["mem"] for r in rows)
    print(f"headline: autoloss fingerprint is {worst:.1f}x faster than nnUNetv2_extract_fingerprint with "
          f"{worst_mem:.2f} of its peak memory (worst over datasets; bars 5x and 0.25)")


if __name__ == "__main__":
    main()
