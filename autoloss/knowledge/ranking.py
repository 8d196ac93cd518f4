"""The learned part of the prior: records of datasets that look alike move the rules' scores.

Per loss, a kernel regression (Nadaraya-Watson) over standardised fingerprint features predicts the loss's
paired gain over Dice+CE on a new dataset from the gains confirmed on recorded datasets:

    k_i  = exp(-d_i^2 / (2 h^2))  for records within max_distance, else 0
           d_i: scikit-learn's nan_euclidean distance between standardised feature vectors (features missing on
           either side are left out and the rest rescaled); h: the bandwidth
    gain = sum_i k_i g_i / sum_i k_i                      (g_i: the record's best gain for that loss)
    w    = sum_i k_i / (sum_i k_i + prior_strength)       (0 with no records; grows with their number and closeness)
    score += clip(gain_to_score * w * gain, -max_adjust, max_adjust)

Standardisation: scikit-learn's StandardScaler centres on the records, and each feature is divided by a fixed
reference spread (``FEATURE_SCALE``), not by the records' own: with a handful of records their sample spread is
noise (two records would always be 2 units apart per feature, however alike), and with similar records only, every
other dataset would look infinitely far. With no records, or none near, the scores are
exactly the rules'. The settings are the ``memory`` block of fingerprints/prior_rules.yaml.
Reference: Nadaraya (1964), Watson (1964); the nan-aware distance is sklearn.metrics.pairwise.nan_euclidean_distances.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoloss.knowledge.features import FEATURES, feature_vector
from autoloss.knowledge.schema import network_of, winner
from autoloss.spec import LossSpec

DEFAULTS = {"use_seeds": False, "gain_to_score": 10.0, "bandwidth": 1.5, "max_distance": 4.5,
            "prior_strength": 1.0, "max_adjust": 0.5, "named_records": 3, "min_adjust_named": 0.005}
# One standardised unit per feature: a difference that makes two datasets clearly different for a loss (a factor
# ~5 in a fraction or an object size, ~3 in objects per case, a quarter of the cases absent, 2D vs 3D, ...).
FEATURE_SCALE = {"log_min_fraction": 0.75, "log_max_fraction": 0.75, "log_min_object": 0.75, "log_objects": 0.5,
                 "max_absent": 0.25, "max_boundary": 0.2, "log_num_classes": 1.0, "is_3d": 1.0,
                 "log_anisotropy": 0.5, "log_min_weighted_object": 0.75, "min_largest_share": 0.25,
                 "log_min_thickness": 0.5, "max_skeleton_ratio": 0.1}


@dataclass
class Neighbour:
    record: dict[str, Any]
    distance: float
    kernel: float


def settings(cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    return DEFAULTS | (cfg or {})


def load_memory(cfg: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The records the prior learns from: the user's store, plus the seeds when the rules say so (off by
    default: the rules were written from the same published tables, and counting them twice is no evidence).
    Records whose verdict is `inconclusive` (too few paired cases, e.g. a smoke search) are kept and shared but
    never move the ranking: their gains are noise by the verdict's own measure."""
    from autoloss.knowledge.store import KnowledgeStore

    records = KnowledgeStore().records(seeds=bool(settings(cfg)["use_seeds"]))
    return [r for r in records if r["verdict"].get("decision") != "inconclusive"]


class MemoryModel:
    """Standardised features of the records and the kernel over them."""

    def __init__(self, records: list[dict[str, Any]], cfg: dict[str, Any] | None = None):
        from sklearn.preprocessing import StandardScaler

        self.cfg = settings(cfg)
        self.records = records
        X = np.vstack([feature_vector(r["fingerprint"]) for r in records]) if records else np.zeros((0, len(FEATURES)))
        self.usable = ~np.all(np.isnan(X), axis=0) if len(X) else np.zeros(len(FEATURES), bool)
        self.X = X[:, self.usable]
        self.scaler = None
        if len(self.X):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows in a column are fine
                self.scaler = StandardScaler().fit(self.X)
            self.scaler.scale_ = np.array([FEATURE_SCALE[f] for f, u in zip(FEATURES, self.usable) if u])
            self.scaler.mean_ = np.nan_to_num(self.scaler.mean_)
            self.Z = self.scaler.transform(self.X)

    def neighbours(self, fingerprint: dict[str, Any]) -> list[Neighbour]:
        """Records within max_distance, nearest first."""
        if self.scaler is None:
            return []
        from sklearn.metrics.pairwise import nan_euclidean_distances

        z = self.scaler.transform(feature_vector(fingerprint)[self.usable][None, :])
        d = nan_euclidean_distances(z, self.Z)[0]
        h, cut = self.cfg["bandwidth"], self.cfg["max_distance"]
        out = [Neighbour(r, float(di), math.exp(-0.5 * (di / h) ** 2))
               for r, di in zip(self.records, d) if di == di and di <= cut]
        return sorted(out, key=lambda n: n.distance)

    def predict(self, neighbours: list[Neighbour], loss: str,
                objective: str | None = None) -> tuple[float, float, list[tuple[Neighbour, dict]]]:
        """(predicted gain, weight in [0, 1), the neighbours with their result for ``loss``). Gains are grouped by
        the objective they were measured in: when some neighbours measured ``loss`` in ``objective`` (the one the
        new dataset's search would judge with), only those count; a Dice gain and a Dice+clDice gain are not one
        quantity. With none in that objective, all of them count (each named with its metric)."""
        used = []
        for n in neighbours:
            results = [r for r in n.record["results"] if r["spec"]["name"] == loss and r["gain"] is not None]
            if results:
                used.append((n, max(results, key=lambda r: r["gain"])))
        same = [(n, r) for n, r in used if n.record.get("metric", "dice") == objective]
        used = same or used
        mass = sum(n.kernel for n, _ in used)
        if mass <= 0:
            return 0.0, 0.0, []
        gain = sum(n.kernel * r["gain"] for n, r in used) / mass
        return gain, mass / (mass + self.cfg["prior_strength"]), used


def _pts(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:+.1f}"


def _evidence_text(n: Neighbour, result: dict[str, Any], loss: str) -> str:
    metric = {"dice": "Dice", "nsd": "NSD"}.get(n.record.get("metric", "dice"), n.record.get("metric"))
    ci = result.get("ci")
    interval = f" [{_pts(ci[0])}, {_pts(ci[1])}]" if ci and None not in ci else " (no interval)"
    g = result["gain"]
    change = f"gained {_pts(g)}" if g >= 0 else f"lost {100 * -g:.1f}"
    est = ", estimated features" if n.record.get("estimated_features") else ""
    network = network_of(n.record)  # records judged by different networks are never mixed without saying so
    net = f", {network['label']} network" if network else (", network not recorded" if n.record["kind"] == "search"
                                                            else "")
    return (f"like {n.record['dataset']} (distance {n.distance:.1f}{est}{net}), where {loss} {change} "
            f"{metric}{interval}")


def apply_memory(recs, fingerprint: dict[str, Any], cfg: dict[str, Any] | None = None,
                 records: list[dict[str, Any]] | None = None) -> None:
    """Adjust the prior's Recommendations (a dict name -> Recommendation, or a list) in place with the evidence of
    records near ``fingerprint``; each moved one gets a reason naming the records. ``records`` None: the store."""
    cfg = settings(cfg)
    records = load_memory(cfg) if records is None else records
    if not records:
        return  # no memory: exactly the rules
    model = MemoryModel(records, cfg)
    near = model.neighbours(fingerprint)
    if not near:
        return
    objective = _objective_of(fingerprint)
    for rec in (recs.values() if isinstance(recs, dict) else recs):
        gain, weight, used = model.predict(near, rec.spec.name, objective)
        adjust = max(-cfg["max_adjust"], min(cfg["max_adjust"], cfg["gain_to_score"] * weight * gain))
        if not used:
            continue
        rec.score += adjust
        if abs(adjust) < cfg["min_adjust_named"]:
            continue
        top = sorted(used, key=lambda nr: -nr[0].kernel)[: cfg["named_records"]]
        named = "; ".join(_evidence_text(n, r, rec.spec.name) for n, r in top)
        rec.reasons.append(f"memory: {named} -> predicted {_pts(gain)} points, weight {weight:.2f} "
                           f"({'up' if adjust > 0 else 'down'} {abs(adjust):.2f})")
        rec.evidence.extend(f"knowledge record {n.record['id']} ({n.record.get('source', '')})" for n, _ in top)


def _objective_of(fingerprint: dict[str, Any]) -> str | None:
    """The objective ``--metric auto`` would judge this dataset with (None when its fingerprint cannot say)."""
    from autoloss.objectives import auto_objective

    try:
        return auto_objective(fingerprint)
    except (KeyError, TypeError, ValueError):
        return None


def recommend_with_memory(fingerprint: dict[str, Any], top: int | None = None) -> list:
    """The prior's ranking (``autoloss.prior``) moved by the confirmed results of similar recorded datasets; with no
    records near (or none at all) exactly the rules' ranking."""
    from autoloss.prior import recommend_from_fingerprint

    return recommend_from_fingerprint(fingerprint, top=top, adjust=apply_memory)


def rerank(recs: list) -> list:
    """The prior's order (score, then name) after ``apply_memory``."""
    return sorted(recs, key=lambda r: (-r.score, r.spec.name))


def warm_start_specs(fingerprint: dict[str, Any], k: int = 2, cfg: dict[str, Any] | None = None,
                     records: list[dict[str, Any]] | None = None) -> list[tuple[LossSpec, dict[str, Any]]]:
    """The confirmed winners (verdict `switch`) of the nearest records, with their parameters, nearest first,
    distinct, at most ``k``: (spec, record)."""
    cfg = settings(cfg)
    records = load_memory(cfg) if records is None else records
    out: list[tuple[LossSpec, dict[str, Any]]] = []
    for n in MemoryModel(records, cfg).neighbours(fingerprint) if records else []:
        spec = winner(n.record)
        if spec is not None and all(spec != s for s, _ in out):
            out.append((spec, n.record))
        if len(out) >= k:
            break
    return out
