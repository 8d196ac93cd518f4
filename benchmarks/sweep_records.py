"""Knowledge records measured by the sweep: one per dataset whose every grid loss finished on all 5 folds.

    python benchmarks/sweep_records.py [benchmarks/results/sweep] [--out benchmarks/results/sweep_records.jsonl]
    python benchmarks/bench_prior_memory.py --no-store --records benchmarks/results/sweep_records.jsonl

Each record holds every grid loss's paired comparison with Dice+CE on all the cases of the 5-fold split (from
scratch, the sweep's network and fidelity, the dataset's ``--metric auto`` objective), and the verdict the product's
own rule (``autoloss.searching.verdict.verdict_from_folds``, Bonferroni over the grid) gives on them: measured, not estimated.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_table import BASELINE, DEFAULT_DIR, common_folds, load_sweep  # noqa: E402

FOLDS = [0, 1, 2, 3, 4]


def sweep_record(folder: Path) -> dict | None:
    """The dataset's record, None while its sweep lacks a fold of a grid loss."""
    from autoloss.knowledge.schema import build_record
    from autoloss.searching.verdict import verdict_from_folds
    from autoloss.spec import LossSpec

    sweep = load_sweep(folder)
    if common_folds(sweep) != FOLDS:
        return None
    meta = json.loads((folder / "meta.json").read_text())
    fp = json.loads((folder / "fingerprint.json").read_text())
    tables = sweep.tables["scratch"]
    # the grid and any loss trained beside it on all 5 folds (--extra, e.g. a real search's choice): all measured
    candidates = [g for g in sweep.grid if g["label"] != BASELINE] + \
        [e for e in meta.get("extra", []) if set(tables.get(e["label"], {})) >= set(FOLDS)]
    # the product's rule (``verdict_from_folds``, as a search decides): Bonferroni over the candidates, against both
    # Dice+CE trainings (the seed pair), clear of the retraining noise they measure
    pair = sweep.tables["scratch_seed2"].get(BASELINE, {})
    verdict = verdict_from_folds([(LossSpec.from_dict(g["spec"]), tables[g["label"]]) for g in candidates],
                                 tables[BASELINE], FOLDS, sweep.objective, pair if set(pair) >= set(FOLDS) else None)
    comps = verdict.comparisons
    settings = {"configuration": meta["fidelity"]["configuration"], "fidelity": meta["fidelity"],
                "objective": sweep.objective, "folds": FOLDS, "confirm_folds": FOLDS,
                "network": meta["network_config"], "fidelity_mode": {"mode": "scratch"},
                "basis": "benchmarks/sweep.py: every grid loss (and --extra loss) from scratch on all 5 folds"}
    return build_record(fp, settings, [c.to_dict() for c in comps], verdict.to_dict(),
                        source="benchmarks/sweep.py (exhaustive sweep, measured)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_DIR))
    ap.add_argument("--out", default=str(DEFAULT_DIR.parent / "sweep_records.jsonl"))
    args = ap.parse_args()
    lines = []
    for folder in sorted(p.parent for p in Path(args.folder).glob("*/meta.json")):
        record = sweep_record(folder)
        if record is None:
            print(f"{folder.name}: sweep not complete on every fold: no record")
            continue
        lines.append(json.dumps(record, sort_keys=True))
        best = record["verdict"]["loss"]
        print(f"{folder.name}: record {record['id']}, verdict {record['verdict']['decision']}"
              + (f" ({best['name']})" if best else "") + f", {len(record['results'])} losses")
    Path(args.out).write_text("".join(line + "\n" for line in lines))
    print(f"headline: {len(lines)} measured record(s) written to {args.out}")


if __name__ == "__main__":
    main()
