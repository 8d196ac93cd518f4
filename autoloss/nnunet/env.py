"""nnU-Net's environment: the three folders and the process counts, set for autoloss's own runs.

The user's ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` are honoured when set; autoloss fills in
only what is missing, under its work directory. nnU-Net reads the folders at call time, but it reads
``nnUNet_def_n_proc`` once at import, so call :func:`configure` before anything imports ``nnunetv2``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

FOLDER_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def configure(work_dir: Path, *, processes: int | None = None) -> dict[str, str]:
    """Set missing nnU-Net variables (folders under ``work_dir/nnunet``) and sane process counts."""
    work_dir = Path(work_dir)
    for var in FOLDER_VARS:
        if not os.environ.get(var):
            path = work_dir / "nnunet" / var.split("_", 1)[1]
            path.mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(path)
    cores = os.cpu_count() or 1
    # nnU-Net defaults to 8 export/preprocessing processes; on small machines that costs more than it saves
    # (validation fell from ~60 s to ~13 s on 2 cores, DESIGN.md).
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, min(cores, processes or cores, 8))))
    os.environ.setdefault("nnUNet_compile", "false")  # per-trial compile time would dominate short trials
    _sync_imported_default()
    return {var: os.environ[var] for var in FOLDER_VARS}


def _sync_imported_default() -> None:
    # If nnunetv2 was imported before configure(), its module-level default is stale: align it.
    mod = sys.modules.get("nnunetv2.configuration")
    if mod is not None:
        mod.default_num_processes = int(os.environ["nnUNet_def_n_proc"])


@contextlib.contextmanager
def overridden(**values: str | None) -> Iterator[None]:
    """Temporarily set (or unset, with None) environment variables; nnU-Net reads its folders lazily."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
