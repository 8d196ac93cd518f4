"""Verification (``autoloss verify``): is a raw dataset fit to train? Checked before anything is trained (every
search runs it first).

Everything nnU-Net's ``verify_dataset_integrity`` checks (dataset.json keys and labels, every case's files, the
channel count, image/label shape and spacing, label values declared, NaN), plus what it cannot see because its
readers do not: every image and label file is decoded once, whole (``autoloss.filecheck``), so a .nii.gz cut short
(SimpleITK zero-fills it), NaN or infinite voxels in NIfTI (SimpleITK reads them as 0), an uncompressed file
shorter than its header says and a truncated PNG/TIFF are found and named. Across the dataset: labels that are
background everywhere, and images too small for any network.

Errors (exit 2) are what nnU-Net cannot train or would train on silently damaged data: NaN and infinite image
values are errors (nnU-Net's preprocessing asserts on NaN; an infinite value turns its z-score normalisation into
NaN). Warnings are what nnU-Net itself only warns about: origin/direction mismatches between a case's image and
label, ``numTraining`` disagreeing with the files, a declared class that no label holds.

Each finding is one line naming the file or case and what to do. Cases are checked in a process pool (fork when
this process runs no threads, else forkserver), a chunk of cases per task.
"""
from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from autoloss.casepool import map_cases
from autoloss.dataset import (Case, Dataset, as_integer_labels, all_background_error, check_case_geometry,
                              check_label_values, read_label)
from autoloss.errors import AutolossError
from autoloss.filecheck import NATURAL_READER, decode

# nnU-Net pools an axis only while it keeps >= 4 voxels (its minimum feature map), so a U-Net with one pooling
# step needs an axis of at least 8; below that its planner makes a network with no resolution stage to train.
MIN_NETWORK_AXIS = 8
MAX_LINES_IN_SEARCH = 20
CACHE_NAME = "verified.json"


class DatasetProblems(AutolossError):
    """The findings of a verification that has errors: one line each (the CLI prefixes every line)."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass
class VerifyReport:
    dataset: str
    cases: int
    files: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def verify_case(case: Case, ds: Dataset) -> dict[str, Any]:
    """The findings of one case and what the dataset-level checks need (label values present, shape)."""
    errors: list[str] = []
    warnings: list[str] = []
    try:
        check_case_geometry(case, ds)
    except AutolossError as exc:
        errors.append(str(exc))
    # a file already refused by its header is not decoded again (one line per defect)
    refused = {f for f in [case.label, *case.images] if errors and errors[0].startswith(f"{f}:")}
    present: list[int] = []
    shape: tuple[int, ...] = ()
    label_affine = None
    try:
        if case.label in refused:
            raise AutolossError(errors[0])
        if ds.reader == NATURAL_READER:  # PIL decodes it whole; the reader also refuses colour/palette labels
            labels, _ = read_label(case, ds, check_values=False)
        else:  # nibabel for NIfTI: NaN stays NaN, a short gzip stream raises
            arr, label_affine = decode(case.label, ds.reader)
            labels = as_integer_labels(np.squeeze(arr) if arr.ndim > 3 else arr, case.label)
        shape = tuple(int(s) for s in labels.shape)
        hi = int(labels.max()) if labels.size else 0
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=hi + 1)).tolist()
        check_label_values(present, ds, case.label)
    except AutolossError as exc:
        errors.append(str(exc))
    for image in case.images:
        if image in refused:
            continue
        try:
            arr, affine = decode(image, ds.reader)
        except AutolossError as exc:
            errors.append(str(exc))
            continue
        if arr.dtype.kind in "fc":
            bad = ~np.isfinite(arr)
            if bad.any():
                nan = int(np.isnan(arr).sum())
                what = " and ".join(p for p in (f"{nan} NaN" if nan else "",
                                                f"{int(bad.sum()) - nan} infinite" if bad.sum() > nan else "") if p)
                errors.append(f"{image}: {what} voxel value(s) of {arr.size}; nnU-Net cannot normalise them: "
                              "replace them (e.g. with the image's minimum) and re-save the file")
        if not errors and label_affine is not None and affine is not None and affine.shape == label_affine.shape \
                and not np.allclose(affine, label_affine, atol=1e-3):
            warnings.append(f"case {case.identifier}: image {image.name} and label {case.label.name} differ in "
                            "origin or direction (nnU-Net warns too); check they are aligned, e.g. with "
                            "nnUNetv2_plot_overlay_pngs")
    errors = list(dict.fromkeys(errors))  # a file refused by its header check and its decoding: one line
    return {"id": case.identifier, "errors": errors, "warnings": warnings, "present": present, "shape": shape,
            "files": 1 + len(case.images)}


def _dataset_findings(ds: Dataset, cases: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors, warnings = [], list(ds.warnings)
    decoded = [c for c in cases if c["shape"]]
    if decoded and not any(set(c["present"]) - {0, ds.ignore_label} for c in decoded):
        errors.append(str(all_background_error(ds.root, [c["id"] for c in decoded])))
    elif decoded and not ds.has_regions:
        seen = set().union(*(c["present"] for c in decoded))
        for name, value in ds.labels.items():
            if isinstance(value, int) and value not in seen and value not in (0, ds.ignore_label):
                warnings.append(f"{ds.root}: class {name!r} (label {value}) appears in no label file; nnU-Net would "
                                "train it without a single example (drop it from dataset.json or add labels)")
    if decoded:
        largest = sorted(max(c["shape"]) for c in decoded)[len(decoded) // 2]
        if largest < MIN_NETWORK_AXIS:
            small = min(decoded, key=lambda c: max(c["shape"]))
            errors.append(f"{ds.root}: images are too small for any network (median case's largest axis "
                          f"{largest} voxels, e.g. case {small['id']} is {'x'.join(map(str, small['shape']))}): "
                          f"nnU-Net needs at least {MIN_NETWORK_AXIS} voxels along an axis to pool once; "
                          "use larger images")
    return errors, warnings


def verify_dataset(ds: Dataset, num_workers: int | None = None, progress: bool = False) -> VerifyReport:
    """Check every case of ``ds`` (see the module docstring); never raises for a finding, only reports it."""
    start = time.perf_counter()
    workers = num_workers or min(4, os.cpu_count() or 1)
    # the readers are imported once here, not in every forked worker; a pool pays off from about 16 cases
    import nibabel  # noqa: F401
    import SimpleITK  # noqa: F401
    from PIL import Image  # noqa: F401

    cases = map_cases(ds, ds.cases, verify_case, workers=workers, what="verify", progress=progress, min_pool=16,
                      preload=["autoloss.verification"])
    errors = [e for c in cases for e in c["errors"]]
    warnings = [w for c in cases for w in c["warnings"]]
    more_errors, more_warnings = _dataset_findings(ds, cases)
    return VerifyReport(dataset=str(ds.root), cases=len(cases), files=sum(c["files"] for c in cases),
                        seconds=round(time.perf_counter() - start, 3), errors=errors + more_errors,
                        warnings=more_warnings + warnings)


def _file_stamps(ds: Dataset) -> dict[str, list[int]]:
    stamps = {}
    for case in ds.cases:
        for f in [case.label, *case.images]:
            st = os.stat(f)
            stamps[str(f)] = [st.st_size, st.st_mtime_ns]
    stamps[str(ds.root / "dataset.json")] = [os.stat(ds.root / "dataset.json").st_size,
                                             os.stat(ds.root / "dataset.json").st_mtime_ns]
    return stamps


def verify_before_search(ds: Dataset, work_dir: Path, log: Callable[[str], None],
                         num_workers: int | None = None) -> None:
    """The search's first step: verify ``ds`` (skipped when its files are unchanged since the last verification
    in ``work_dir``); raises :class:`DatasetProblems` with every error, one per line."""
    cache = Path(work_dir) / CACHE_NAME
    stamps = _file_stamps(ds)
    try:
        if json.loads(cache.read_text()).get("files") == stamps:
            return
    except (OSError, ValueError, AttributeError):
        pass
    report = verify_dataset(ds, num_workers=num_workers)
    for line in report.warnings:
        log(f"warning: {line}")
    if report.errors:
        lines = report.errors[:MAX_LINES_IN_SEARCH]
        if len(report.errors) > len(lines):
            lines.append(f"{ds.root}: {len(report.errors) - len(lines)} more problem(s); see them all with: "
                         f"autoloss verify {shlex.quote(str(ds.root))}")
        raise DatasetProblems(lines)
    log(f"verified {report.cases} case(s), {report.files} files decoded whole ({report.seconds:.1f} s)")
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps({"dataset": str(ds.root), "files": stamps, "seconds": report.seconds}))
    os.replace(tmp, cache)

