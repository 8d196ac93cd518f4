"""Fingerprint: exact schema, known answers on hand-made labels, synthetic and shared data, bad inputs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_erosion

from autoloss.dataset import read_dataset
from autoloss.errors import AutolossError
from autoloss.fingerprinting import compute_fingerprint, fingerprint_table, load_fingerprint, save_fingerprint
from autoloss.synthetic import make_synthetic_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
STATS = {"mean", "median", "min", "max", "p05", "p95"}
DATASET_KEYS = {"name", "id", "path", "num_cases", "num_cases_measured", "num_classes", "dim", "channels", "modality",
                "file_ending", "spacing_median", "spacing_min", "spacing_max", "anisotropy", "shape_median",
                "shape_min", "shape_max", "has_regions", "ignore_label", "voxel_volume_unit", "thickness_cases_measured",
                "nested_labels"}
CLASS_STATS = {"voxel_fraction", "foreground_share", "objects_per_case", "object_size_voxels", "object_size_physical",
               "boundary_to_volume", "bbox_extent", "object_size_weighted_voxels", "object_size_weighted_mm",
               "largest_object_share", "major_objects_per_case", "instances_per_case", "fragments_per_case",
               "thickness_voxels", "thickness_mm", "skeleton_ratio", "elongation", "medial_dimension", "sheet_extent"}
REGIMES = {"tubular", "sheet", "many-instances", "small-objects", "large-structure", "absent"}


def with_labels(tmp_path: Path, labels: list[np.ndarray], spacing, num_classes: int, **kw) -> Path:
    """A synthetic dataset whose labels are replaced by ``labels`` (same grid and spacing as the images)."""
    root = make_synthetic_dataset(tmp_path, dim=labels[0].ndim, num_cases=len(labels), shape=labels[0].shape,
                                  num_classes=num_classes, foreground_ratio=0.01, objects_per_case=1,
                                  spacing=spacing, **kw)
    for i, arr in enumerate(labels):
        img = sitk.GetImageFromArray(arr.astype(np.uint8))
        img.SetSpacing(list(spacing)[::-1])
        sitk.WriteImage(img, str(root / "labelsTr" / f"case_{i:03d}.nii.gz"), True)
    return root


def check_schema(fp: dict) -> None:
    assert set(fp) == {"autoloss_fingerprint_version", "dataset", "classes", "timing"}
    assert fp["autoloss_fingerprint_version"] == 2
    assert set(fp["dataset"]) == DATASET_KEYS and set(fp["timing"]) == {"seconds", "workers"}
    for key, c in fp["classes"].items():
        assert set(c) == CLASS_STATS | {"name", "label", "absent_fraction", "regime", "regime_evidence",
                                        "absent_often", "fragmented", "major_object_size_voxels"}
        assert c["regime"] in REGIMES and isinstance(c["regime_evidence"], str) and isinstance(c["absent_often"], bool)
        assert isinstance(c["fragmented"], bool)
        if fp["dataset"]["dim"] == 2:  # a thin structure in 2D is a line: no curve/surface figure
            assert set(c["medial_dimension"].values()) == set(c["sheet_extent"].values()) == {None}
        assert set(c["major_object_size_voxels"]) == {"p10", "p50", "p90"}
        if not fp["dataset"]["has_regions"]:
            assert str(c["label"]) == key
        for s in CLASS_STATS:
            assert set(c[s]) == STATS
            assert all(v is None or isinstance(v, float) for v in c[s].values())
        assert 0.0 <= c["absent_fraction"] <= 1.0
    json.dumps(fp, allow_nan=False)  # plain JSON: no numpy types, no NaN


@pytest.fixture
def squares(tmp_path) -> dict:
    """Three 32x32 cases with spacing (0.5, 0.25) and hand-countable answers."""
    a = np.zeros((32, 32), np.uint8)
    a[4:12, 4:12] = 1                       # class 1: one 8x8 square
    a[20:23, 20:23] = 2                     # class 2: two 3x3 squares, 3 rows apart
    a[26:29, 20:23] = 2
    b = np.zeros((32, 32), np.uint8)
    b[10:14, 10:14] = 1                     # class 1: one 4x4 square, class 2 absent
    c = np.zeros((32, 32), np.uint8)        # empty case
    root = with_labels(tmp_path, [a, b, c], (0.5, 0.25), num_classes=2)
    return compute_fingerprint(read_dataset(root), num_workers=1)


def test_known_answers_on_squares(squares):
    fp = squares
    check_schema(fp)
    d, c1, c2 = fp["dataset"], fp["classes"]["1"], fp["classes"]["2"]
    assert d["dim"] == 2 and d["num_classes"] == 2 and d["num_cases"] == d["num_cases_measured"] == 3
    assert d["voxel_volume_unit"] == "mm^2" and d["spacing_median"] == [0.5, 0.25] and d["anisotropy"] == 2.0
    assert d["shape_median"] == [32, 32] and d["modality"] == ["synthetic"] and d["channels"] == {"0": "synthetic"}
    assert c1["name"] == "class1" and c1["label"] == 1
    assert c1["voxel_fraction"]["mean"] == pytest.approx((64 + 16) / 3 / 1024)
    assert c1["voxel_fraction"]["min"] == 0.0 and c1["voxel_fraction"]["max"] == 64 / 1024
    assert c1["foreground_share"]["min"] == pytest.approx(64 / 82) and c1["foreground_share"]["max"] == 1.0
    assert c2["foreground_share"]["mean"] == pytest.approx((18 / 82 + 0) / 2)  # the empty case has no foreground
    assert c1["objects_per_case"]["mean"] == pytest.approx(2 / 3) and c2["objects_per_case"]["max"] == 2.0
    assert (c1["object_size_voxels"]["min"], c1["object_size_voxels"]["max"]) == (16.0, 64.0)
    assert c2["object_size_voxels"]["median"] == 9.0
    assert c1["object_size_physical"]["max"] == pytest.approx(64 * 0.125)
    assert c1["absent_fraction"] == pytest.approx(1 / 3) and c2["absent_fraction"] == pytest.approx(2 / 3)
    # boundary of a k x k square (4-neighbours): 4k - 4
    assert c1["boundary_to_volume"]["max"] == pytest.approx(12 / 16)
    assert c1["boundary_to_volume"]["min"] == pytest.approx(28 / 64)
    assert c2["boundary_to_volume"]["mean"] == pytest.approx(16 / 18)
    assert c1["bbox_extent"]["max"] == pytest.approx(64 / 1024)
    assert c2["bbox_extent"]["mean"] == pytest.approx(9 * 3 / 1024)  # rows 20..28, cols 20..22


def test_ball_boundary_matches_erosion_and_connectivity(tmp_path):
    z, y, x = np.ogrid[:24, :24, :24]
    ball = (z - 11) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 25
    arr = ball.astype(np.uint8)
    arr[0:3, 0:3, 0:3] = 2                   # cube in the corner: the image border counts as boundary
    arr[20, 20, 20] = arr[21, 21, 21] = 2    # touching by a corner: one object under 26-connectivity
    fp = compute_fingerprint(read_dataset(with_labels(tmp_path, [arr], (2.0, 1.0, 1.0), num_classes=2)), 1)
    c1, c2 = fp["classes"]["1"], fp["classes"]["2"]
    boundary = ball.sum() - binary_erosion(ball).sum()
    assert c1["boundary_to_volume"]["mean"] == pytest.approx(boundary / ball.sum())
    assert c1["object_size_voxels"]["mean"] == ball.sum() and c1["objects_per_case"]["mean"] == 1
    assert c1["object_size_physical"]["mean"] == pytest.approx(2.0 * ball.sum())
    assert c1["bbox_extent"]["mean"] == pytest.approx(11 ** 3 / 24 ** 3)
    assert c2["objects_per_case"]["mean"] == 2.0
    assert sorted([c2["object_size_voxels"]["min"], c2["object_size_voxels"]["max"]]) == [2.0, 27.0]
    assert c2["boundary_to_volume"]["mean"] == pytest.approx((26 + 2) / 29)  # only the cube's centre is interior
    assert fp["dataset"]["voxel_volume_unit"] == "mm^3" and fp["dataset"]["anisotropy"] == 2.0


def test_synthetic_dataset_matches_its_recipe(tmp_path):
    root = make_synthetic_dataset(tmp_path, dim=3, num_cases=6, shape=(24, 32, 32), num_classes=2,
                                  foreground_ratio=(0.06, 0.01), objects_per_case=(1, 3), absent_fraction=(0, 0.5),
                                  spacing=(3.0, 0.8, 0.8), seed=3)
    fp = compute_fingerprint(read_dataset(root), num_workers=2)
    check_schema(fp)
    d, c1, c2 = fp["dataset"], fp["classes"]["1"], fp["classes"]["2"]
    assert d["spacing_median"] == pytest.approx([3.0, 0.8, 0.8]) and d["anisotropy"] == pytest.approx(3.75)
    assert d["shape_min"] == d["shape_max"] == [24, 32, 32] and fp["timing"]["workers"] == 2
    assert c1["voxel_fraction"]["mean"] == pytest.approx(0.06, rel=0.1) and c1["absent_fraction"] == 0.0
    assert c1["objects_per_case"]["min"] == c1["objects_per_case"]["max"] == 1.0
    assert c2["absent_fraction"] == 0.5 and c2["objects_per_case"]["max"] == 3.0
    assert c2["voxel_fraction"]["max"] == pytest.approx(0.01, rel=0.2)
    voxel = 3.0 * 0.8 * 0.8
    assert c2["object_size_physical"]["mean"] == pytest.approx(c2["object_size_voxels"]["mean"] * voxel, rel=1e-6)


def test_parallel_equals_serial(tmp_path):
    root = make_synthetic_dataset(tmp_path, dim=2, num_cases=12, num_classes=2, objects_per_case=3, seed=5)
    ds = read_dataset(root)
    serial, parallel = compute_fingerprint(ds, num_workers=1), compute_fingerprint(ds, num_workers=2, progress=True)
    assert serial["classes"] == parallel["classes"] and serial["dataset"] == parallel["dataset"]


def test_regions_are_measured_as_regions_and_ignore_is_not_annotated(tmp_path):
    a = np.zeros((16, 16), np.uint8)
    a[2:6, 2:6], a[8:10, 8:10], a[12:14, 0:16] = 1, 2, 4   # whole = 1 + 2 (two objects), core = 2, 3 never
    a[6, 2:6] = 2                                          # core touches the 1-square: whole's square grows to 20
    root = with_labels(tmp_path, [a, a], (1.0, 1.0), num_classes=1)
    dj = json.loads((root / "dataset.json").read_text())
    dj.update(labels={"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3, "ignore": 4},
              regions_class_order=[1, 2, 3])
    (root / "dataset.json").write_text(json.dumps(dj))
    fp = compute_fingerprint(read_dataset(root), num_workers=1)
    check_schema(fp)
    assert fp["dataset"]["has_regions"] and fp["dataset"]["ignore_label"] == 4 and fp["dataset"]["num_classes"] == 3
    whole, core, enh = (fp["classes"][k] for k in ("1", "2", "3"))
    assert (whole["name"], core["name"], enh["name"]) == ("whole", "core", "enh")
    assert whole["label"] == [1, 2, 3] and core["label"] == [2, 3] and enh["label"] == [3]
    annotated = 256 - 32                                   # the ignore rows are not annotated voxels
    assert whole["voxel_fraction"]["mean"] == pytest.approx(24 / annotated)
    assert whole["objects_per_case"]["mean"] == 2 and sorted(whole["major_object_size_voxels"].values()) == \
        pytest.approx(sorted(np.percentile([20, 20, 4, 4], [10, 50, 90])))
    assert whole["object_size_weighted_voxels"]["median"] == pytest.approx((20 ** 2 + 4 ** 2) / 24)
    assert core["objects_per_case"]["mean"] == 2 and core["voxel_fraction"]["mean"] == pytest.approx(8 / annotated)
    assert enh["absent_fraction"] == 1.0 and enh["regime"] == "absent" and enh["object_size_voxels"]["mean"] is None
    assert whole["foreground_share"]["mean"] == pytest.approx(1.0)  # ignore is not foreground


@pytest.mark.parametrize("name, classes", [("Dataset101_ISBIMembrane", 1), ("Dataset102_MontgomeryLungs", 1),
                                           ("Dataset103_Hippocampus", 2), ("Dataset104_AxonMyelin", 2),
                                           ("Dataset105_SpinalCordTiny", 1)])
def test_shared_datasets(name, classes):
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} not present")
    fp = compute_fingerprint(read_dataset(SHARED / name, max_cases=3), num_workers=2)
    check_schema(fp)
    d = fp["dataset"]
    assert d["num_classes"] == len(fp["classes"]) == classes and d["num_cases_measured"] == 3
    assert d["dim"] == (3 if name in ("Dataset103_Hippocampus", "Dataset105_SpinalCordTiny") else 2)
    for c in fp["classes"].values():
        assert 0 < c["voxel_fraction"]["mean"] < 0.5 and c["absent_fraction"] == 0.0
        assert c["objects_per_case"]["min"] >= 1 and 0 < c["boundary_to_volume"]["median"] <= 1
        assert 0 < c["bbox_extent"]["median"] <= 1
    if name == "Dataset104_AxonMyelin":
        assert all(c["objects_per_case"]["median"] > 50 for c in fp["classes"].values())
    # The regimes DESIGN.md's dataset table names: a thin connected network, a large structure, many objects.
    expected = {"Dataset101_ISBIMembrane": {"membrane": "tubular"}, "Dataset102_MontgomeryLungs": {"lungs": "large-structure"},
                "Dataset103_Hippocampus": {"anterior": "large-structure", "posterior": "large-structure"},
                "Dataset104_AxonMyelin": {"axon": "many-instances"},
                "Dataset105_SpinalCordTiny": {"cord": "large-structure"}}.get(name, {})
    for c in fp["classes"].values():
        assert c["regime"] == expected.get(c["name"], c["regime"]), c["regime_evidence"]
    # Axons sit inside their myelin sheaths (nested: region training is suggested); hippocampus halves lie side
    # by side, each mostly against the background (not nested).
    nested = fp["dataset"]["nested_labels"]
    assert [c["names"] for c in (nested or {}).get("chains", [])] == \
        ([["myelin", "axon"]] if name == "Dataset104_AxonMyelin" else [])
    if name == "Dataset105_SpinalCordTiny":
        assert d["anisotropy"] >= 1 and d["voxel_volume_unit"] == "mm^3"


def test_save_load_roundtrip_and_errors(squares, tmp_path):
    path = save_fingerprint(squares, tmp_path / "sub" / "fp.json")
    assert load_fingerprint(path) == json.loads(json.dumps(squares))
    for old in (1, 3):  # a version-1 file lacks the regimes and weighted sizes the prior reads
        save_fingerprint(dict(squares, autoloss_fingerprint_version=old), tmp_path / f"v{old}.json")
        with pytest.raises(AutolossError, match=f"v{old}.json: fingerprint version {old}, this autoloss reads version 2"):
            load_fingerprint(tmp_path / f"v{old}.json")
    with pytest.raises(AutolossError, match="missing.json: no such fingerprint file"):
        load_fingerprint(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(AutolossError, match="junk.json: not a fingerprint JSON"):
        load_fingerprint(tmp_path / "junk.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(AutolossError, match="not an autoloss fingerprint"):
        load_fingerprint(tmp_path / "other.json")


def test_table_lists_every_class(squares):
    from rich.console import Console

    table = fingerprint_table(squares)
    assert table.row_count == 2
    console = Console(record=True, width=80)
    console.print(table)
    text = console.export_text()
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in text and ".." not in text  # no header or value cut
    header = next(ln for ln in lines if "regime" in ln)
    assert header.split()[:2] == ["class", "regime"]  # regime first after the class name
    for c in squares["classes"].values():
        row = next(ln for ln in lines if ln.startswith(c["name"]))
        assert c["regime"] in row


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("damage, match", [
    ("shape", "case case_004: image case_004_0000.nii.gz has shape"),
    ("spacing", "case case_004: image case_004_0000.nii.gz has spacing"),
    ("undeclared", "case_004.nii.gz: label values \\[9\\] are not declared"),
    ("truncated", "case_004.nii.gz: (cannot be read|truncated)"),
])
def test_bad_case_fails_the_fingerprint_with_its_name(tmp_path, damage, match, workers):
    root = make_synthetic_dataset(tmp_path, dim=2, num_cases=8, shape=(32, 32))
    label = root / "labelsTr" / "case_004.nii.gz"
    arr = np.zeros((30, 32) if damage == "shape" else (32, 32), np.uint8)
    arr[:3, :3] = 9 if damage == "undeclared" else 1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([1.0, 2.0] if damage == "spacing" else [1.0, 1.0])
    sitk.WriteImage(img, str(label), True)
    if damage == "truncated":
        label.write_bytes(label.read_bytes()[:50])
    with pytest.raises(AutolossError, match=match):
        compute_fingerprint(read_dataset(root), num_workers=workers)


def test_mixed_2d_and_3d_labels_are_refused(tmp_path):
    root = make_synthetic_dataset(tmp_path, dim=2, num_cases=2, shape=(16, 16))
    for f in ("imagesTr/case_001_0000.nii.gz", "labelsTr/case_001.nii.gz"):
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 16, 16), np.uint8)), str(root / f), True)
    with pytest.raises(AutolossError, match="mix 2D and 3D"):
        compute_fingerprint(read_dataset(root), num_workers=1)


def test_fingerprint_feeds_the_prior(squares):
    # The prior reads these keys; a smoke check that the two stages agree on the schema.
    from autoloss.prior import class_features

    features = class_features(squares)
    assert set(features) == {"class1", "class2"}
    assert math.isclose(features["class2"]["absent"], 2 / 3)
