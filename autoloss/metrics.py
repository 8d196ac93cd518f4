"""Validation metrics per class: Dice and normalised surface Dice (NSD).

NSD (Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy", 2018): the
share of both surfaces that lies within ``tolerance`` mm of the other surface,
    NSD = (|S_p within tau of S_r| + |S_r within tau of S_p|) / (|S_p| + |S_r|),
with surfaces taken as the boundary voxels of each mask and distances exact Euclidean in mm (scipy, with the
voxel spacing). Like nnU-Net's Dice, a class absent from both prediction and reference gives NaN (left out of
means); absent from exactly one gives 0.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def dice(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> float:
    if valid is not None:
        pred, ref = pred & valid, ref & valid
    denom = int(pred.sum()) + int(ref.sum())
    return float("nan") if denom == 0 else 2.0 * int((pred & ref).sum()) / denom


def nsd(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> float:
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return 0.0
    sp, sr = _surface(pred), _surface(ref)
    # distance of every voxel to the nearest surface voxel of the other mask
    d_to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    d_to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    close = int((d_to_ref[sp] <= tolerance).sum()) + int((d_to_pred[sr] <= tolerance).sum())
    return close / float(sp.sum() + sr.sum())


def case_metrics(pred: np.ndarray, ref: np.ndarray, labels_or_regions: list, spacing: tuple[float, ...],
                 tolerance: float, ignore_label: int | None = None) -> dict[str, dict[str, float]]:
    """Per class (a label int or a region tuple): Dice and NSD of one case."""
    valid = None if ignore_label is None else ref != ignore_label
    out = {}
    for lab in labels_or_regions:
        members = list(lab) if isinstance(lab, (list, tuple)) else [lab]
        p, r = np.isin(pred, members), np.isin(ref, members)
        if valid is not None:
            p, r = p & valid, r & valid
        out[str(lab)] = {"dice": dice(p, r), "nsd": nsd(p, r, spacing, tolerance)}
    return out


def summarise(per_case: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean over cases per class (NaN-aware, like nnU-Net), plus the foreground mean over classes."""
    classes = sorted({c for m in per_case.values() for c in m})
    result: dict[str, dict[str, float]] = {}
    for c in classes:
        result[c] = {}
        for metric in ("dice", "nsd"):
            values = [m[c][metric] for m in per_case.values() if c in m and not np.isnan(m[c][metric])]
            result[c][metric] = float(np.mean(values)) if values else float("nan")
    result["mean"] = {metric: _nanmean([result[c][metric] for c in classes]) for metric in ("dice", "nsd")}
    return result


def _nanmean(values: list[float]) -> float:
    arr = np.array([v for v in values if not np.isnan(v)])
    return float(arr.mean()) if arr.size else float("nan")
