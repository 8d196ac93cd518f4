"""A fixed numeric feature vector from a fingerprint, for comparing datasets (the memory's notion of "alike").

Every feature is on a scale where equal steps mean equally different datasets (logs of fractions and sizes),
and summarises the classes by the one that is hardest for a loss (the smallest, rarest, thinnest), since that
class is what a special loss is chosen for. Missing keys give NaN, never an error: old records lack the
fingerprint v2 fields, estimated seed fingerprints lack most extras, and the ranking compares datasets on the
features both have (scikit-learn's nan_euclidean distance, which rescales for the features left out).

    log_min_fraction      log10 smallest class's voxel fraction where present (mean fraction / (1 - absent))
    log_max_fraction      log10 largest class's voxel fraction where present
    log_min_object        log10 smallest class's median object size / median image size (voxels)
    log_objects           log10(1 + most objects per case of any class, median over cases)
    max_absent            largest share of cases a class is absent from
    max_boundary          largest median boundary-voxels / class-voxels (thin, ragged, small structures -> 1)
    log_num_classes       log2 number of foreground classes
    is_3d                 1 for 3D data, 0 for 2D
    log_anisotropy        log10 largest / smallest median spacing
  fingerprint v2 fields (NaN when the fingerprint predates them):
    log_min_weighted_object  log10 smallest class's size-weighted object size sum(s^2)/sum(s) / image voxels
    min_largest_share     smallest share of a class held by its largest object (fragmented classes -> 0)
    log_min_thickness     log10 thinnest class's thickness in voxels (2 x EDT on the skeleton)
    max_skeleton_ratio    largest skeleton voxels / class voxels (tubes ~ 1/(pi r^2), blobs ~ 0)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

FEATURES = ("log_min_fraction", "log_max_fraction", "log_min_object", "log_objects", "max_absent", "max_boundary",
            "log_num_classes", "is_3d", "log_anisotropy", "log_min_weighted_object", "min_largest_share",
            "log_min_thickness", "max_skeleton_ratio")
_TINY = 1e-9


def _num(value: Any, key: str = "median") -> float:
    """A number from a fingerprint entry that is a number or a stats dict ({median, mean, ...}); NaN if none."""
    if isinstance(value, dict):
        value = value.get(key, value.get("mean") if key == "median" else None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.nan
    return float(value)


def _log10(x: float) -> float:
    return math.log10(max(x, _TINY)) if x == x else math.nan


def _agg(values: list[float], fn) -> float:
    vals = [v for v in values if v == v]
    return fn(vals) if vals else math.nan


def feature_dict(fp: dict[str, Any]) -> dict[str, float]:
    """The named features of one fingerprint (NaN where the fingerprint does not say)."""
    ds = fp.get("dataset") or {}
    shape = ds.get("shape_median") or []
    image = float(math.prod(shape)) if shape else math.nan
    fractions, objects, counts, absents, boundaries = [], [], [], [], []
    weighted, largest, thickness, skeleton = [], [], [], []
    for c in (fp.get("classes") or {}).values():
        absent = _num(c.get("absent_fraction"))
        absent = 0.0 if absent != absent else absent
        if absent >= 1.0:
            continue  # never present: says nothing about the dataset's difficulty
        fractions.append(_num(c.get("voxel_fraction"), "mean") / max(1.0 - absent, _TINY))
        objects.append(_num(c.get("object_size_voxels")) / image if image == image else math.nan)
        counts.append(_num(c.get("objects_per_case")))
        absents.append(absent)
        boundaries.append(_num(c.get("boundary_to_volume")))
        w = _num(c.get("object_size_weighted_voxels"))
        weighted.append(w / image if image == image else math.nan)
        largest.append(_num(c.get("largest_object_share")))
        thickness.append(_num(c.get("thickness_voxels")))
        skeleton.append(_num(c.get("skeleton_ratio")))
    spacing = [s for s in (ds.get("spacing_median") or []) if isinstance(s, (int, float)) and s > 0]
    anis = _num(ds.get("anisotropy"))
    if anis != anis and spacing:
        anis = max(spacing) / min(spacing)
    dim = _num(ds.get("dim"))
    n = len(fractions)
    return {
        "log_min_fraction": _log10(_agg(fractions, min)),
        "log_max_fraction": _log10(_agg(fractions, max)),
        "log_min_object": _log10(_agg(objects, min)),
        "log_objects": math.log10(1.0 + _agg(counts, max)) if _agg(counts, max) == _agg(counts, max) else math.nan,
        "max_absent": _agg(absents, max),
        "max_boundary": _agg(boundaries, max),
        "log_num_classes": math.log2(n) if n else math.nan,
        "is_3d": (1.0 if dim == 3 else 0.0) if dim == dim else math.nan,
        "log_anisotropy": _log10(anis),
        "log_min_weighted_object": _log10(_agg(weighted, min)),
        "min_largest_share": _agg(largest, min),
        "log_min_thickness": _log10(_agg(thickness, min)),
        "max_skeleton_ratio": _agg(skeleton, max),
    }


def feature_vector(fp: dict[str, Any]) -> np.ndarray:
    """``feature_dict`` as an array in the fixed order of ``FEATURES``."""
    d = feature_dict(fp)
    return np.array([d[name] for name in FEATURES], np.float64)
