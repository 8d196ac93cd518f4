"""Does memory improve the prior? Leave-one-dataset-out over every knowledge record, rules alone vs rules + memory.

    python benchmarks/bench_prior_memory.py [--records FILE ...] [--no-store]

Records: the shipped seeds (fingerprints/knowledge_seed.jsonl), the user's store ($AUTOLOSS_HOME/knowledge) unless
--no-store, and any --records files. Each record is held out in turn together with every other record of the same
dataset (the Loss Odyssey tasks appear in two tables: holding out one and keeping its twin would leak the answer).
The prior ranks the held-out fingerprint's losses with the rules alone, then with the rules + the memory of the
remaining records (all of them, seeds included: here the seeds are the evidence being tested). Printed per record:
its confirmed best loss (highest gain over Dice+CE; Dice+CE when nothing beat it), that loss's rank under each
ranking, and each ranking's top-1, and why the memory moved it or not: the records within the kernel's reach
(``max_distance``) and the nearest one's distance, and how far the memory moved the best loss's score. Summary:
mean rank of the best loss (lower is better); how often the top-1 is Dice+CE when the record says keep, and the
record's switch loss when it says switch.
Last line: headline, the ratio of mean ranks rules / rules+memory (> 1: memory helps).
Caveat: few real records yet; the seeds' fingerprints are estimates and the rules were written from the same tables.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_records(extra: list[str], use_store: bool) -> list[dict]:
    from autoloss.knowledge.store import KnowledgeStore, read_records

    store = KnowledgeStore()
    records = store.seed_records() + (store.user_records() if use_store else [])
    for f in extra:
        records += read_records(Path(f))
    seen, out = set(), []
    for r in records:
        if r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out


def rank_of(name: str, ranking: list) -> int:
    names = [r.spec.name for r in ranking]
    return names.index(name) + 1 if name in names else len(names) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="*", default=[], help="more JSON-lines record files")
    parser.add_argument("--no-store", action="store_true", help="leave out $AUTOLOSS_HOME's records")
    args = parser.parse_args()
    records = load_records(args.records, not args.no_store)

    from autoloss.knowledge.ranking import MemoryModel, apply_memory, rerank, settings
    from autoloss.knowledge.schema import best_loss
    from autoloss.prior import load_rules, recommend_from_fingerprint

    memory_cfg = load_rules().get("memory")
    rows = []
    with tempfile.TemporaryDirectory() as empty:
        os.environ["AUTOLOSS_HOME"] = empty  # the rules-alone ranking: no store, and seeds off by the rules
        for r in records:
            fp = r["fingerprint"]
            rules = recommend_from_fingerprint(fp)
            others = [o for o in records if o["dataset"] != r["dataset"]]
            memory = copy.deepcopy(rules)
            apply_memory(memory, fp, memory_cfg, records=others)
            memory = rerank(memory)
            best = best_loss(r)
            near = MemoryModel(others, settings(memory_cfg)).neighbours(fp)
            rules_score = {x.spec.name: x.score for x in rules}
            memory_score = {x.spec.name: x.score for x in memory}
            decision = r["verdict"]["decision"]
            target = "DiceCE" if decision == "keep" else (r["verdict"].get("loss") or {}).get("name")
            rows.append({"record": r["id"], "dataset": r["dataset"], "source": r.get("source", "")[:5],
                         "decision": decision, "best": best, "rules_rank": rank_of(best, rules),
                         "memory_rank": rank_of(best, memory), "rules_top1": rules[0].spec.name,
                         "memory_top1": memory[0].spec.name, "target": target, "near": len(near),
                         "nearest": f"{near[0].record['dataset'][:14]} {near[0].distance:.1f}" if near else "-",
                         "moved": memory_score.get(best, 0.0) - rules_score.get(best, 0.0),
                         "weight": max((n.kernel for n in near), default=0.0),
                         "gap": rules[0].score - rules_score.get(best, rules[-1].score)})

    head = f"{'record':<13}{'dataset':<30}{'src':<6}{'verdict':<9}{'best':<11}{'rank rules':>11}{'rank +mem':>10}  " \
           f"{'top1 rules':<11}{'top1 +mem':<11}{'near':>5} {'nearest (distance)':<20}{'best moved':>10}{'gap to top':>11}"
    print(head)
    print("-" * len(head))
    for x in rows:
        print(f"{x['record']:<13}{x['dataset'][:29]:<30}{x['source']:<6}{x['decision']:<9}{x['best']:<11}"
              f"{x['rules_rank']:>11}{x['memory_rank']:>10}  {x['rules_top1']:<11}{x['memory_top1']:<11}"
              f"{x['near']:>5} {x['nearest']:<20}{x['moved']:>+10.3f}{x['gap']:>11.3f}")
    n = len(rows)
    mean_rules = statistics.mean(x["rules_rank"] for x in rows)
    mean_memory = statistics.mean(x["memory_rank"] for x in rows)
    keeps = [x for x in rows if x["decision"] == "keep"]
    switches = [x for x in rows if x["decision"] == "switch"]

    def agree(xs, col):
        return f"{sum(x[col] == x['target'] for x in xs)}/{len(xs)}" if xs else "n/a"

    print()
    print(f"records: {n} ({len({x['dataset'] for x in rows})} datasets), held out by dataset")
    print(f"mean rank of the record's best loss:  rules {mean_rules:.2f}   rules+memory {mean_memory:.2f}")
    print(f"top-1 = Dice+CE where the record says keep:   rules {agree(keeps, 'rules_top1')}   "
          f"rules+memory {agree(keeps, 'memory_top1')}")
    print(f"top-1 = the switch loss where it says switch: rules {agree(switches, 'rules_top1')}   "
          f"rules+memory {agree(switches, 'memory_top1')}")
    reach = settings(memory_cfg)["max_distance"]
    print(f"records with another dataset's record within reach (distance <= {reach}): "
          f"{sum(1 for x in rows if x['near'])}/{n}; best loss's score moved by more than 0.05: "
          f"{sum(1 for x in rows if abs(x['moved']) > 0.05)}/{n} (largest kernel weight "
          f"{max(x['weight'] for x in rows):.2f}; the rules' score gap from the best loss up to their top-1: median "
          f"{statistics.median(x['gap'] for x in rows):.2f})")
    print("caveat: few real records yet; seed fingerprints are estimates, and the rules were written from the "
          "same published tables the seeds come from")
    print(f"headline: mean rank of the held-out best loss, rules / rules+memory = {mean_rules / mean_memory:.2f}x "
          f"(>1: memory helps; {n} records)")


if __name__ == "__main__":
    main()
