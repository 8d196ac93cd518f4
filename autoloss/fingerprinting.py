"""Dataset fingerprint: per-class label statistics (fractions, objects, sizes, absence, boundary, extent), the
fragment-proof object figures and thickness of autoloss.objects, and a regime per class (autoloss.regimes).

Per case, only the label is decoded; image channels are checked from their headers (shape, spacing). One
multi-label ``cc3d.connected_components`` pass (26-connectivity in 3D, 8 in 2D) plus ``cc3d.statistics`` gives
every object's size and bounding box, and each object's class; a face-neighbour comparison gives the boundary
voxels of all classes at once (a class voxel is on the boundary when a 6-/4-neighbour holds another value or it
lies on the image border, i.e. what ``binary_erosion`` with ``border_value=0`` removes). Cases run in a process
pool with a bounded window of chunks in flight, so memory stays at a few labels per worker.

Region-based datasets (labels mapping to lists) are measured per REGION, as nnU-Net trains them (one sigmoid output
per region, the union of its values): classes keyed "1".."n" in dataset.json order, named by their key, ``label``
the list of values; each region gets its own connected-components pass. The ignore label is not a class, and
fractions are over annotated (non-ignore) voxels. Thickness (and, in 3D, whether a class is a curve or a surface) is
measured on at most THICKNESS_CASES cases, evenly spread (``thickness_cases_measured``). The same boundary pass
counts which label touches which (face contacts), from which ``dataset.nested_labels`` names label layers each
enclosed by the next (autoloss.nesting; None for region-based datasets, which train regions already). 2D natural
images (PNG, ...) have no physical spacing: spacing (1, 1), physical sizes in pixels ("mm^2" by convention).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.casepool import map_cases
from autoloss.dataset import (Case, Dataset, all_background_error, check_case_geometry, check_label_values,
                              read_label)
from autoloss.errors import AutolossError, check_writable
from autoloss.nesting import Contacts, count_contacts, nested_labels
from autoloss.objects import (INSTANCE_SHARE, coarse_stride, component_stats, elongation, sheet_extent,
                              thickness_stats)
from autoloss.regimes import classify, load_thresholds


FINGERPRINT_VERSION = 2
_STAT_KEYS = ("mean", "median", "min", "max", "p05", "p95")
THICKNESS_CASES = 100


def _boundary_mask(arr: np.ndarray, contacts: Contacts | None = None) -> np.ndarray:
    """Voxels whose face neighbour differs, plus the image border (outside counts as another value). With
    ``contacts``, the face pairs of differing values are counted into it (autoloss.nesting)."""
    b = np.zeros(arr.shape, bool)
    for ax in range(arr.ndim):
        lo = [slice(None)] * arr.ndim
        hi = [slice(None)] * arr.ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        diff = arr[tuple(hi)] != arr[tuple(lo)]
        b[tuple(hi)] |= diff
        b[tuple(lo)] |= diff
        if contacts is not None:
            count_contacts(arr[tuple(lo)][diff], arr[tuple(hi)][diff], contacts)
        lo[ax], hi[ax] = 0, -1
        b[tuple(lo)] = True
        b[tuple(hi)] = True
    return b


def _bincount(flat: np.ndarray, length: int, chunk: int = 1 << 24) -> np.ndarray:
    """np.bincount in slices: it casts to int64, which for a 512^3 volume would be a 1 GB temporary."""
    out = np.zeros(length, np.int64)
    for i in range(0, flat.size, chunk):
        out += np.bincount(flat[i:i + chunk], minlength=length)
    return out


def class_definitions(ds: Dataset) -> list[dict[str, Any]]:
    """The classes a network learns: one per label value, or with region labels (lists) one per region (a
    sigmoid output over the union of its values), keyed "1", "2", ... in dataset.json order and named by it."""
    if not ds.has_regions:
        return [{"key": str(v), "name": _class_name(ds.labels, v), "label": int(v), "members": (int(v),)}
                for v in ds.foreground_values]
    out = []
    for name, v in ds.labels.items():
        members = tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
        if name in ("background", "ignore") or members == (0,):
            continue
        out.append({"key": str(len(out) + 1), "name": name, "label": list(members), "members": members})
    return out


def _class_measures(sizes: np.ndarray, ids: np.ndarray, labels: np.ndarray, bbox: tuple[slice, ...] | None,
                    boundary: int, spacing, thickness: bool) -> dict[str, Any]:
    """One class in one case from its components (``sizes``, their ``ids`` in the component image ``labels``).
    Thickness is measured on the instances only (components comparable to a typical one): specks beside a body
    are one voxel thick and would make any blob look thin."""
    stats = component_stats(sizes)
    entry = {"count": int(sizes.sum()), "objects": sizes, "boundary": boundary,
             "bbox": math.prod(b.stop - b.start for b in bbox) if bbox else 0, **stats}
    if thickness and sizes.size:
        keep = ids[sizes >= INSTANCE_SHARE * stats["weighted"]]
        stride = coarse_stride(boundary / entry["count"], labels.ndim)
        entry.update(thickness_stats(np.isin(labels[bbox], keep), spacing, stride))
    return entry


def _bbox(coords) -> tuple[slice, ...]:
    return tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)


def measure_case(case: Case, ds: Dataset, thickness: bool = True) -> dict[str, Any]:
    """Per-class raw measurements of one case (validated: integer, declared values, matching geometry).
    ``thickness`` adds the skeleton figures (autoloss.objects), the only costly part."""
    import cc3d

    arr, spacing = read_label(case, ds, check_values=False)
    check_case_geometry(case, ds, arr.shape, spacing)
    conn = 26 if arr.ndim == 3 else 8
    cc, n = cc3d.connected_components(arr, connectivity=conn, return_N=True)
    sizes = _bincount(cc.ravel(), n + 1)
    # Every component, and every value present, has boundary voxels (its extreme voxels touch another value or
    # the border), so the few boundary voxels carry all we need: each component's class, the values present,
    # each class's boundary count and bounding box. No pass over the whole array beyond these.
    contacts = None if ds.has_regions else Contacts()  # which label touches which: nested layers
    where = np.flatnonzero(_boundary_mask(arr, contacts))  # flat indices: a third of np.nonzero's memory in 3D
    values = arr.ravel()[where]
    comp_class = np.zeros(n + 1, arr.dtype)
    comp_class[cc.ravel()[where]] = values
    boundary = np.bincount(values, minlength=int(values.max(initial=0)) + 1)
    check_label_values(np.flatnonzero(boundary), ds, case.label)
    # Statistics are over annotated voxels: the ignore label's voxels are neither class nor background.
    ignored = int(sizes[1:][comp_class[1:] == ds.ignore_label].sum()) if ds.ignore_label is not None else 0
    classes = {}
    for c in class_definitions(ds):
        if not ds.has_regions:
            v = c["members"][0]
            ids = np.flatnonzero(comp_class[1:] == v) + 1
            box = _bbox(np.unravel_index(where[values == v], arr.shape)) if ids.size else None
            classes[c["key"]] = _class_measures(sizes[ids], ids, cc, box, int(boundary[v]) if v < len(boundary)
                                                else 0, spacing, thickness)
            continue
        mask = np.isin(arr, c["members"])  # a region is the union of its values
        rcc, rn = cc3d.connected_components(mask, connectivity=conn, return_N=True)
        obj = _bincount(rcc.ravel(), rn + 1)[1:]
        rb = np.flatnonzero(_boundary_mask(mask) & mask)
        box = _bbox(np.unravel_index(rb, arr.shape)) if rb.size else None
        classes[c["key"]] = _class_measures(obj, np.arange(1, rn + 1), rcc, box, int(rb.size), spacing, thickness)
        del rcc, mask
    foreground = int(sizes[1:].sum()) - ignored  # cc3d leaves 0 (background) unlabelled
    return {"id": case.identifier, "shape": arr.shape, "spacing": spacing, "voxels": int(arr.size) - ignored,
            "all_voxels": int(arr.size), "foreground": foreground, "classes": classes, "contacts": contacts}


# ---------------------------------------------------------------- parallel driver

def thickness_sample(n: int) -> set[int]:
    """Indices of the cases whose thickness is measured: all up to THICKNESS_CASES, else that many evenly spread
    (thickness is a shape property of the class; a hundred cases pin its median down)."""
    if n <= THICKNESS_CASES:
        return set(range(n))
    return {int(i) for i in np.linspace(0, n - 1, THICKNESS_CASES).round()}


def _measure_item(item: tuple[Case, bool], ds: Dataset) -> dict[str, Any]:
    case, thickness = item
    return measure_case(case, ds, thickness)


# ---------------------------------------------------------------- aggregation

def _stats(values) -> dict[str, float | None]:
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return dict.fromkeys(_STAT_KEYS)
    p05, med, p95 = np.percentile(v, [5, 50, 95])
    return {"mean": float(v.mean()), "median": float(med), "min": float(v.min()), "max": float(v.max()),
            "p05": float(p05), "p95": float(p95)}


def _num(x) -> float | None:
    return None if x is None else float(x)


def _class_name(labels: dict, value: int) -> str:
    for name, v in labels.items():
        if name == "ignore":
            continue
        if v == value or (isinstance(v, (list, tuple)) and len(v) == 1 and v[0] == value):
            return name
    return f"label_{value}"


def _aggregate(ds: Dataset, cases: list[dict[str, Any]]) -> tuple[dict, dict]:
    dims = {len(c["shape"]) for c in cases}
    if len(dims) > 1:
        first = {len(c["shape"]): c["id"] for c in cases}
        raise AutolossError(f"{ds.root}: cases mix 2D and 3D labels (e.g. {first[2]} is 2D, {first[3]} is 3D); "
                            "all cases of a dataset must have the same dimensionality")
    dim = dims.pop()
    defs = class_definitions(ds)
    spacings = np.array([c["spacing"] for c in cases], np.float64)
    shapes = np.array([c["shape"] for c in cases], np.int64)
    med_spacing = np.median(spacings, 0)
    voxel_volume = np.prod(spacings, 1)
    voxels = np.array([c["voxels"] for c in cases], np.float64)
    fg_total = np.array([c["foreground"] for c in cases], np.float64)
    has_fg = fg_total > 0
    info = {
        "name": ds.name, "id": ds.id, "path": str(ds.root), "num_cases": ds.num_training,
        "num_cases_measured": len(cases), "num_classes": len(defs), "dim": dim,
        "channels": dict(ds.channel_names), "modality": [ds.channel_names[k] for k in sorted(ds.channel_names, key=int)],
        "file_ending": ds.file_ending,
        "spacing_median": [float(s) for s in med_spacing], "spacing_min": [float(s) for s in spacings.min(0)],
        "spacing_max": [float(s) for s in spacings.max(0)],
        "anisotropy": float(med_spacing.max() / med_spacing.min()) if med_spacing.min() > 0 else None,
        "shape_median": [int(round(s)) for s in np.median(shapes, 0)],
        "shape_min": [int(s) for s in shapes.min(0)], "shape_max": [int(s) for s in shapes.max(0)],
        "has_regions": ds.has_regions, "ignore_label": ds.ignore_label,
        "voxel_volume_unit": "mm^2" if dim == 2 else "mm^3",
        "thickness_cases_measured": len(thickness_sample(len(cases))),
        "nested_labels": None if ds.has_regions else nested_labels(
            sum((c["contacts"] for c in cases), Contacts()), ds.labels, ds.ignore_label, load_thresholds()),
    }
    classes = {}
    for d in defs:
        per = [c["classes"][d["key"]] for c in cases]
        counts = np.array([p["count"] for p in per], np.float64)
        present = counts > 0
        objects = [p["objects"] for p in per]
        sizes = np.concatenate(objects) if objects else np.zeros(0)
        physical = np.concatenate([o * vv for o, vv in zip(objects, voxel_volume)]) if objects else np.zeros(0)
        boundary = np.array([p["boundary"] for p in per], np.float64)
        bbox = np.array([p["bbox"] for p in per], np.float64)
        all_voxels = np.array([c["all_voxels"] for c in cases], np.float64)
        here = [(p, vv) for p, vv in zip(per, voxel_volume) if p["count"]]
        thick = [(p, vv) for p, vv in here if p.get("thickness") is not None]
        thick3d = [(p, vv) for p, vv in thick if p["medial_dimension"] is not None]
        major_sizes = np.concatenate([np.asarray(p["major_sizes"], np.float64) for p, _ in here] or [np.zeros(0)])
        p10, p50, p90 = np.percentile(major_sizes, [10, 50, 90]) if major_sizes.size else (None,) * 3
        entry = {
            "name": d["name"], "label": d["label"],
            "voxel_fraction": _stats(counts / voxels),
            "foreground_share": _stats(counts[has_fg] / fg_total[has_fg]),
            "objects_per_case": _stats([len(o) for o in objects]),
            "object_size_voxels": _stats(sizes),
            "object_size_physical": _stats(physical),
            "absent_fraction": float(1.0 - present.mean()),
            "boundary_to_volume": _stats(boundary[present] / counts[present]),
            "bbox_extent": _stats(bbox[present] / all_voxels[present]),
            # Fragment-proof figures (autoloss.objects), over the cases where the class is present.
            "object_size_weighted_voxels": _stats([p["weighted"] for p, _ in here]),
            "object_size_weighted_mm": _stats([p["weighted"] * vv for p, vv in here]),
            "largest_object_share": _stats([p["largest_share"] for p, _ in here]),
            "major_objects_per_case": _stats([p["major"] for p, _ in here]),
            "instances_per_case": _stats([p["instances"] for p, _ in here]),
            "fragments_per_case": _stats([p["n_objects"] - p["instances"] for p, _ in here]),
            "major_object_size_voxels": {"p10": _num(p10), "p50": _num(p50), "p90": _num(p90)},
            "thickness_voxels": _stats([p["thickness"] for p, _ in thick]),
            "thickness_mm": _stats([p["thickness_mm"] for p, _ in thick]),
            "skeleton_ratio": _stats([p["skeleton_ratio"] for p, _ in thick]),
            "elongation": _stats([elongation(p["weighted"], p["thickness"], p["skeleton_ratio"]) for p, _ in thick]),
            # 3D only (None in 2D, where a thin structure is a line): curve (1) or surface (2), and how wide a
            # sheet the typical component would be (autoloss.objects)
            "medial_dimension": _stats([p["medial_dimension"] for p, _ in thick3d]),
            "sheet_extent": _stats([sheet_extent(p["weighted"], p["thickness"]) for p, _ in thick3d]),
        }
        verdict = classify(entry, info)
        classes[d["key"]] = {"regime": verdict["regime"], "regime_evidence": verdict["evidence"],
                             "absent_often": verdict["absent_often"], "fragmented": verdict["fragmented"], **entry}
    return info, classes


def compute_fingerprint(dataset: Dataset, num_workers: int | None = None, progress: bool = False) -> dict:
    """Measure every case of ``dataset`` (see the module docstring for what and how)."""
    start = time.perf_counter()
    workers = num_workers or min(4, os.cpu_count() or 1)
    sample = thickness_sample(len(dataset.cases))  # thickness on an even spread of at most THICKNESS_CASES
    items = [(c, i in sample) for i, c in enumerate(dataset.cases)]
    cases = map_cases(dataset, items, _measure_item, workers=workers, what="fingerprint", progress=progress,
                      preload=["autoloss.fingerprinting"])
    if not any(c["foreground"] for c in cases):
        raise all_background_error(dataset.root, [c["id"] for c in cases])
    info, classes = _aggregate(dataset, cases)
    return {"autoloss_fingerprint_version": FINGERPRINT_VERSION, "dataset": info, "classes": classes,
            "timing": {"seconds": round(time.perf_counter() - start, 4), "workers": workers}}


def save_fingerprint(fp: dict, path: str | Path) -> Path:
    path = Path(path)
    check_writable(path.parent, "the fingerprint")
    try:
        path.write_text(json.dumps(fp, indent=2))
    except OSError as exc:
        raise AutolossError(f"{path}: cannot be written ({exc.strerror}); choose another -o") from None
    return path


def load_fingerprint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AutolossError(f"{path}: no such fingerprint file (make one with: autoloss fingerprint DATASET -o "
                            f"{path})")
    try:
        fp = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AutolossError(f"{path}: not a fingerprint JSON ({e}); recompute it with autoloss fingerprint") from None
    if not isinstance(fp, dict) or "autoloss_fingerprint_version" not in fp:
        raise AutolossError(f"{path}: not an autoloss fingerprint (no autoloss_fingerprint_version); recompute it "
                            "with autoloss fingerprint DATASET -o FILE")
    if fp["autoloss_fingerprint_version"] != FINGERPRINT_VERSION:
        raise AutolossError(f"{path}: fingerprint version {fp['autoloss_fingerprint_version']}, this autoloss reads "
                            f"version {FINGERPRINT_VERSION}; recompute it with autoloss fingerprint DATASET -o FILE")
    if not isinstance(fp.get("dataset"), dict) or not isinstance(fp.get("classes"), dict):
        raise AutolossError(f"{path}: fingerprint lacks its dataset/classes sections; recompute it")
    return fp


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{100 * x:.2f} %" if x >= 1e-4 or x == 0 else f"{100 * x:.1e} %"
    return f"{x:.3g}" if abs(x) < 1e5 else f"{x:.3e}"


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    v = 100 * x
    return "0 %" if v == 0 else f"{v:.0f} %" if v >= 10 else f"{v:.2g} %"  # 100 %, 26 %, 2.7 %, 0.0031 %


def fingerprint_table(fp: dict):
    """A rich Table of the fingerprint for the CLI, sized for 80 columns: one row per class, regime first; the
    dataset in the title and caption. Every other figure is in the JSON (--json / -o)."""
    from rich import box
    from rich.table import Table

    d = fp["dataset"]
    title = (f"{d['name']}: {d['dim']}D, {d['num_cases_measured']}/{d['num_cases']} cases, "
             f"{d['num_classes']} class(es), {', '.join(d['modality'])}")
    caption = (f"median shape {d['shape_median']}, spacing {[round(s, 3) for s in d['spacing_median']]}"
               + (", region labels" if d["has_regions"] else "")
               + (f", ignore label {d['ignore_label']}" if d["ignore_label"] is not None else "")
               + "; objects: per case, comparable objects (+ fragments); size: voxels of the object a typical "
               "voxel belongs to; thick: median thickness (voxels; 2D on the skeleton, 3D a local thickness)"
               + (f"; {fp['timing']['seconds']:.2f} s on {fp['timing']['workers']} worker(s)" if "timing" in fp else ""))
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("class", "regime", "fraction", "objects", "size", "thick", "absent"):
        table.add_column(col, justify="left" if col in ("class", "regime") else "right",
                         no_wrap=True, overflow="ellipsis", max_width=16 if col == "class" else None)
    for key, c in sorted(fp["classes"].items(), key=lambda kv: int(kv[0])):
        inst, frag = c["instances_per_case"]["median"], c["fragments_per_case"]["median"]
        objects = "-" if inst is None else f"{inst:.3g}" + (f" (+{frag:.3g})" if frag else "")
        regime = (c["regime"] + ("~" if c.get("fragmented") else "")
                  + ("*" if c["absent_often"] and c["regime"] != "absent" else ""))
        table.add_row(c["name"], regime, _pct(c["voxel_fraction"]["mean"]), objects,
                      _fmt(c["object_size_weighted_voxels"]["median"]), _fmt(c["thickness_voxels"]["median"]),
                      _pct(c["absent_fraction"]))
    if any(c.get("fragmented") for c in fp["classes"].values()):
        table.caption += "; ~ fragmented (a main body plus specks)"
    if any(c["absent_often"] for c in fp["classes"].values()):
        table.caption += "; * absent often"
    for chain in (d.get("nested_labels") or {}).get("chains", []):
        table.caption += f"; nested labels: {' > '.join(chain['names'])} (autoloss recommend suggests regions)"
    return table
