"""The prior: a dataset fingerprint -> a ranked, explained shortlist of LossSpecs.

Rules and thresholds are data (``fingerprints/prior_rules.yaml``), each with the survey finding behind it; this
module only evaluates them. A loss's score is

    base_score_weight * (survey robustness: mean DSC rank over the Loss Odyssey tasks, mapped to [0, 1])
    + baseline_bonus (Dice+CE only)
    + the boosts of every rule that fired.

Class-scope rules fire when ANY class meets them (a small class is not averaged away by a large one), and name
the classes that did. Dice+CE is always in the list, so "keep the default" is always on the table.
"""
from __future__ import annotations

import csv
import math
import operator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from autoloss.errors import AutolossError
from autoloss.resources import data_dir, load_versioned_yaml
from autoloss.spec import LossSpec, Schedule

DATA_DIR = data_dir("fingerprints")  # the checkout's folder, else the wheel's packaged copy
RULES_FILE = DATA_DIR / "prior_rules.yaml"
# The study's table names distance-penalised CE "pCE"; the registry calls it DPCE.
TABLE_NAMES = {"pCE": "DPCE"}
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
       "!=": operator.ne}
BOUNDARY_TERMS = {"DiceHD": "hd", "DiceBD": "bd"}


@dataclass
class Recommendation:
    """One ranked entry: the LossSpec to try, its score and why it is here."""

    spec: LossSpec
    score: float
    reasons: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "survey robustness only"

    def to_dict(self) -> dict[str, Any]:
        d = self.spec.to_dict()
        d.update(score=round(self.score, 4), reason=self.reason, evidence=self.evidence)
        return d


@lru_cache(maxsize=4)
def load_rules(path: str | None = None) -> dict[str, Any]:
    rules = load_versioned_yaml(Path(path) if path else RULES_FILE, "the prior's rules")
    return rules


@lru_cache(maxsize=4)
def survey_scores(table: str | None = None) -> dict[str, float]:
    """Mean DSC rank of each loss over the Loss Odyssey tasks, mapped to [0, 1] (1 = first on every task)."""
    path = Path(table) if table else DATA_DIR / "loss_odyssey_results.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [c for c in rows[0] if c.endswith("_dsc")]
    ranks: dict[str, list[int]] = {TABLE_NAMES.get(r["loss"], r["loss"]): [] for r in rows}
    for task in tasks:
        ordered = sorted(rows, key=lambda r: -float(r[task]))
        for rank, row in enumerate(ordered):
            ranks[TABLE_NAMES.get(row["loss"], row["loss"])].append(rank)
    worst = len(rows) - 1
    return {name: 1.0 - (sum(r) / len(r)) / worst for name, r in ranks.items()}


def _stat(entry: dict[str, Any] | None, key: str = "median") -> float | None:
    if not entry:
        return None
    value = entry.get(key)
    if value is None and key == "median":
        value = entry.get("mean")
    return None if value is None else float(value)


def class_features(fingerprint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-class features the rules test (see the header of prior_rules.yaml). The regime is the
    fingerprint's own, or decided by autoloss.regimes from the figures given (hand-made fingerprints)."""
    from autoloss.regimes import classify

    ds = fingerprint["dataset"]
    image_voxels = math.prod(ds.get("shape_median") or [1])
    features = {}
    for label, c in fingerprint["classes"].items():
        absent = float(c.get("absent_fraction") or 0.0)
        if absent >= 1.0:
            continue  # never present: nothing to learn, nothing to recommend for
        mean_fraction = _stat(c.get("voxel_fraction"), "mean") or 0.0
        # The object a typical voxel belongs to (sum s^2 / sum s), not the median component: specks beside a
        # body would make the median a speck.
        object_size = _stat(c.get("object_size_weighted_voxels")) or 0.0
        features[c.get("name") or f"label_{label}"] = {
            "fraction": mean_fraction / max(1.0 - absent, 1e-9),
            "object_fraction": object_size / max(image_voxels, 1),
            "objects": _stat(c.get("instances_per_case")) or 0.0,
            "absent": absent,
            "boundary": _stat(c.get("boundary_to_volume")) or 0.0,
            "regime": c.get("regime") or classify(c, ds)["regime"],
        }
    return features


def dataset_features(classes: dict[str, dict[str, Any]], fingerprint: dict[str, Any]) -> dict[str, float]:
    fractions = [f["fraction"] for f in classes.values() if f["fraction"] > 0]
    return {
        "num_classes": float(len(classes)),
        "fraction_spread": max(fractions) / min(fractions) if fractions else 1.0,
        "min_fraction": min(fractions) if fractions else 0.0,
        "max_fraction": max(fractions) if fractions else 0.0,
        "total_fraction": sum(fractions),
        "dim": float(fingerprint["dataset"].get("dim", 3)),
    }


def _holds(conditions: list[list[Any]], features: dict[str, Any]) -> bool:
    for feature, op, value in conditions:
        if feature not in features:
            raise AutolossError(f"prior rule tests unknown feature {feature!r}; known: {', '.join(features)}")
        if not OPS[op](features[feature], value if isinstance(value, str) else float(value)):
            return False
    return True


def topk_k(total_fraction: float, rules: dict[str, Any]) -> float:
    cfg = rules["topk_k"]
    return float(min(cfg["max"], max(cfg["min"], round(cfg["scale"] * 100.0 * total_fraction))))


def _spec_for(name: str, ds: dict[str, float], rules: dict[str, Any]) -> LossSpec:
    params: dict[str, Any] = {}
    schedule = None
    if name == "DiceTopK":
        params["topk.k"] = topk_k(ds["total_fraction"], rules)
    if name in BOUNDARY_TERMS:
        sched = rules["boundary_schedule"]
        schedule = Schedule.ramp_in(BOUNDARY_TERMS[name], sched["start"], sched["full"])
    return LossSpec(name, params, schedule)


def recommend_from_fingerprint(fingerprint: dict[str, Any], top: int | None = None,
                               rules_path: str | None = None, adjust: Callable | None = None) -> list[Recommendation]:
    """Rank the candidate losses for a fingerprint. Dice+CE is always included (appended if cut by ``top``).

    ``adjust(recs, fingerprint, memory_settings)`` may move the rules' scores in place before ranking: the memory
    (``autoloss.knowledge.ranking.recommend_with_memory``) passes itself here, so the prior stays the rules alone
    and never reads the knowledge store on its own."""
    rules = load_rules(rules_path)
    classes = class_features(fingerprint)
    ds = dataset_features(classes, fingerprint)
    survey = survey_scores()
    recs = {}
    for name in rules["candidates"]:
        rec = Recommendation(_spec_for(name, ds, rules), rules["base_score_weight"] * survey.get(name, 0.0))
        if name == rules["baseline"]:
            rec.score += rules["baseline_bonus"]
            rec.reasons.append("nnU-Net's default, the baseline every alternative must beat")
        recs[name] = rec

    for rule in rules["rules"]:
        if rule["scope"] == "class":
            matched = [c for c, f in classes.items() if _holds(rule["when"], f | ds)]
            if not matched:
                continue
            why = rule["why"].format(classes=", ".join(matched), **ds)
        else:
            if not _holds(rule["when"], ds):
                continue
            why = rule["why"].format(**ds)
        for name, boost in rule["boost"].items():
            if name in recs:
                recs[name].score += boost
                recs[name].reasons.append(f"{why} [{rule['id']}]")
                recs[name].evidence.append(rule["evidence"])

    if adjust is not None:
        adjust(recs, fingerprint, rules.get("memory"))
    ranked = sorted(recs.values(), key=lambda r: (-r.score, r.spec.name))
    if top is not None:
        head = ranked[:top]
        if all(r.spec.name != rules["baseline"] for r in head):
            head.append(recs[rules["baseline"]])
        ranked = head
    return ranked


REGION_EVIDENCE = (
    "nnU-Net's region-based training (documentation/region_based_training.md): one sigmoid output per region, "
    "Dice + BCE; its BraTS entries were trained so, and the 2020 one won BraTS (Isensee et al., BrainLes 2020, "
    "arXiv 2011.00848: Dice 88.95 / 85.06 / 82.03 on whole tumour / core / enhancing rim); nnU-Net's docs report "
    "regions scoring better than labels on BraTS since its 2018 entry (arXiv 1809.10483). Those gains were "
    "measured on the regions BraTS ranks by: if you judge per label, compare both.")


def region_training(fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """For a fingerprint whose labels nest (``dataset.nested_labels``, autoloss.nesting): nnU-Net's region-based
    training as a suggestion (the regions, ``regions_class_order``, the evidence) and which registered losses
    train region-based datasets. None when nothing nests or the dataset is region-based already. The user's
    dataset.json is never changed."""
    nested = (fingerprint.get("dataset") or {}).get("nested_labels")
    if not nested or (fingerprint.get("dataset") or {}).get("has_regions"):
        return None
    from autoloss.losses.registry import REGISTRY  # imports torch: only when there is something to say

    return {"chains": nested["chains"], "labels": nested["labels"],
            "regions_class_order": nested["regions_class_order"], "evidence": REGION_EVIDENCE,
            "losses_with_regions": [n for n, d in REGISTRY.items() if d.supports_regions_and_ignore],
            "losses_without_regions": [n for n, d in REGISTRY.items() if not d.supports_regions_and_ignore]}
