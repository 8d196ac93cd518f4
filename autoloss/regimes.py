"""A regime per class: one word for what a loss sees, with the figures that decided it.

Regimes, tested in this order (the first that holds wins; thresholds and their reasons in
``fingerprints/regimes.yaml``):

    tubular          thin (thickness <= thin_voxels), elongated (skeleton length / thickness >= elongated) and,
                     in 3D, a curve (medial dimension < surface_dimension): vessels, nerves, airways
    sheet            3D only: thin, a surface (medial dimension >= surface_dimension) and wide for its thickness
                     (sheet_extent >= sheet_extent): shells, rims, membranes, plates (a tumour's enhancing rim)
    many-instances   at least many_instances objects comparable to a typical one (autoloss.objects) per case,
                     or that many objects of any size with no main body (lesions of mixed sizes)
    small-objects    the component a typical voxel belongs to is under small_object_fraction of the image
    large-structure  everything else

Two flags stand beside the regime: ``absent_often`` (missing from at least ``absent_often`` of the cases) and
``fragmented`` (a main body holding at least main_body_share of the class plus at least fragments_per_case minor
components per case: specks beside a rim do not stop it being a rim). A class never present has regime
``absent``. Figures are the medians over the cases where the class is present; a figure missing from a
(reduced, hand-made or older) fingerprint makes its regime's test fail rather than guess: a fingerprint without
the medial dimension reads its tubes as before and has no sheets.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from autoloss.resources import data_file, load_versioned_yaml

REGIMES_FILE = data_file("fingerprints", "regimes.yaml")
REGIMES = ("tubular", "sheet", "many-instances", "small-objects", "large-structure", "absent")


@lru_cache(maxsize=2)
def load_thresholds(path: str | None = None) -> dict[str, float]:
    data = load_versioned_yaml(Path(path) if path else REGIMES_FILE, "the regime thresholds")
    return {k: float(v) for k, v in data.items() if k != "version"}


def _median(c: dict[str, Any], key: str) -> float | None:
    entry = c.get(key)
    if isinstance(entry, (int, float)):
        return float(entry)
    if not isinstance(entry, dict):
        return None
    value = entry.get("median", entry.get("mean"))
    return None if value is None else float(value)


def _regime(c: dict[str, Any], image: float, t: dict[str, float]) -> tuple[str, str]:
    weighted = _median(c, "object_size_weighted_voxels")
    thick = _median(c, "thickness_voxels")
    elong = _median(c, "elongation")
    dim = _median(c, "medial_dimension")
    extent = _median(c, "sheet_extent")
    instances = _median(c, "instances_per_case")
    objects = _median(c, "objects_per_case")
    share = _median(c, "largest_object_share")
    thin = thick is not None and thick <= t["thin_voxels"]
    curve = dim is None or dim < t["surface_dimension"]  # 2D and older fingerprints: no dimension, as before

    if thin and curve and elong is not None and elong >= t["elongated"]:
        return "tubular", (f"thickness {thick:.3g} vox <= {t['thin_voxels']:g}, elongation {elong:.3g} >= "
                           f"{t['elongated']:g}" + (f", a curve (dimension {dim:.2g})" if dim is not None else ""))
    if thin and not curve and extent is not None and extent >= t["sheet_extent"]:
        return "sheet", (f"thickness {thick:.3g} vox <= {t['thin_voxels']:g}, a surface (dimension {dim:.2g} >= "
                         f"{t['surface_dimension']:g}) {extent:.3g} thicknesses wide")
    if instances is not None and instances >= t["many_instances"]:
        return "many-instances", f"{instances:.3g} objects/case >= {t['many_instances']:g}"
    if objects is not None and share is not None and objects >= t["many_instances"] and share < t["main_body_share"]:
        return "many-instances", (f"{objects:.3g} objects/case of mixed sizes >= {t['many_instances']:g}, none "
                                  f"holding {100 * t['main_body_share']:.0f} % of the class")
    if weighted is not None and weighted / image < t["small_object_fraction"]:
        return "small-objects", (f"typical object {weighted:.3g} vox = {100 * weighted / image:.2g} % of the image "
                                 f"< {100 * t['small_object_fraction']:g} %")
    return "large-structure", (f"typical object {weighted:.3g} vox = {100 * weighted / image:.2g} % of the image"
                               if weighted else "no small, thin or many-object evidence")


def classify(c: dict[str, Any], dataset: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """``{"regime", "evidence", "absent_often", "fragmented"}`` for one class entry of a fingerprint."""
    t = load_thresholds(path)
    absent = float(c.get("absent_fraction") or 0.0)
    if absent >= 1.0:
        return {"regime": "absent", "evidence": "never present", "absent_often": True, "fragmented": False}
    regime, why = _regime(c, math.prod(dataset.get("shape_median") or [1]), t)
    fragments = _median(c, "fragments_per_case")
    share = _median(c, "largest_object_share")
    fragmented = (fragments is not None and share is not None and fragments >= t["fragments_per_case"]
                  and share >= t["main_body_share"])
    if fragmented:
        why += (f"; fragmented: {fragments:.3g} fragments/case >= {t['fragments_per_case']:g} beside a main body of "
                f"{100 * share:.0f} %")
    flag = absent >= t["absent_often"]
    if flag:
        why += f"; absent in {100 * absent:.0f} % of cases"
    return {"regime": regime, "evidence": why, "absent_often": flag, "fragmented": fragmented}
