"""The metric is part of the answer: which validation metric judges a loss, per class regime.

Evidence 2022-2026 (DESIGN.md, issue 10): no loss beats Dice+CE on Dice consistently inside nnU-Net; the losses
made for thin structures and for many small lesions gain on topology and detection metrics. So each class is
judged by Dice plus the metric of its regime (the fingerprint's per-class ``regime``), and Dice is always
reported beside it:

    tubular          Dice and clDice         connectivity of thin structures is what Dice cannot see
    sheet            Dice and NSD            a rim or shell a few voxels thick: a one-voxel boundary shift is a
                                             large share of it, so its boundary is judged beside its overlap
    many-instances   Dice and lesion F1      a missed small lesion costs little Dice but is a missed finding
    small-objects    Dice and lesion F1      the same: detection of each small object
    large-structure  Dice                    overlap is the right measure; boundary losses judged by it too

A class with the ``fragmented`` flag (a body plus specks) keeps its regime's metric; fingerprints from before
the flag may name ``fragmented`` as the regime, judged by Dice (component counts would reward deleting specks).
Every trial also stores HD95 per class, the boundary figure BraTS ranks by beside Dice.

``--metric auto`` resolves to a *class-wise objective*, a plain string that travels with the study like
``dice``: ``classwise:1=dice+cldice,2=dice`` (class key = the label, as in the metrics tables). A case's value is
the mean over its present classes of the mean of each class's metrics.
"""
from __future__ import annotations

from typing import Any

import numpy as np

PREFIX = "classwise:"
REGIME_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "tubular": (("dice", "cldice"), "thin connected structures: clDice scores the centre-line connectivity "
                                    "that Dice barely sees (Shit et al. 2021)"),
    "many-instances": (("dice", "lesion_f1"), "many separate objects: lesion-wise F1 counts every missed or "
                                              "spurious object, which Dice weighs by volume"),
    "small-objects": (("dice", "lesion_f1"), "small objects: detecting each one matters more than a few "
                                             "voxels of overlap"),
    "large-structure": (("dice",), "a large structure: volume overlap is the right measure"),
    "sheet": (("dice", "nsd"), "a thin sheet, shell or rim: a one-voxel boundary shift is a large share of its "
                               "width; NSD judges the boundary beside Dice (HD95 is reported too), not clDice: its "
                               "medial structure is a surface, not a centre line"),
    "fragmented": (("dice",), "one body plus fragments: Dice; component counts would reward deleting specks"),
}
METRIC_NAMES = {"dice": "Dice", "cldice": "clDice", "lesion_f1": "lesion F1", "nsd": "NSD"}


def class_regime(entry: dict[str, Any]) -> str | None:
    """The fingerprint's regime of one class (``regime`` as a string or ``{"name": ...}``), or None."""
    regime = entry.get("regime")
    if isinstance(regime, dict):
        regime = regime.get("name") or regime.get("regime")
    # "many_instances" and "Many-Instances" mean "many-instances"
    return regime.strip().lower().replace("_", "-") if isinstance(regime, str) else None


def metric_plan(fingerprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per class label: its name, regime, the metrics that judge it and why."""
    plan = {}
    for label, entry in fingerprint.get("classes", {}).items():
        regime = class_regime(entry)
        metrics, why = REGIME_METRICS.get(regime, (("dice",), "no regime in the fingerprint: Dice"
                                                   if regime is None else f"regime {regime!r}: Dice"))
        plan[str(label)] = {"name": entry.get("name") or f"label_{label}", "regime": regime,
                            "metrics": list(metrics), "why": why}
    return plan


def auto_objective(fingerprint: dict[str, Any]) -> str:
    """``--metric auto`` for a fingerprint: plain ``dice`` when every class is judged by Dice alone."""
    plan = metric_plan(fingerprint)
    if all(p["metrics"] == ["dice"] for p in plan.values()):
        return "dice"
    return PREFIX + ",".join(f"{label}={'+'.join(p['metrics'])}" for label, p in plan.items())


def parse(objective: str) -> dict[str, tuple[str, ...]]:
    """``classwise:1=dice+cldice,2=dice`` -> {"1": ("dice", "cldice"), "2": ("dice",)}."""
    body = objective[len(PREFIX):]
    return {k: tuple(v.split("+")) for k, v in (item.split("=", 1) for item in body.split(",") if item)}


def is_classwise(objective: str) -> bool:
    return objective.startswith(PREFIX)


def classwise_value(per_class: dict[str, dict[str, float]], objective: str) -> float:
    """Mean over classes (NaN ones left out) of the mean of each class's metrics (Dice for unlisted classes)."""
    wanted = parse(objective)
    values = []
    for cls, vals in per_class.items():
        if cls == "mean":
            continue
        parts = [vals.get(m, float("nan")) for m in wanted.get(cls, ("dice",))]
        parts = [p for p in parts if p == p]
        if parts:
            values.append(float(np.mean(parts)))
    return float(np.mean(values)) if values else float("nan")


def describe(objective: str) -> str:
    """Human form: ``class 1: Dice + clDice; class 2: Dice``."""
    if not is_classwise(objective):
        return objective
    return "; ".join(f"class {c}: " + " + ".join(METRIC_NAMES.get(m, m) for m in ms)
                     for c, ms in parse(objective).items())
