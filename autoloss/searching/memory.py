"""The search's two uses of memory, called from the driver (``autoloss.searching.runner``):

- ``enqueue_warm_start``: after Dice+CE and the prior's picks, the confirmed winners of the nearest records, with
  their parameters, are enqueued once per study (source "memory");
- ``remember``: when the confirmation has run to the end, one record of the fingerprint, the settings and every
  confirmed comparison goes into the knowledge store (the same search resumed writes the same record: skipped).
"""
from __future__ import annotations

from typing import Any, Callable

import optuna

from autoloss.errors import AutolossError
from autoloss.schema import STUDY_FIELDS, with_defaults
from autoloss.searching import records as rec
from autoloss.spec import LossSpec

MEMORY_FLAG = "autoloss_memory_enqueued"


def enqueue_warm_start(study: optuna.Study, space, fingerprint: dict[str, Any], already: list[LossSpec],
                       k: int, log: Callable[[str], None]) -> list[LossSpec]:
    """Enqueue up to ``k`` winners of similar recorded datasets that the search space holds and the prior did not
    already enqueue; once per study (from the driver). Returns what was enqueued now."""
    from autoloss.knowledge.ranking import warm_start_specs

    if k < 1 or study.user_attrs.get(MEMORY_FLAG):
        return []
    picked = [(s, r) for s, r in warm_start_specs(fingerprint, k + len(already))
              if s.name in space.losses and s not in already][:k]
    for spec, record in picked:
        study.enqueue_trial(space.params_for(spec), user_attrs={rec.SPEC: spec.to_dict(), rec.SOURCE: "memory"},
                            skip_if_exists=True)
    study.set_user_attr(MEMORY_FLAG, True)
    if picked:
        log("memory enqueued: " + ", ".join(f"{s.describe()} (won on {r['dataset']}, record {r['id']})"
                                           for s, r in picked))
    return [s for s, _ in picked]


def confirmation_complete(study: optuna.Study) -> bool:
    from autoloss.searching import confirm

    plan = study.user_attrs.get(rec.CONFIRM_PLAN)
    return bool(plan) and not confirm.pending(study, plan)


def remember(study: optuna.Study, fingerprint: dict[str, Any], settings: dict[str, Any],
             log: Callable[[str], None]) -> dict[str, Any] | None:
    """Write the search's record when its confirmation finished; a store problem is reported, never fatal (the
    search's own results are already saved)."""
    from autoloss.knowledge.schema import build_record
    from autoloss.knowledge.store import KnowledgeStore
    from autoloss.searching.verdict import compute_verdict

    if not confirmation_complete(study):
        return None
    verdict = compute_verdict(study)
    plan = study.user_attrs[rec.CONFIRM_PLAN]
    identity = with_defaults(study.user_attrs.get(rec.SETTINGS) or {})
    # what judged the results (schema 2: the network, the fidelity mode); the caller's fuller view wins
    settings = {f.name: identity[f.name] for f in STUDY_FIELDS} | settings | {
        "confirm_folds": list(plan["folds"]), "confirm_epochs": plan["epochs"]}
    try:
        record = build_record(fingerprint, settings, [c.to_dict() for c in verdict.comparisons], verdict.to_dict(),
                              created=_now())
        store = KnowledgeStore()
        added, _ = store.add([record])
    except AutolossError as exc:
        log(f"knowledge record not written: {exc}")
        return None
    if added:
        unused = " (inconclusive: kept, but the prior does not learn from it)" if verdict.decision == "inconclusive" else ""
        log(f"knowledge record {record['id']} written to {store.file}{unused} (see: autoloss knowledge list)")
    return record


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
