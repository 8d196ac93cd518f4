"""The prior against the Loss Odyssey table: its top 3 must hold each task's best loss."""
import csv
import json
from pathlib import Path

import pytest

from autoloss.prior import TABLE_NAMES, recommend_from_fingerprint

ROOT = Path(__file__).resolve().parents[1]
TASKS = json.loads((ROOT / "fingerprints" / "loss_odyssey_tasks.json").read_text())["tasks"]


def best_in_table(task: str) -> str:
    with open(ROOT / "fingerprints" / "loss_odyssey_results.csv") as fh:
        rows = list(csv.DictReader(fh))
    best = max(rows, key=lambda r: float(r[f"{task}_dsc"]))
    return TABLE_NAMES.get(best["loss"], best["loss"])


def test_reference_table_matches_shared_copy():
    shared = ROOT.parent / "shared" / "reference" / "loss_odyssey_results.csv"
    if not shared.exists():
        pytest.skip("../shared not present")
    assert shared.read_text() == (ROOT / "fingerprints" / "loss_odyssey_results.csv").read_text()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_top3_holds_the_tasks_best_loss(task):
    best = best_in_table(task)
    assert TASKS[task]["best_loss"] == best
    recs = recommend_from_fingerprint(TASKS[task]["fingerprint"], top=3)
    assert best in [r.spec.name for r in recs[:3]], [r.spec.describe() for r in recs]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_baseline_always_listed_and_single_losses_never_first(task):
    recs = recommend_from_fingerprint(TASKS[task]["fingerprint"], top=2)
    names = [r.spec.name for r in recs]
    assert "DiceCE" in names
    assert names[0].startswith("Dice") and names[0] != "Dice"
    for r in recs:
        assert r.reason and isinstance(r.score, float)
        d = r.to_dict()
        assert set(d) >= {"name", "params", "schedule", "score", "reason"}


def test_topk_k_follows_organ_size():
    liver = recommend_from_fingerprint(TASKS["liver"]["fingerprint"])
    tumour = recommend_from_fingerprint(TASKS["liver_tumor"]["fingerprint"])
    k = {r.spec.name: r.spec.params.get("topk.k") for r in liver}["DiceTopK"]
    k_small = {r.spec.name: r.spec.params.get("topk.k") for r in tumour}["DiceTopK"]
    assert k > k_small >= 10


def test_boundary_losses_come_with_dice_first_schedule():
    recs = recommend_from_fingerprint(TASKS["liver_tumor"]["fingerprint"])
    hd = next(r for r in recs if r.spec.name == "DiceHD")
    assert hd.spec.schedule is not None
    assert hd.spec.schedule.weights_at(0, 100)["hd"] == 0.0
    assert hd.spec.schedule.weights_at(99, 100)["hd"] == 1.0


def test_mixed_sizes_is_judged_per_class_not_by_average():
    # One large class and one tiny class: the tiny one must fire the imbalance rules even though the average
    # fraction looks mild.
    fp = json.loads(json.dumps(TASKS["liver"]["fingerprint"]))
    fp["dataset"]["num_classes"] = 2
    fp["classes"]["2"] = {"name": "lesion", "label": 2, "voxel_fraction": {"mean": 0.0002, "median": 0.0002},
                          "objects_per_case": {"median": 3}, "object_size_weighted_voxels": {"median": 500},
                          "absent_fraction": 0.0, "boundary_to_volume": {"median": 0.5}}
    recs = recommend_from_fingerprint(fp, top=3)
    assert {"DiceFocal", "DiceHD"} & {r.spec.name for r in recs}
    assert any("lesion" in r.reason for r in recs)


def test_balanced_dataset_keeps_dice_ce_first():
    fp = {"dataset": {"name": "b", "dim": 2, "shape_median": [256, 256]},
          "classes": {"1": {"name": "lungs", "voxel_fraction": {"mean": 0.3}, "object_size_weighted_voxels": {"median": 9000},
                            "objects_per_case": {"median": 2}, "absent_fraction": 0.0,
                            "boundary_to_volume": {"median": 0.05}}}}
    assert recommend_from_fingerprint(fp)[0].spec.name == "DiceCE"
