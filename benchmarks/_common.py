"""Helpers shared by the search benchmarks: a prepared nnU-Net dataset in a scratch work directory."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def prepared_dataset(dataset: str, work: Path, max_cases: int, configuration: str = "2d"):
    from autoloss.dataset import read_dataset
    from autoloss.nnunet import env
    from autoloss.nnunet.prepare import prepare

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.pop(var, None)
    env.configure(work)
    path = Path(dataset) if Path(dataset).exists() else SHARED / dataset
    ds = read_dataset(path, max_cases=max_cases)
    return ds, prepare(ds, configuration, work, max_cases=max_cases, num_processes=2, log=lambda s: None)


def load_average() -> str:
    """The 1/5/15-minute load averages (benchmarks print them beside every timing: this machine is shared)."""
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())
