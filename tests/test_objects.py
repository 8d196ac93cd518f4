"""Fragment-proof sizes, thickness and regimes on generated labels with known answers; the prior on them."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from autoloss.dataset import read_case, read_dataset
from autoloss.errors import AutolossError
from autoloss.fingerprinting import compute_fingerprint
from autoloss.objects import component_stats, thickness_stats
from autoloss.prior import class_features, recommend_from_fingerprint
from autoloss.regimes import classify, load_thresholds
from autoloss.synthetic import blob_with_fragments, discs, tubes, write_labels_dataset


def small_objects_boosted(fp: dict) -> bool:
    return any("[small-objects]" in r.reason for r in recommend_from_fingerprint(fp))


def test_component_stats_by_hand():
    s = component_stats([1000, 1, 1, 1, 30])
    assert s["weighted"] == pytest.approx((1000 ** 2 + 3 + 900) / 1033)
    assert s["largest_share"] == pytest.approx(1000 / 1033)
    assert (s["n_objects"], s["major"], s["major_sizes"]) == (5, 2, [30, 1000])  # 30 >= 1 % of 1033, 1 is not
    assert s["instances"] == 1  # only the body is within 10 % of the typical object's size
    assert component_stats([])["weighted"] is None


@pytest.mark.parametrize("width", [1, 3, 4, 5, 7, 9])
def test_thickness_of_2d_lines(width):
    t = thickness_stats(tubes((64, 96), width) > 0, (1.0, 1.0))
    assert abs(t["thickness"] - width) <= 1
    assert t["skeleton_ratio"] == pytest.approx(1 / width, rel=0.25)


@pytest.mark.parametrize("radius", [1, 2, 3, 4])
def test_thickness_and_skeleton_ratio_of_3d_tubes(radius):
    label = tubes((24, 40, 80), 2 * radius, count=2)
    t = thickness_stats(label > 0, (1.0, 1.0, 1.0))
    assert abs(t["thickness"] - 2 * radius) <= 1
    # skeleton voxels per class voxel = 1 / cross-section: ~1/(pi r^2) for a round tube (digital disc area)
    zz, yy = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    assert t["skeleton_ratio"] == pytest.approx(1 / int((zz ** 2 + yy ** 2 <= radius ** 2).sum()), rel=0.2)
    t_mm = thickness_stats(label > 0, (0.5, 0.5, 0.5))["thickness_mm"]
    assert t_mm == pytest.approx(0.5 * t["thickness"], abs=0.5)


def test_blob_with_fragments_is_the_blob_not_a_speck(tmp_path):
    labels = [blob_with_fragments((48, 48, 48), 12, 150, seed=s) for s in range(3)]
    blob = int((blob_with_fragments((48, 48, 48), 12, 0) > 0).sum())
    fp = compute_fingerprint(read_dataset(write_labels_dataset(tmp_path, labels)), num_workers=1)
    c = fp["classes"]["1"]
    assert c["object_size_voxels"]["median"] == 1.0  # the old figure: the median component is a speck
    assert c["object_size_weighted_voxels"]["median"] == pytest.approx(blob, rel=0.05)
    assert c["largest_object_share"]["median"] == pytest.approx(blob / (blob + 150))
    assert c["objects_per_case"]["median"] == 151 and c["major_objects_per_case"]["median"] == 1
    assert c["fragments_per_case"]["median"] == 150 and c["instances_per_case"]["median"] == 1
    # 150 specks beside a body holding 99 %: the body's regime, with the fragmented flag beside it
    assert c["regime"] == "large-structure" and c["fragmented"], c["regime_evidence"]
    assert "fragmented: 150 fragments/case" in c["regime_evidence"]
    assert not small_objects_boosted(fp)


@pytest.mark.parametrize("dim, shape", [(2, (96, 160)), (3, (32, 48, 96))])
def test_tubes_are_tubular_and_get_no_small_objects_boost(tmp_path, dim, shape):
    width = 3 if dim == 2 else 4
    labels = [tubes(shape, width, count=3) for _ in range(2)]
    fp = compute_fingerprint(read_dataset(write_labels_dataset(tmp_path, labels)), num_workers=1)
    c = fp["classes"]["1"]
    assert abs(c["thickness_voxels"]["median"] - width) <= 1
    assert c["regime"] == "tubular", c["regime_evidence"]
    assert c["elongation"]["median"] >= load_thresholds()["elongated"]
    assert not small_objects_boosted(fp)
    assert any("[tubular-dicece]" in r.reason for r in recommend_from_fingerprint(fp))


def test_hundreds_of_small_discs_are_many_instances(tmp_path):
    labels = [discs((256, 256), 200, 3.0, seed=s) for s in range(2)]
    fp = compute_fingerprint(read_dataset(write_labels_dataset(tmp_path, labels)), num_workers=1)
    c = fp["classes"]["1"]
    assert c["objects_per_case"]["median"] == 200 and c["instances_per_case"]["median"] == 200
    assert c["major_objects_per_case"]["median"] == 0  # each disc is 0.5 % of the class: why instances exist
    assert c["regime"] == "many-instances" and c["elongation"]["median"] < 2


def test_one_small_object_is_small_objects_and_boosted(tmp_path):
    labels = [discs((32, 96, 96), 1, 2.0, seed=s) for s in range(2)]
    fp = compute_fingerprint(read_dataset(write_labels_dataset(tmp_path, labels)), num_workers=1)
    assert fp["classes"]["1"]["regime"] == "small-objects"
    assert small_objects_boosted(fp)


def test_rgb_dataset_in_one_file_is_read(tmp_path):
    labels = [discs((48, 64), 3, 5.0, seed=s) for s in range(3)]
    root = write_labels_dataset(tmp_path, labels, rgb=True)
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [f"case_00{i}_0000.png" for i in range(3)]
    ds = read_dataset(root)
    assert ds.reader == "NaturalImage2DIO" and [len(c.images) for c in ds.cases] == [1, 1, 1]
    label, spacing = read_case(ds.cases[0], ds)
    assert label.shape == (48, 64) and spacing == (1.0, 1.0)
    fp = compute_fingerprint(ds, num_workers=1)
    assert fp["dataset"]["modality"] == ["R", "G", "B"] and fp["classes"]["1"]["objects_per_case"]["median"] == 3
    dj = json.loads((root / "dataset.json").read_text())
    dj["channel_names"] = {"0": "R", "1": "G"}
    (root / "dataset.json").write_text(json.dumps(dj))
    with pytest.raises(AutolossError, match="case case_000: its image files hold 3 channel"):
        read_dataset(root)


def test_regime_thresholds_and_missing_figures():
    ds = {"dim": 3, "shape_median": [100, 100, 100]}
    assert classify({"absent_fraction": 1.0}, ds)["regime"] == "absent"
    assert classify({"absent_fraction": 0.0}, ds)["regime"] == "large-structure"  # nothing to go on: no guess
    small = {"absent_fraction": 0.3, "object_size_weighted_voxels": {"median": 100}}
    v = classify(small, ds)
    assert v["regime"] == "small-objects" and v["absent_often"] and "absent in 30 %" in v["evidence"]
    thick_tube = dict(small, thickness_voxels={"median": 30}, elongation={"median": 20})
    assert classify(thick_tube, ds)["regime"] == "small-objects"  # 30 voxels wide is not thin


def test_prior_features_read_the_regime():
    fp = {"dataset": {"dim": 2, "shape_median": [100, 100]},
          "classes": {"1": {"name": "vessels", "voxel_fraction": {"mean": 0.09}, "absent_fraction": 0.0,
                            "object_size_weighted_voxels": {"median": 2800}, "thickness_voxels": {"median": 4},
                            "elongation": {"median": 40}, "instances_per_case": {"median": 1},
                            "object_size_voxels": {"median": 61}}}}
    f = class_features(fp)["vessels"]
    assert f["regime"] == "tubular" and math.isclose(f["object_fraction"], 0.28)
    names = [r.spec.name for r in recommend_from_fingerprint(fp)]
    assert names[0] == "DiceCE" and not small_objects_boosted(fp)


def test_thickness_is_sampled_on_at_most_100_cases_spread_evenly():
    from autoloss.fingerprinting import THICKNESS_CASES, thickness_sample

    assert thickness_sample(7) == set(range(7))
    many = thickness_sample(260)
    assert len(many) == THICKNESS_CASES == 100 and {0, 259} <= many
    gaps = np.diff(sorted(many))
    assert gaps.min() >= 2 and gaps.max() <= 3


def test_table_marks_absent_often_classes(tmp_path):
    from rich.console import Console

    from autoloss.fingerprinting import fingerprint_table

    labels = [discs((32, 32), 2, 3.0, seed=s) for s in range(2)] + [np.zeros((32, 32), np.uint8)]
    fp = compute_fingerprint(read_dataset(write_labels_dataset(tmp_path, labels)), num_workers=1)
    assert fp["classes"]["1"]["absent_often"] and fp["dataset"]["thickness_cases_measured"] == 3
    console = Console(record=True, width=80)
    console.print(fingerprint_table(fp))
    text = console.export_text()
    assert f"{fp['classes']['1']['regime']}*" in text and "* absent often" in text.replace("\n", " ")


def test_lesions_of_mixed_sizes_without_a_main_body_are_many_instances(tmp_path):
    label = np.zeros((256, 256), np.uint8)
    for y, x, side in ((10, 10, 45), (10, 80, 32), (10, 140, 22)):
        label[y:y + side, x:x + side] = 1
    for k in range(20):  # 20 lesions of 7x7 on a grid, well apart
        y, x = 100 + 30 * (k // 5), 20 + 40 * (k % 5)
        label[y:y + 7, x:x + 7] = 1
    fp = compute_fingerprint(read_dataset(write_labels_dataset(tmp_path, [label, label])), num_workers=1)
    c = fp["classes"]["1"]
    assert c["instances_per_case"]["median"] == 3 and c["fragments_per_case"]["median"] == 20
    assert c["largest_object_share"]["median"] == pytest.approx(2025 / 4513)
    assert c["regime"] == "many-instances", c["regime_evidence"]
