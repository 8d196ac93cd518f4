"""Validation metrics per class and case: Dice, normalised surface Dice (NSD), HD95, and the metrics that judge
topology- and instance-aware losses: clDice, Betti-0 error, lesion-wise recall / precision / F1.

NSD (Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy", 2018): the
share of both surfaces that lies within ``tolerance`` mm of the other surface,
    NSD = (|S_p within tau of S_r| + |S_r within tau of S_p|) / (|S_p| + |S_r|),
with surfaces taken as the boundary voxels of each mask and distances exact Euclidean in mm (scipy, with the
voxel spacing). Like nnU-Net's Dice, a class absent from both prediction and reference gives NaN (left out of
means); absent from exactly one gives 0.

HD95: the larger of the two directed 95th percentiles of surface-to-surface distances (mm); absent from exactly
one mask it is the image diagonal in mm (the worst possible, so a missed class is not averaged away).

clDice (Shit et al., CVPR 2021): ``2 Tprec Tsens / (Tprec + Tsens)`` with ``Tprec = |S(P) ∩ R| / |S(P)|``,
``Tsens = |S(R) ∩ P| / |S(R)|`` and ``S`` the skeleton (``skimage.morphology.skeletonize``; Lee's thinning in 3D).
Betti-0 error: ``|#components(P) - #components(R)|`` (8-/26-connectivity). Lesion-wise detection: components of
the reference and of the prediction, a component counts as found when it overlaps the other mask by at least one
voxel; recall = found reference lesions / reference lesions, precision = prediction components touching a
reference lesion / prediction components, F1 their harmonic mean (NaN when neither mask has a component).
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


def _surface_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) of each prediction surface voxel to the reference surface, and the other way round."""
    sp, sr = _surface(pred), _surface(ref)
    d_to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    d_to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return d_to_ref[sp], d_to_pred[sr]


def nsd(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance: float) -> float:
    return surface_metrics(pred, ref, spacing, tolerance)[0]


def surface_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance: float
                    ) -> tuple[float, float]:
    """(NSD at ``tolerance`` mm, HD95 in mm) from one pair of distance transforms."""
    if not pred.any() and not ref.any():
        return float("nan"), float("nan")
    if not pred.any() or not ref.any():
        return 0.0, float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))
    d_pr, d_rp = _surface_distances(pred, ref, spacing)
    close = int((d_pr <= tolerance).sum()) + int((d_rp <= tolerance).sum())
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    return close / float(d_pr.size + d_rp.size), hd95


def _skeleton(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask).astype(bool)


def cldice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Centreline Dice of two binary masks (NaN when both are empty, 0 when one is)."""
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return 0.0
    sp, sr = _skeleton(pred), _skeleton(ref)
    tprec = (sp & ref).sum() / sp.sum() if sp.any() else 0.0
    tsens = (sr & pred).sum() / sr.sum() if sr.any() else 0.0
    return 0.0 if tprec + tsens == 0 else float(2 * tprec * tsens / (tprec + tsens))


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the bounding box of their union plus one voxel (skeletons only see the objects)."""
    union = pred | ref
    if not union.any():
        return pred, ref
    box = tuple(slice(max(0, int(np.min(ix)) - 1), int(np.max(ix)) + 2) for ix in np.nonzero(union))
    return pred[box], ref[box]


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    import cc3d

    return cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8),
                                     connectivity=8 if mask.ndim == 2 else 26, return_N=True)


def betti0_error(pred: np.ndarray, ref: np.ndarray) -> float:
    """|number of connected components of pred - of ref|."""
    return float(abs(_components(pred)[1] - _components(ref)[1]))


def lesion_detection(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Lesion-wise recall, precision and F1 (components matched by any overlap)."""
    ref_cc, n_ref = _components(ref)
    pred_cc, n_pred = _components(pred)
    found = len(np.unique(ref_cc[pred & (ref_cc > 0)])) if n_ref else 0
    hits = len(np.unique(pred_cc[ref & (pred_cc > 0)])) if n_pred else 0
    recall = found / n_ref if n_ref else float("nan")
    precision = hits / n_pred if n_pred else float("nan")
    if n_ref == 0 and n_pred == 0:
        f1 = float("nan")
    elif n_ref == 0 or n_pred == 0 or recall + precision == 0:
        f1 = 0.0
    else:
        f1 = 2 * recall * precision / (recall + precision)
    return {"lesion_recall": recall, "lesion_precision": precision, "lesion_f1": f1}


def case_metrics(pred: np.ndarray, ref: np.ndarray, labels_or_regions: list, spacing: tuple[float, ...],
                 tolerance: float, ignore_label: int | None = None,
                 cldice_classes=None) -> dict[str, dict[str, float]]:
    """Per class (a label int or a region tuple): every metric of this module for one case.

    ``cldice_classes``: the class keys (``str(label)``) whose clDice is computed (two skeletonisations: seconds
    for a large 3D case); None = every class. The others get no ``cldice`` entry."""
    valid = None if ignore_label is None else ref != ignore_label
    out = {}
    for lab in labels_or_regions:
        members = list(lab) if isinstance(lab, (list, tuple)) else [lab]
        p, r = np.isin(pred, members), np.isin(ref, members)
        if valid is not None:
            p, r = p & valid, r & valid
        surface_dice, hd95 = surface_metrics(p, r, spacing, tolerance)
        out[str(lab)] = {"dice": dice(p, r), "nsd": surface_dice, "hd95": hd95,
                         "betti0_error": betti0_error(p, r), **lesion_detection(p, r)}
        if cldice_classes is None or str(lab) in cldice_classes:
            out[str(lab)]["cldice"] = cldice(*_crop_to_union(p, r))
    return out


def summarise(per_case: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean over cases per class (NaN-aware, like nnU-Net), plus the foreground mean over classes."""
    classes = sorted({c for m in per_case.values() for c in m})
    names = list(dict.fromkeys(k for m in per_case.values() for v in m.values() for k in v))
    result: dict[str, dict[str, float]] = {}
    for c in classes:
        result[c] = {}
        for metric in names:
            values = [m[c][metric] for m in per_case.values() if c in m and metric in m[c]
                      and not np.isnan(m[c][metric])]
            result[c][metric] = float(np.mean(values)) if values else float("nan")
    result["mean"] = {metric: _nanmean([result[c].get(metric, float("nan")) for c in classes]) for metric in names}
    return result


def _nanmean(values: list[float]) -> float:
    arr = np.array([v for v in values if not np.isnan(v)])
    return float(arr.mean()) if arr.size else float("nan")
