"""A knowledge record: one dataset's fingerprint and the confirmed, paired results of the losses tried on it.

A record holds statistics only (no images, no case names unless asked for), so a file of records can be shared
between labs. One JSON object per line:

    schema_version  int, autoloss.schema.SCHEMA_VERSION (a newer version is refused: this autoloss cannot know its
                    meaning; an older one is read with the fields it predates at their defaults)
    id              12 hex digits: a hash of the content (so the same result imported twice is one record)
    kind            "search" (written by a confirmed search) | "seed" (built from a published table)
    dataset         the dataset's name
    fingerprint     the fingerprint reduced to its statistics (no path, no case names)
    settings        configuration, fidelity, screening and confirmation folds, objective, and the study identity's
                    schema fields (autoloss.schema.STUDY_FIELDS; version 2: ``network``, what judged the results; ``fidelity_mode``:
                    {mode: scratch}, or the fine-tune's {mode: finetune, base: {source, epochs, validation_dice per
                    fold}, finetune_epochs, lr}; absent in records made before it existed: scratch)
    metric          the objective the gains are measured in ("dice", "nsd", "dice+nsd")
    results         per loss tried: spec, gain over Dice+CE (fraction, 0.012 = +1.2 points), ci [lo, hi] or
                    null (published means have none), p_value, cases, objective, dice_gain per class
    verdict         {decision: switch|keep|inconclusive, loss: spec or null, basis: how it was decided}
    source          where the numbers come from (a citation for seeds)
    estimated_features  true when the fingerprint is an estimate (seeds: the papers publish no class statistics)
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from autoloss.errors import AutolossError
from autoloss.schema import SCHEMA_VERSION, STUDY_FIELDS, with_defaults
from autoloss.spec import LossSpec

KINDS = ("search", "seed")
DECISIONS = ("switch", "keep", "inconclusive")
REQUIRED = ("schema_version", "id", "kind", "dataset", "fingerprint", "settings", "metric", "results", "verdict")
# Fingerprint keys that could identify cases or a machine: never stored.
PRIVATE_DATASET_KEYS = ("path", "channels", "file_ending")


def reduce_fingerprint(fp: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint without paths or timings: what a record may carry."""
    ds = {k: v for k, v in (fp.get("dataset") or {}).items() if k not in PRIVATE_DATASET_KEYS}
    return {"autoloss_fingerprint_version": fp.get("autoloss_fingerprint_version"), "dataset": ds,
            "classes": fp.get("classes") or {}}


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def result_from_comparison(cmp: dict[str, Any]) -> dict[str, Any]:
    """One ``results`` entry from ``Comparison.to_dict()``: the paired gain and its interval, per-class Dice
    gains; per-case values are dropped unless the caller keeps them (they carry case names)."""
    pairs = cmp.get("per_case") or {}
    cand = [v["candidate"] for v in pairs.values() if _finite(v.get("candidate")) is not None]
    base = [v["baseline"] for v in pairs.values() if _finite(v.get("baseline")) is not None]
    ci = cmp.get("ci")
    return {"spec": cmp["spec"], "gain": _finite(cmp.get("gain")),
            "ci": [_finite(ci[0]), _finite(ci[1])] if ci else None, "p_value": _finite(cmp.get("p_value")),
            "cases": int(cmp.get("cases") or 0),
            "objective": sum(cand) / len(cand) if cand else None,
            "baseline_objective": sum(base) / len(base) if base else None,
            "dice_gain": {c: _finite(v.get("gain")) for c, v in (cmp.get("per_class") or {}).items()}}


def record_id(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k not in ("id", "created")}
    return hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_record(fingerprint: dict[str, Any], settings: dict[str, Any], comparisons: list[dict[str, Any]],
                 verdict: dict[str, Any], kind: str = "search", source: str = "autoloss search",
                 estimated_features: bool = False, keep_cases: bool = False,
                 created: str | None = None) -> dict[str, Any]:
    """A validated record from a fingerprint, the search settings, ``Comparison.to_dict()`` of every confirmed
    candidate and ``Verdict.to_dict()`` (or the same keys)."""
    results = []
    for c in comparisons:
        r = result_from_comparison(c)
        if keep_cases:
            r["per_case"] = c.get("per_case")
        results.append(r)
    record = {"schema_version": SCHEMA_VERSION, "id": "", "kind": kind,
              "dataset": (fingerprint.get("dataset") or {}).get("name") or "unnamed",
              "fingerprint": reduce_fingerprint(fingerprint), "settings": settings,
              "metric": settings.get("objective", "dice"), "results": results,
              "verdict": {"decision": verdict["decision"], "loss": verdict.get("loss"),
                          "basis": verdict.get("basis", "paired confirmation on unseen folds")},
              "source": source, "estimated_features": estimated_features}
    return finish_record(record, created)


def finish_record(record: dict[str, Any], created: str | None = None) -> dict[str, Any]:
    """Give a record its content id (and creation time), then validate it."""
    record["id"] = record_id(record)
    if created:
        record["created"] = created
    return validate_record(record, "<new record>")


def _bad(where: str, why: str) -> AutolossError:
    return AutolossError(f"{where}: not a valid knowledge record ({why})")


def validate_record(record: Any, where: str) -> dict[str, Any]:
    """Check a record read from ``where`` ("file:line"); one-line AutolossError naming it when it is wrong."""
    if not isinstance(record, dict):
        raise _bad(where, "not a JSON object")
    version = record.get("schema_version")
    if not isinstance(version, int):
        raise _bad(where, "no schema_version")
    if version > SCHEMA_VERSION:
        raise AutolossError(f"{where}: knowledge record schema_version {version} is newer than this autoloss "
                            f"reads ({SCHEMA_VERSION}); upgrade autoloss to read it")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise _bad(where, "missing " + ", ".join(missing))
    if record["kind"] not in KINDS:
        raise _bad(where, f"kind {record['kind']!r} is not one of {', '.join(KINDS)}")
    if not isinstance(record["id"], str) or not record["id"]:
        raise _bad(where, "empty id")
    fp = record["fingerprint"]
    if not isinstance(fp, dict) or not isinstance(fp.get("classes"), dict) or not isinstance(fp.get("dataset"), dict):
        raise _bad(where, "fingerprint lacks dataset/classes")
    if not isinstance(record["results"], list):
        raise _bad(where, "results is not a list")
    for i, r in enumerate(record["results"]):
        if not isinstance(r, dict) or "spec" not in r or "gain" not in r:
            raise _bad(where, f"result {i} lacks spec or gain")
        try:
            LossSpec.from_dict(r["spec"])
        except (AutolossError, KeyError, TypeError, ValueError) as exc:
            raise _bad(where, f"result {i}: bad loss spec ({exc})") from None
        if r["gain"] is not None and not isinstance(r["gain"], (int, float)):
            raise _bad(where, f"result {i}: gain is not a number")
        ci = r.get("ci")
        if ci is not None and (not isinstance(ci, list) or len(ci) != 2):
            raise _bad(where, f"result {i}: ci is not [low, high]")
    v = record["verdict"]
    if not isinstance(v, dict) or v.get("decision") not in DECISIONS:
        raise _bad(where, f"verdict decision must be one of {', '.join(DECISIONS)}")
    if not isinstance(record["settings"], dict):
        raise _bad(where, "settings is not an object")
    return record


def network_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The network that judged a record's results (None: not recorded, a record older than schema 2 or a seed)."""
    return with_defaults(record["settings"], STUDY_FIELDS)["network"]


def winner(record: dict[str, Any]) -> LossSpec | None:
    """The loss the record's verdict switched to (None: keep Dice+CE or inconclusive)."""
    v = record["verdict"]
    return LossSpec.from_dict(v["loss"]) if v["decision"] == "switch" and v.get("loss") else None


def best_loss(record: dict[str, Any], baseline: str = "DiceCE") -> str:
    """The record's best loss. A measured record (gains with intervals) that decided says it: its switch loss, or
    Dice+CE on keep (the verdict's rule also refuses a gain that costs a class's Dice significantly, which the
    mean gains alone do not show). Otherwise the best mean gain (Dice+CE, gain 0, when nothing beat it); a
    measured gain whose interval reaches 0 did not beat Dice+CE (a published mean has no interval: its sign
    decides)."""
    verdict = record.get("verdict") or {}
    measured = any((r.get("ci") or [None])[0] is not None for r in record["results"])
    if measured and verdict.get("decision") == "keep":
        return baseline
    if measured and verdict.get("decision") == "switch" and verdict.get("loss"):
        return verdict["loss"]["name"]
    best, gain = baseline, 0.0
    for r in record["results"]:
        ci = r.get("ci") or [None, None]
        if ci[0] is not None and ci[0] <= 0:
            continue
        if r["gain"] is not None and r["gain"] > gain:
            best, gain = r["spec"]["name"], r["gain"]
    return best
