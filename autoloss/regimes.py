"""A regime per class: one word for what a loss sees, with the figures that decided it.

Regimes, tested in this order (the first that holds wins; thresholds and their reasons in
``fingerprints/regimes.yaml``):

    tubular          thin (thickness <= thin_voxels) and elongated (skeleton length / thickness >= elongated)
    many-instances   at least many_instances objects comparable to a typical one (autoloss.objects) per case,
                     or that many objects of any size with no main body (lesions of mixed sizes)
    small-objects    the component a typical voxel belongs to is under small_object_fraction of the image
    fragmented       a main body plus at least fragments_per_case minor components per case
    large-structure  everything else

``absent_often`` is a flag beside the regime (missing from at least ``absent_often`` of the cases). A class never
present has regime ``absent``. Figures are the medians over the cases where the class is present; a figure
missing from a (reduced, hand-made) fingerprint makes its regime's test fail rather than guess.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from autoloss.resources import data_file, load_versioned_yaml

REGIMES_FILE = data_file("fingerprints", "regimes.yaml")
REGIMES = ("tubular", "many-instances", "small-objects", "fragmented", "large-structure", "absent")


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


def classify(c: dict[str, Any], dataset: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """``{"regime", "evidence", "absent_often"}`` for one class entry of a fingerprint."""
    t = load_thresholds(path)
    absent = float(c.get("absent_fraction") or 0.0)
    flag = absent >= t["absent_often"]
    if absent >= 1.0:
        return {"regime": "absent", "evidence": "never present", "absent_often": True}
    image = math.prod(dataset.get("shape_median") or [1])
    weighted = _median(c, "object_size_weighted_voxels")
    thick = _median(c, "thickness_voxels")
    elong = _median(c, "elongation")
    instances = _median(c, "instances_per_case")
    fragments = _median(c, "fragments_per_case")
    objects = _median(c, "objects_per_case")
    share = _median(c, "largest_object_share")

    if thick is not None and elong is not None and thick <= t["thin_voxels"] and elong >= t["elongated"]:
        regime, why = "tubular", (f"thickness {thick:.3g} vox <= {t['thin_voxels']:g}, elongation {elong:.3g} >= "
                                  f"{t['elongated']:g}")
    elif instances is not None and instances >= t["many_instances"]:
        regime, why = "many-instances", f"{instances:.3g} objects/case >= {t['many_instances']:g}"
    elif (objects is not None and share is not None and objects >= t["many_instances"]
          and share < t["main_body_share"]):
        regime, why = ("many-instances", f"{objects:.3g} objects/case of mixed sizes >= {t['many_instances']:g}, "
                       f"none holding {100 * t['main_body_share']:.0f} % of the class")
    elif weighted is not None and weighted / image < t["small_object_fraction"]:
        regime, why = ("small-objects", f"typical object {weighted:.3g} vox = {100 * weighted / image:.2g} % of the "
                       f"image < {100 * t['small_object_fraction']:g} %")
    elif (fragments is not None and share is not None
          and fragments >= t["fragments_per_case"] and share >= t["main_body_share"]):
        regime, why = ("fragmented", f"{fragments:.3g} fragments/case >= {t['fragments_per_case']:g} beside a main "
                       f"body of {100 * share:.0f} %")
    else:
        regime = "large-structure"
        why = (f"typical object {weighted:.3g} vox = {100 * weighted / image:.2g} % of the image" if weighted
               else "no small, thin or many-object evidence")
    if flag:
        why += f"; absent in {100 * absent:.0f} % of cases"
    return {"regime": regime, "evidence": why, "absent_often": flag}
