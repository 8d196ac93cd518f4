"""Shells and rims are not tubes (issue 21): known-answer 3D shapes for thickness and curve-vs-surface, their
regimes, fragmented as a flag, nested labels and the region-based training `recommend` suggests for them."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from autoloss.cli import main
from autoloss.dataset import read_dataset
from autoloss.fingerprinting import compute_fingerprint, fingerprint_table, save_fingerprint
from autoloss.nesting import count_contacts, nested_chains, region_suggestion
from autoloss.objectives import auto_objective, metric_plan
from autoloss.objects import elongation, thickness_stats
from autoloss.prior import recommend_from_fingerprint, region_training
from autoloss.regimes import classify, load_thresholds
from autoloss.synthetic import branching_tree, layered_ball, plate, tubes, write_labels_dataset

ISO = (1.0, 1.0, 1.0)


def shell(wall: int, radius: int = 14) -> np.ndarray:
    return (layered_ball((2 * (radius + wall) + 6,) * 3, [radius, radius + wall]) == 2).astype(np.uint8)


# (name, mask, generated wall/tube width, curve or surface)
SHAPES = [(f"shell {w}", lambda w=w: shell(w), w, "surface") for w in (2, 3, 4)] + \
    [(f"plate {t}{' tilted' if tilt else ''}", lambda t=t, tilt=tilt: plate((40, 64, 64), t, tilt), t, "surface")
     for t in (1, 2, 3, 5) for tilt in (0.0, 0.5)] + \
    [(f"tube {w}", lambda w=w: tubes((24, 40, 80), w, count=2), w, "curve") for w in (2, 3, 4, 6, 8)] + \
    [(f"tree {w}", lambda w=w: branching_tree((80, 80, 80), w), w, "curve") for w in (3, 4, 5)]


@pytest.mark.parametrize("name, make, width, kind", SHAPES, ids=[s[0] for s in SHAPES])
def test_thickness_within_one_voxel_and_curve_or_surface(name, make, width, kind):
    t = thickness_stats(make() > 0, ISO)
    assert abs(t["thickness"] - width) <= 1, t
    surface = load_thresholds()["surface_dimension"]
    if kind == "surface":
        assert t["medial_dimension"] >= surface + 0.3, t  # measured 1.85-2.12
    else:
        assert t["medial_dimension"] <= surface - 0.2, t  # measured 1.0-1.27


def test_skimage_thins_plates_away_but_the_local_thickness_does_not():
    # Why 3D thickness comes from the EDT: skimage's 3D skeleton of a solid plate is (almost) empty.
    from skimage.morphology import skeletonize

    for t in (2, 3, 5):
        mask = plate((40, 64, 64), t) > 0
        assert skeletonize(mask).sum() <= 0.001 * mask.sum()
        assert thickness_stats(mask, ISO)["thickness"] == pytest.approx(t, abs=0.5)


def test_ball_is_compact_and_2d_has_no_dimension():
    ball = thickness_stats(layered_ball((40, 40, 40), [15]) > 0, ISO)
    assert ball["medial_dimension"] < 0.5 and ball["thickness"] > 25
    # A ball centred between voxels thins to an empty skeleton; its deepest voxel stands in (it used to be the
    # whole ball: skeleton ratio 1, so a small ball read as a long, thin tube)
    small = layered_ball((14, 14, 14), [5]) > 0
    t = thickness_stats(small, ISO)
    assert t["skeleton_ratio"] == pytest.approx(1 / small.sum())
    assert elongation(float(small.sum()), t["thickness"], t["skeleton_ratio"]) < 1
    assert thickness_stats(tubes((64, 96), 3) > 0, (1.0, 1.0))["medial_dimension"] is None  # 2D: a line is a tube


def test_dimension_in_mm_on_an_anisotropic_grid():
    # The same shell sampled every second slice (spacing 2 mm x 1 mm x 1 mm) is still a surface.
    t = thickness_stats(shell(4)[::2] > 0, (2.0, 1.0, 1.0))
    assert t["medial_dimension"] >= 1.8 and t["thickness_mm"] == pytest.approx(4, abs=1)


def side_by_side(masks: list[np.ndarray], gap: int = 3) -> np.ndarray:
    """One 3D label with mask k as label k + 1, placed along the last axis with ``gap`` empty voxels between."""
    shape = [max(m.shape[a] for m in masks) for a in (0, 1)]
    parts = []
    for k, m in enumerate(masks):
        padded = np.zeros(shape + [m.shape[2] + gap], np.uint8)
        padded[:m.shape[0], :m.shape[1], :m.shape[2]] = (m > 0) * (k + 1)
        parts.append(padded)
    return np.concatenate(parts, axis=2)


def test_known_answer_regimes(tmp_path):
    names = ["shell", "plate", "tube", "tree", "ball"]
    labels = [side_by_side([shell(w), plate((24, 64, 64), t), tubes((24, 40, 80), 4, count=2),
                            branching_tree((72, 72, 72), 4), layered_ball((30, 30, 30), [r])])
              for w, t, r in ((3, 2, 12), (4, 3, 13))]
    root = write_labels_dataset(tmp_path, labels, label_names={"background": 0, **{n: k for k, n in
                                                                                     enumerate(names, 1)}})
    fp = compute_fingerprint(read_dataset(root), num_workers=1)
    regimes = {c["name"]: c["regime"] for c in fp["classes"].values()}
    assert regimes == {"shell": "sheet", "plate": "sheet", "tube": "tubular", "tree": "tubular",
                       "ball": "large-structure"}, {c["name"]: c["regime_evidence"] for c in fp["classes"].values()}
    shell_entry = fp["classes"]["1"]
    assert shell_entry["elongation"]["median"] >= load_thresholds()["elongated"]  # what made shells "tubular"
    assert fp["dataset"]["nested_labels"] is None  # side by side: nothing encloses anything
    plan = metric_plan(fp)
    assert plan["1"]["metrics"] == plan["2"]["metrics"] == ["dice", "nsd"] and plan["3"]["metrics"] == ["dice", "cldice"]


@pytest.fixture(scope="module")
def rim_dataset(tmp_path_factory):
    """Two cases of a core label inside a rim 3 voxels thick, plus 20 specks of the rim label (label noise)."""
    tmp = tmp_path_factory.mktemp("rim")
    labels = [layered_ball((64, 64, 64), radii, specks=20, seed=s) for s, radii in enumerate(([11, 14], [12, 15]))]
    root = write_labels_dataset(tmp, labels, label_names={"background": 0, "core": 1, "rim": 2})
    return root, compute_fingerprint(read_dataset(root), num_workers=1)


def test_rim_around_core_is_a_fragmented_sheet_not_a_tube(rim_dataset):
    _, fp = rim_dataset
    core, rim = fp["classes"]["1"], fp["classes"]["2"]
    assert rim["regime"] == "sheet" and rim["fragmented"], rim["regime_evidence"]
    assert "fragmented: 20 fragments/case" in rim["regime_evidence"]
    assert rim["thickness_voxels"]["median"] == pytest.approx(3, abs=1)
    assert core["regime"] == "large-structure" and not core["fragmented"]
    objective = auto_objective(fp)
    assert objective == "classwise:1=dice,2=dice+nsd" and "cldice" not in objective
    recs = recommend_from_fingerprint(fp)
    reasons = {r.spec.name: r.reason for r in recs}
    assert "[thin-sheet]" in reasons["DiceCE"] and "[tubular" not in " ".join(reasons.values())
    assert recs[0].spec.name == "DiceCE"
    top = [r.spec.name for r in recommend_from_fingerprint(fp, top=5)]
    assert not {"DiceCE+clDice", "DiceCE+SkelRecall"} & set(top)


def test_rim_around_core_is_nested_and_recommend_suggests_regions(rim_dataset, tmp_path, capsys):
    root, fp = rim_dataset
    nested = fp["dataset"]["nested_labels"]
    assert [c["names"] for c in nested["chains"]] == [["rim", "core"]] and nested["chains"][0]["enclosed"][0] > 0.99
    assert nested["labels"] == {"background": 0, "rim_and_inner": [1, 2], "core": [1]}
    assert nested["regions_class_order"] == [2, 1]
    suggestion = region_training(fp)
    assert set(suggestion["losses_without_regions"]) == {"DiceCE+SkelRecall", "DiceCE+Blob"}
    assert "DiceCE+clDice" in suggestion["losses_with_regions"] and "DiceCE" in suggestion["losses_with_regions"]
    dataset_json = (root / "dataset.json").read_bytes()
    path = save_fingerprint(fp, tmp_path / "fp.json")
    assert main(["recommend", "--fingerprint", str(path), "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "Nested labels: rim > core" in out and '"regions_class_order": [2, 1]' in out
    assert '"rim_and_inner": [1, 2]' in out and "BraTS" in out and "DiceCE+SkelRecall, DiceCE+Blob" in out
    assert "Dice + NSD" in out and "sheet" in out
    assert main(["recommend", "--fingerprint", str(path), "--no-memory", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["nested_labels"]["regions_class_order"] == [2, 1]
    assert (root / "dataset.json").read_bytes() == dataset_json  # a suggestion: the user's file is untouched
    from rich.console import Console

    console = Console(record=True, width=100)
    console.print(fingerprint_table(fp))
    text = console.export_text()
    assert "sheet~" in text and "nested labels: rim > core" in " ".join(text.split())


def test_nesting_with_an_open_rim_and_side_by_side_organs():
    # BraTS-like: necrosis (1) inside an enhancing rim (2) inside oedema (3); the rim is open on one side, where
    # necrosis touches oedema directly. Still nested: the rim holds most of the necrosis' outer faces.
    label = layered_ball((56, 56, 56), [8, 11, 18])
    gap = label[:, :, 36:] == 2
    label[:, :, 36:][gap] = 3
    contacts = Counter()
    for ax in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        diff = label[tuple(hi)] != label[tuple(lo)]
        count_contacts(label[tuple(lo)][diff], label[tuple(hi)][diff], contacts)
    t = load_thresholds()
    chains = nested_chains(contacts, [1, 2, 3], None, t["nested_background_share"], t["nested_enclosure"])
    assert [c["layers"] for c in chains] == [[3, 2, 1]] and 0.6 <= chains[0]["enclosed"][1] < 1.0
    suggestion = region_suggestion(chains, {"background": 0, "necrosis": 1, "enhancing": 2, "edema": 3})
    assert suggestion["labels"] == {"background": 0, "edema_and_inner": [1, 2, 3], "enhancing_and_inner": [1, 2],
                                    "necrosis": [1]}
    assert suggestion["regions_class_order"] == [3, 2, 1]
    # Two organs touching each other, each mostly against the background, plus a third on its own: no nesting.
    side = Counter({(0, 1): 900, (0, 2): 800, (1, 2): 150, (0, 3): 300})
    assert nested_chains(side, [1, 2, 3], None, t["nested_background_share"], t["nested_enclosure"]) == []


def test_regime_rules_by_hand_and_old_fingerprints():
    ds = {"dim": 3, "shape_median": [100, 100, 100]}
    thin_long = {"absent_fraction": 0.0, "object_size_weighted_voxels": {"median": 20000},
                 "thickness_voxels": {"median": 3}, "elongation": {"median": 300}}
    assert classify(thin_long, ds)["regime"] == "tubular"  # no dimension (2D, older fingerprints): as before
    assert classify(dict(thin_long, medial_dimension={"median": 1.1}), ds)["regime"] == "tubular"
    sheet = dict(thin_long, medial_dimension={"median": 2.0}, sheet_extent={"median": 27})
    v = classify(sheet, ds)
    assert v["regime"] == "sheet" and "a surface (dimension 2" in v["evidence"] and not v["fragmented"]
    compact = dict(sheet, sheet_extent={"median": 3})  # flattened but not wide: not a sheet, and not a tube
    assert classify(compact, ds)["regime"] == "large-structure"
    assert classify(dict(sheet, thickness_voxels={"median": 20}), ds)["regime"] == "large-structure"  # not thin


def test_fingerprint_without_the_new_fields_still_recommends(rim_dataset, tmp_path, capsys):
    _, fp = rim_dataset
    old = json.loads(json.dumps(fp))
    old["dataset"].pop("nested_labels")
    for c in old["classes"].values():
        for key in ("medial_dimension", "sheet_extent", "fragmented"):
            c.pop(key)
    old["classes"]["2"]["regime"] = "fragmented"  # as fingerprints from before the flag could say
    assert region_training(old) is None and metric_plan(old)["2"]["metrics"] == ["dice"]
    path = save_fingerprint(old, tmp_path / "old.json")
    assert main(["recommend", "--fingerprint", str(path), "--no-memory"]) == 0
    assert "Nested labels" not in capsys.readouterr().out
    from autoloss.knowledge.features import feature_vector

    assert feature_vector(old).shape == feature_vector(fp).shape
