"""The shipped seed records (``fingerprints/knowledge_seed.jsonl``), built from the published tables in
``fingerprints/`` so that every number can be traced to its source:

- [LO] Ma et al., "Loss odyssey in medical image segmentation", MedIA 71 (2021) 102035: DSC of 20 losses on 4
  tasks (``loss_odyssey_results.csv``);
- [LOF] the same group's follow-up with deep supervision and SGD (``loss_odyssey_followup.csv``): 4 losses on 3
  tasks.

The papers publish means only: a seed's gains have no interval and no case count, and its verdict is decided
from the means (switch when the best loss beat Dice+CE by at least WORTHWHILE_GAIN, else keep), which the record
states. The fingerprints are ESTIMATES from typical organ and lesion volumes (``loss_odyssey_tasks.json`` gives
each derivation); records say so with ``estimated_features``. Regenerate after changing a table:

    python -m autoloss.knowledge.seeds        # rewrites fingerprints/knowledge_seed.jsonl
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from autoloss.knowledge.schema import SCHEMA_VERSION, finish_record
from autoloss.knowledge.store import SEED_FILE
from autoloss.paired_stats import WORTHWHILE_GAIN
from autoloss.spec import LossSpec

DATA = SEED_FILE.parent
# Table names -> LossSpec: the study's "pCE" is the registry's DPCE; the follow-up's "TopK10" is TopK with k=10 %.
TABLE_SPECS = {"pCE": LossSpec("DPCE"), "TopK10": LossSpec("TopK", {"topk.k": 10.0}),
               "DiceTopK10": LossSpec("DiceTopK", {"topk.k": 10.0})}
TABLES = {
    "loss_odyssey_results.csv": "[LO] Ma et al., Loss odyssey in medical image segmentation, MedIA 71 (2021) "
                                "102035, results table (fingerprints/loss_odyssey_results.csv)",
    "loss_odyssey_followup.csv": "[LOF] Loss Odyssey follow-up with deep supervision and SGD "
                                 "(fingerprints/loss_odyssey_followup.csv)",
}


def _record(task: str, info: dict, rows: list[dict], table: str, source: str) -> dict:
    base = next(r for r in rows if r["loss"] == "DiceCE")
    results = []
    for r in sorted(rows, key=lambda r: r["loss"]):
        if r["loss"] == "DiceCE":
            continue
        spec = TABLE_SPECS.get(r["loss"], LossSpec(r["loss"]))
        dsc, base_dsc = float(r[f"{task}_dsc"]), float(base[f"{task}_dsc"])
        nsd, base_nsd = float(r[f"{task}_nsd"]), float(base[f"{task}_nsd"])
        results.append({"spec": spec.to_dict(), "gain": round(dsc - base_dsc, 6), "ci": None,
                        "p_value": None, "cases": None, "objective": dsc, "baseline_objective": base_dsc,
                        "nsd_gain": round(nsd - base_nsd, 6), "dice_gain": {}})
    best = max(results, key=lambda r: r["gain"])
    switch = best["gain"] >= WORTHWHILE_GAIN
    verdict = {"decision": "switch" if switch else "keep", "loss": best["spec"] if switch else None,
               "basis": f"published means, no paired statistics: switch when the best loss beat Dice+CE by at "
                        f"least {100 * WORTHWHILE_GAIN:g} Dice point(s), else keep"}
    record = {"schema_version": SCHEMA_VERSION, "id": "", "kind": "seed", "dataset": f"LossOdyssey-{task}",
              "fingerprint": info["fingerprint"],
              "settings": {"objective": "dice", "pipeline": "the paper's own training (not an autoloss search)",
                           "table": table},
              "metric": "dice", "results": results, "verdict": verdict, "source": source,
              "estimated_features": True, "feature_derivation": info["derivation"]}
    return finish_record(record)


def build_seed_records() -> list[dict]:
    tasks = json.loads((DATA / "loss_odyssey_tasks.json").read_text())["tasks"]
    records = []
    for table, source in TABLES.items():
        with open(DATA / table, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for task in sorted(tasks):
            if f"{task}_dsc" in rows[0]:
                records.append(_record(task, tasks[task], rows, table, source))
    return records


def seed_text() -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in build_seed_records())


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else SEED_FILE
    out.write_text(seed_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
