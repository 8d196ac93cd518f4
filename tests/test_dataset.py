"""Dataset reading: the five shared datasets, id resolution, and every bad input as a one-line AutolossError."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from autoloss.dataset import read_case, read_dataset, read_image_header, read_label, resolve_dataset
from autoloss.errors import AutolossError
from autoloss.synthetic import make_synthetic_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SHARED_DIMS = {"Dataset101_ISBIMembrane": 2, "Dataset102_MontgomeryLungs": 2, "Dataset103_Hippocampus": 3,
               "Dataset104_AxonMyelin": 2, "Dataset105_SpinalCordTiny": 3}


def shared(name: str) -> Path:
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} not present")
    return SHARED / name


def write_label(path: Path, arr: np.ndarray, spacing=None) -> None:
    img = sitk.GetImageFromArray(arr)
    if spacing is not None:
        img.SetSpacing(list(spacing)[::-1])
    sitk.WriteImage(img, str(path), True)


@pytest.fixture
def ds2d(tmp_path) -> Path:
    return make_synthetic_dataset(tmp_path, dim=2, num_cases=4, shape=(32, 32), num_classes=2, seed=1)


def raises(match: str):
    return pytest.raises(AutolossError, match=match)


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- shared datasets

@pytest.mark.parametrize("name", sorted(SHARED_DIMS))
def test_reads_shared_dataset(name):
    ds = read_dataset(shared(name), max_cases=2)
    assert ds.name == name and ds.id == int(name[7:10]) and len(ds.cases) == 2
    assert ds.num_training == json.loads((ds.root / "dataset.json").read_text())["numTraining"]
    assert ds.label_values[0] == 0 and not ds.has_regions and ds.ignore_label is None
    for case in ds.cases:
        label, spacing = read_case(case, ds)
        assert label.ndim == SHARED_DIMS[name] == len(spacing)
        assert np.issubdtype(label.dtype, np.integer)
        assert set(np.unique(label).tolist()) <= set(ds.label_values)
        assert all(s > 0 for s in spacing)
    if SHARED_DIMS[name] == 2:
        assert ds.reader == "NaturalImage2DIO" and spacing == (1.0, 1.0)


@pytest.mark.parametrize("name", ["Dataset102_MontgomeryLungs", "Dataset105_SpinalCordTiny"])
def test_label_and_spacing_match_nnunet_reader(name):
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    ds = read_dataset(shared(name), max_cases=1)
    case = ds.cases[0]
    ours, spacing = read_label(case, ds)
    seg, props = recursive_find_reader_writer_by_name(ds.reader)().read_seg(str(case.label))
    theirs = seg[0, 0] if ours.ndim == 2 else seg[0]
    np.testing.assert_array_equal(ours, theirs)
    expected = (1.0, 1.0) if ours.ndim == 2 else tuple(props["spacing"])
    np.testing.assert_allclose(spacing, expected)
    header = read_image_header(case.images[0], ds.reader)
    assert header.shape == ours.shape and np.allclose(header.spacing, spacing)


def test_dataset_id_resolution_through_nnunet_raw(monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(shared("Dataset103_Hippocampus").parent))
    expected = (SHARED / "Dataset103_Hippocampus").resolve()
    for arg in ("103", "Dataset103_Hippocampus", "Hippocampus", "hippocampus"):
        assert resolve_dataset(arg) == expected
    assert read_dataset("103", max_cases=1).id == 103


# ---------------------------------------------------------------- synthetic, happy paths

def test_resolve_synthetic_by_id_name_and_folder(tmp_path, monkeypatch):
    root = make_synthetic_dataset(tmp_path / "raw", num_cases=2, dataset_id=7, name="Toy")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    for arg in ("7", "007", "Dataset007_Toy", "toy", root, str(root), root / "dataset.json"):
        assert resolve_dataset(arg) == root.resolve()


def test_max_cases_takes_first_sorted_and_keeps_dataset_count(ds2d):
    ds = read_dataset(ds2d, max_cases=2)
    assert [c.identifier for c in ds.cases] == ["case_000", "case_001"] and ds.num_training == 4
    assert ds.cases[0].images == [ds2d / "imagesTr" / "case_000_0000.nii.gz"]
    assert ds.cases[0].label == ds2d / "labelsTr" / "case_000.nii.gz"


def test_num_training_mismatch_is_a_warning(ds2d):
    dj = json.loads((ds2d / "dataset.json").read_text())
    dj["numTraining"] = 9
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    ds = read_dataset(ds2d)
    assert len(ds.cases) == ds.num_training == 4
    assert ds.warnings and "numTraining is 9" in ds.warnings[0]


def test_dataset_key_lists_files_like_nnunet(ds2d, tmp_path):
    dj = json.loads((ds2d / "dataset.json").read_text())
    dj["dataset"] = {"a": {"images": ["imagesTr/case_001_0000.nii.gz"], "label": "labelsTr/case_001.nii.gz"},
                     "b": {"images": [str(ds2d / "imagesTr/case_002_0000.nii.gz")],
                           "label": str(ds2d / "labelsTr/case_002.nii.gz")}}
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    ds = read_dataset(ds2d)
    assert [c.identifier for c in ds.cases] == ["a", "b"]
    assert read_case(ds.cases[0], ds)[0].shape == (32, 32)
    dj["dataset"]["a"]["label"] = "labelsTr/nope.nii.gz"
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    with raises("nope.nii.gz"):
        read_dataset(ds2d)


def test_region_and_ignore_labels(ds2d):
    dj = json.loads((ds2d / "dataset.json").read_text())
    dj["labels"] = {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}
    dj["regions_class_order"] = [1, 2]
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    ds = read_dataset(ds2d)
    assert ds.has_regions and ds.ignore_label == 3 and ds.label_values == [0, 1, 2, 3]
    assert ds.foreground_values == [1, 2] and ds.regions_class_order == [1, 2]
    del dj["regions_class_order"]
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    with raises("regions_class_order"):
        read_dataset(ds2d)
    dj["labels"] = {"background": 0, "a": 1, "ignore": 5}
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    with raises("ignore label must be the highest"):
        read_dataset(ds2d)


def test_png_dataset_is_2d_with_unit_spacing(tmp_path):
    root = make_synthetic_dataset(tmp_path, dim=2, num_cases=2, file_ending=".png", spacing=(0.5, 0.5))
    ds = read_dataset(root)
    assert ds.reader == "NaturalImage2DIO"
    label, spacing = read_case(ds.cases[0], ds)
    assert label.shape == (64, 64) and spacing == (1.0, 1.0) and label.dtype == np.uint8


# ---------------------------------------------------------------- bad inputs: one line, naming the file/case

def test_not_a_dataset_and_missing_folder(tmp_path):
    with raises("not an nnU-Net raw dataset") as e:
        read_dataset(tmp_path)
    assert str(tmp_path) in one_line(e)
    with raises("no such dataset folder"):
        read_dataset(tmp_path / "missing")


def test_unknown_dataset_id(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with raises("nnUNet_raw is unset"):
        read_dataset("123")
    make_synthetic_dataset(tmp_path, num_cases=1)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    with raises(f"123: no such dataset in nnUNet_raw={tmp_path}.*Dataset990_Synthetic") as e:
        read_dataset("123")
    one_line(e)


def test_missing_dataset_json(ds2d):
    (ds2d / "dataset.json").unlink()
    with raises("dataset.json: missing") as e:
        read_dataset(ds2d)
    assert str(ds2d / "dataset.json") in one_line(e)


@pytest.mark.parametrize("content, match", [
    ("{not json", "malformed JSON"),
    ('{"labels": {"background": 0}, "file_ending": ".nii.gz"}', "missing key.*channel_names"),
    ('{"channel_names": {"0": "x"}, "labels": {"foreground": 1}, "file_ending": ".nii.gz"}', "background"),
    ('{"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1.5}, "file_ending": ".nii.gz"}',
     "non-negative integer"),
    ('[1, 2]', "JSON object"),
])
def test_malformed_dataset_json(ds2d, content, match):
    (ds2d / "dataset.json").write_text(content)
    with raises(match) as e:
        read_dataset(ds2d)
    assert "dataset.json" in one_line(e)


def test_missing_channel_file(ds2d):
    (ds2d / "imagesTr" / "case_001_0000.nii.gz").unlink()
    with raises("case_001_0000.nii.gz: missing channel file for case case_001") as e:
        read_dataset(ds2d)
    one_line(e)
    dj = json.loads((ds2d / "dataset.json").read_text())
    dj["channel_names"] = {"0": "a", "1": "b"}
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    with raises("case_000_0001.nii.gz: missing channel file"):
        read_dataset(ds2d)


def test_image_without_label(ds2d):
    (ds2d / "labelsTr" / "case_003.nii.gz").unlink()
    with raises("case_003.nii.gz: missing label for image case case_003"):
        read_dataset(ds2d)


def test_empty_labels_tr(ds2d):
    for f in (ds2d / "labelsTr").iterdir():
        f.unlink()
    with raises("labelsTr: no label files") as e:
        read_dataset(ds2d)
    one_line(e)


def test_shape_mismatch(ds2d):
    write_label(ds2d / "labelsTr" / "case_002.nii.gz", np.zeros((30, 32), np.uint8))
    ds = read_dataset(ds2d)
    with raises("case case_002: image case_002_0000.nii.gz has shape \\[32, 32\\] but label") as e:
        read_case(ds.cases[2], ds)
    one_line(e)


def test_spacing_mismatch(ds2d):
    write_label(ds2d / "labelsTr" / "case_001.nii.gz", np.zeros((32, 32), np.uint8), spacing=(2.0, 1.0))
    ds = read_dataset(ds2d)
    with raises("case case_001: image case_001_0000.nii.gz has spacing"):
        read_case(ds.cases[1], ds)


def test_truncated_and_unreadable_files(ds2d):
    label = ds2d / "labelsTr" / "case_001.nii.gz"
    label.write_bytes(label.read_bytes()[:60])
    ds = read_dataset(ds2d)
    with raises("case_001.nii.gz: (cannot be read|truncated)") as e:
        read_label(ds.cases[1], ds)
    one_line(e)
    (ds2d / "imagesTr" / "case_002_0000.nii.gz").write_bytes(b"")
    with raises("case_002_0000.nii.gz: cannot be read"):
        read_case(ds.cases[2], ds)


def test_unreadable_first_image_fails_in_read_dataset(ds2d):
    (ds2d / "imagesTr" / "case_000_0000.nii.gz").write_bytes(b"garbage")
    with raises("case_000_0000.nii.gz: cannot be read"):
        read_dataset(ds2d)


def test_non_integer_label_values(ds2d):
    arr = np.zeros((32, 32), np.float32)
    arr[3:6, 3:6] = 0.5
    write_label(ds2d / "labelsTr" / "case_000.nii.gz", arr)
    ds = read_dataset(ds2d)
    with raises("case_000.nii.gz: non-integer label values \\(e.g. 0.5\\)") as e:
        read_label(ds.cases[0], ds)
    one_line(e)


def test_integer_valued_float_labels_are_fine(ds2d):
    arr = np.zeros((32, 32), np.float32)
    arr[3:6, 3:6] = 2.0
    write_label(ds2d / "labelsTr" / "case_000.nii.gz", arr)
    ds = read_dataset(ds2d)
    label, _ = read_label(ds.cases[0], ds)
    assert label.dtype == np.uint8 and label.max() == 2


def test_undeclared_label_values(ds2d):
    arr = np.zeros((32, 32), np.uint8)
    arr[1:4, 1:4] = 7
    write_label(ds2d / "labelsTr" / "case_003.nii.gz", arr)
    ds = read_dataset(ds2d)
    with raises("case_003.nii.gz: label values \\[7\\] are not declared in dataset.json") as e:
        read_label(ds.cases[3], ds)
    assert "declare them or fix" in one_line(e)


def test_rgb_png_label_is_refused(tmp_path):
    from PIL import Image

    root = make_synthetic_dataset(tmp_path, dim=2, num_cases=2, file_ending=".png")
    Image.new("RGB", (64, 64)).save(root / "labelsTr" / "case_001.png")
    ds = read_dataset(root)
    with raises("case_001.png: a label file must be single-channel"):
        read_label(ds.cases[1], ds)


def test_unsupported_file_ending(ds2d):
    dj = json.loads((ds2d / "dataset.json").read_text())
    dj["file_ending"] = ".jpg"
    (ds2d / "dataset.json").write_text(json.dumps(dj))
    for f in [*(ds2d / "imagesTr").iterdir(), *(ds2d / "labelsTr").iterdir()]:
        f.rename(f.with_name(f.name.replace(".nii.gz", ".jpg")))
    with raises("nnU-Net has no reader"):
        read_dataset(ds2d)
