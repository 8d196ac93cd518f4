"""Read an nnU-Net v2 raw dataset (dataset.json, imagesTr/, labelsTr/) the way nnU-Net does, with one-line errors.

Case discovery mirrors ``nnunetv2.utilities.utils.get_filenames_of_train_images_and_targets``: a ``dataset`` dict
in dataset.json (case -> images, label; relative paths resolved against the dataset folder, ``$VARS`` expanded)
wins; otherwise every ``labelsTr/CASE<file_ending>`` needs its ``imagesTr/CASE_XXXX<file_ending>`` files, which
together hold the declared channels: one file per channel, or one RGB/RGBA natural image holding 3/4 of them.
A ``numTraining`` that disagrees with the cases found is a warning (``Dataset.warnings``), not an error: nnU-Net's
own fingerprint and planning use the cases on disk, and ``max_cases`` subsets are deliberate.

Files are read (autoloss/imagefiles.py) with the reader nnU-Net would pick (``reader_writer_registry``). Its
SimpleITK reader is mirrored with SimpleITK itself (ImageIO named, not probed), its natural-image reader with
PIL (what skimage.io uses); other readers (Tiff3DIO, Nibabel*, custom) run as nnU-Net's own classes. Image channels are only checked against their
label, so only their headers are read (NIfTI dim/pixdim straight from the header). Arrays come in nnU-Net's axis
order (z, y, x) / (y, x) with spacing in the same order. 2D natural images (PNG, BMP, TIF) get spacing (999, 1, 1)
in nnU-Net; here they are 2D arrays with spacing (1, 1), so physical sizes equal pixel counts. JPEG is refused, as
nnU-Net refuses it (lossy). Label files must hold non-negative integers declared in dataset.json.
Image voxel data is not decoded here (headers only, plus the byte-count check of ``autoloss.filecheck`` at every
read, which catches a file cut short); NaN image values and damage only decoding reveals are caught by
``autoloss verify`` (``autoloss.verification``), which every search runs first. A label is always decoded.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.errors import AutolossError
from autoloss.imagefiles import (NATURAL_READER, SITK_READER, ImageHeader, _read_label_array, _sitk_header,
                                 read_image_header)

_DATASET_DIR = re.compile(r"^Dataset(\d{3,})_(.+)$")


@dataclass
class Case:
    identifier: str
    images: list[Path]
    label: Path


@dataclass
class Dataset:
    root: Path
    id: int | None
    name: str
    dataset_json: dict
    channel_names: dict
    labels: dict
    file_ending: str
    ignore_label: int | None
    has_regions: bool
    label_values: list[int]
    cases: list[Case]
    num_training: int
    regions_class_order: list | None = None
    reader: str = SITK_READER            # nnU-Net reader class name that nnU-Net would use for this dataset
    warnings: list[str] = field(default_factory=list)

    @property
    def foreground_values(self) -> list[int]:
        """Declared label values that are classes: not background, not the ignore label."""
        return [v for v in self.label_values if v != 0 and v != self.ignore_label]


def resolve_dataset(arg: str | Path) -> Path:
    """A dataset folder, or an id/name ("103", "Dataset103_Hippocampus", "Hippocampus") under $nnUNet_raw."""
    path = Path(os.path.expanduser(str(arg)))
    if path.is_dir():
        return path.resolve()
    if path.name == "dataset.json" and path.is_file():
        return path.parent.resolve()
    text = str(arg)
    if os.sep in text or text.startswith(".") or path.exists():
        raise AutolossError(f"{text}: no such dataset folder (give an nnU-Net raw dataset folder, or a dataset id "
                            "with nnUNet_raw set)")
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise AutolossError(f"{text}: not a folder, and nnUNet_raw is unset, so the dataset id/name cannot be "
                            "looked up (set nnUNet_raw or pass the dataset folder)")
    raw_dir = Path(raw)
    if not raw_dir.is_dir():
        raise AutolossError(f"{text}: nnUNet_raw={raw} is not a folder (fix nnUNet_raw or pass the dataset folder)")
    folders = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and _DATASET_DIR.match(p.name))
    if text.startswith("Dataset"):
        hits = [f for f in folders if f == text]
    elif text.isdigit():
        hits = [f for f in folders if int(_DATASET_DIR.match(f).group(1)) == int(text)]
    else:
        hits = [f for f in folders if _DATASET_DIR.match(f).group(2).lower() == text.lower()]
    if len(hits) > 1:
        raise AutolossError(f"{text}: several datasets match in nnUNet_raw={raw}: {', '.join(hits)} "
                            "(pass the full DatasetXXX_Name)")
    if not hits:
        known = ", ".join(folders) if folders else "none"
        raise AutolossError(f"{text}: no such dataset in nnUNet_raw={raw} (found: {known})")
    return (raw_dir / hits[0]).resolve()


def _load_dataset_json(root: Path) -> dict:
    dj_path = root / "dataset.json"
    if not dj_path.is_file():
        if not (root / "imagesTr").is_dir() and not (root / "labelsTr").is_dir():
            raise AutolossError(f"{root}: not an nnU-Net raw dataset (no dataset.json, imagesTr/ or labelsTr/); "
                                "pass a DatasetXXX_Name folder")
        raise AutolossError(f"{dj_path}: missing; an nnU-Net raw dataset needs dataset.json with channel_names, "
                            "labels and file_ending")
    try:
        dj = json.loads(dj_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AutolossError(f"{dj_path}: malformed JSON ({e}); fix the file") from None
    if not isinstance(dj, dict):
        raise AutolossError(f"{dj_path}: must hold a JSON object with channel_names, labels and file_ending")
    missing = [k for k in ("channel_names", "labels", "file_ending") if k not in dj]
    if "channel_names" in missing and "modality" in dj:
        raise AutolossError(f"{dj_path}: nnU-Net v1 format ('modality'); convert it with "
                            "nnUNetv2_convert_old_nnUNet_dataset")
    if missing:
        raise AutolossError(f"{dj_path}: missing key(s) {', '.join(missing)}; add them (see nnU-Net's "
                            "dataset_format.md)")
    channels = dj["channel_names"]
    if not isinstance(channels, dict) or not channels or not all(str(k).isdigit() for k in channels):
        raise AutolossError(f"{dj_path}: channel_names must map channel indices to names, like {{\"0\": \"CT\"}}")
    if not isinstance(dj["labels"], dict):
        raise AutolossError(f"{dj_path}: labels must be an object like {{\"background\": 0, \"tumour\": 1}}")
    if not isinstance(dj["file_ending"], str) or not dj["file_ending"].startswith("."):
        raise AutolossError(f"{dj_path}: file_ending must be a string like \".nii.gz\"")
    return dj


def _parse_labels(labels: dict, dj_path: Path) -> tuple[list[int], int | None, bool]:
    """Declared values, ignore label and has_regions, with nnU-Net's LabelManager rules."""
    def as_int(v: Any, key: str) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 0:
            raise AutolossError(f"{dj_path}: label {key!r} must be a non-negative integer or a list of them, "
                                f"got {v!r}")
        return int(v)

    if labels.get("background", None) != 0 or isinstance(labels.get("background"), bool):
        raise AutolossError(f"{dj_path}: labels must declare \"background\": 0 (got "
                            f"{labels.get('background', 'no background')!r})")
    values: set[int] = set()
    has_regions = False
    for key, v in labels.items():
        if key == "ignore":
            continue
        if isinstance(v, (list, tuple)):
            if not v:
                raise AutolossError(f"{dj_path}: label {key!r} is an empty list")
            values.update(as_int(x, key) for x in v)
            has_regions |= len(v) > 1
        else:
            values.add(as_int(v, key))
    ignore = labels.get("ignore")
    if ignore is not None:
        ignore = as_int(ignore, "ignore")  # one integer, never a region
        if ignore != max(values) + 1:
            raise AutolossError(f"{dj_path}: the ignore label must be the highest label value ({max(values) + 1}), "
                                f"got {ignore} (nnU-Net requires this)")
        values.add(ignore)
    if sorted(values) != list(range(len(values))):
        gaps = sorted(set(range(max(values) + 1)) - values)
        raise AutolossError(f"{dj_path}: label values must be consecutive 0, 1, 2, ... (nnU-Net requires it); "
                            f"missing {gaps}")
    return sorted(values), ignore, has_regions


def _discover_cases(root: Path, dj: dict, ending: str) -> list[Case]:
    channels = sorted(int(k) for k in dj["channel_names"])
    if "dataset" in dj:  # explicit file lists (nnU-Net's alternative to the imagesTr/labelsTr convention)
        def resolve(p: str) -> Path:
            return (root / os.path.expandvars(p)).resolve()  # an absolute path stays as it is
        if not isinstance(dj["dataset"], dict) or not dj["dataset"]:
            raise AutolossError(f"{root / 'dataset.json'}: 'dataset' must be a non-empty object of cases")
        cases = []
        for cid, entry in sorted(dj["dataset"].items()):
            if not isinstance(entry, dict) or "label" not in entry or "images" not in entry:
                raise AutolossError(f"{root / 'dataset.json'}: dataset entry {cid!r} needs 'images' and 'label'")
            case = Case(cid, [resolve(i) for i in entry["images"]], resolve(entry["label"]))
            for f in [case.label, *case.images]:
                if not f.is_file():
                    raise AutolossError(f"{f}: listed for case {cid} in dataset.json but missing")
            if len(case.images) != len(channels):
                raise AutolossError(f"case {cid}: {len(case.images)} image(s) listed in dataset.json, "
                                    f"channel_names declares {len(channels)}")
            cases.append(case)
        return cases
    labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
    if not labels_dir.is_dir() or not images_dir.is_dir():
        raise AutolossError(f"{root}: needs imagesTr/ and labelsTr/ folders (nnU-Net raw format)")
    label_ids = sorted(f.name[:-len(ending)] for f in labels_dir.iterdir()
                       if f.name.endswith(ending) and not f.name.startswith("."))
    if not label_ids:
        raise AutolossError(f"{labels_dir}: no label files ending in {ending} (empty labelsTr, or file_ending "
                            "in dataset.json is wrong)")
    image_files = {f.name for f in images_dir.iterdir() if f.name.endswith(ending)}
    pattern = re.compile(r"^(.*)_\d{4}" + re.escape(ending) + "$")
    unlabelled = sorted({m.group(1) for m in map(pattern.match, image_files) if m} - set(label_ids))
    if unlabelled:
        raise AutolossError(f"{labels_dir / (unlabelled[0] + ending)}: missing label for image case "
                            f"{unlabelled[0]} ({len(unlabelled)} case(s) without label); add it or remove the images")
    # As nnU-Net: a case's images are all files CASE_XXXX<ending>, sorted. One file may hold several channels
    # (RGB PNG, 4D NIfTI), so the channel count is checked against the files' headers (_check_channels).
    by_case: dict[str, list[str]] = {}
    for name in sorted(image_files):
        m = pattern.match(name)
        if m:
            by_case.setdefault(m.group(1), []).append(name)
    cases = []
    for cid in label_ids:
        names = by_case.get(cid, [])  # none: check_channels names the missing file
        cases.append(Case(cid, [images_dir / n for n in names], labels_dir / f"{cid}{ending}"))
    return cases


def check_channels(case: Case, dataset: Dataset, headers: list[ImageHeader] | None = None) -> None:
    """The case's image files must hold exactly the declared channels, the same number in each file (nnU-Net
    stacks the files of a case and counts the channels of the stack)."""
    declared = len(dataset.channel_names)
    if headers is None:
        if len(case.images) == declared and dataset.reader not in (SITK_READER, NATURAL_READER):
            return  # no header-only path for other readers: check_case_geometry counts them when it reads
        headers = [read_image_header(f, dataset.reader) for f in case.images]
    counts = [h.channels for h in headers]
    if dataset.reader == SITK_READER and max(counts, default=1) > 1:
        f = case.images[counts.index(max(counts))]
        raise AutolossError(f"{f}: a 4D file holding {max(counts)} channels; nnU-Net's integrity check refuses "
                            "multi-channel files (its origin check fails on them): save each channel as its own "
                            f"file {case.identifier}_XXXX{dataset.file_ending}")
    total = sum(counts)
    if total < declared and all(c == 1 for c in counts):
        have = {f.name for f in case.images}
        names = (f"{case.identifier}_{c:04d}{dataset.file_ending}" for c in range(declared))
        missing = next(n for n in names if n not in have)
        folder = case.images[0].parent if case.images else dataset.root / "imagesTr"
        raise AutolossError(f"{folder / missing}: missing channel file for case {case.identifier} "
                            f"(channel_names declares {declared} channel(s), its file(s) hold {total})")
    if total != declared or len(set(counts)) > 1:
        files = ", ".join(f"{f.name}: {c}" for f, c in zip(case.images, counts))
        raise AutolossError(f"case {case.identifier}: its image files hold {total} channel(s) ({files}) but "
                            f"channel_names declares {declared}" + ("; the files of a case must all have the same "
                            "channel count" if len(set(counts)) > 1 else "") + " (as nnU-Net requires)")


def _pick_reader(dj: dict, example: Path) -> str:
    """The nnU-Net reader class name nnU-Net would use (first registered class for the ending that reads the
    example), decided from the example's header so no voxels are read."""
    from nnunetv2.imageio.reader_writer_registry import (LIST_OF_IO_CLASSES,
                                                         determine_reader_writer_from_dataset_json)
    if dj.get("overwrite_image_reader_writer", "None") != "None":
        return determine_reader_writer_from_dataset_json(dj, str(example), verbose=False).__name__
    ending = dj["file_ending"].lower()
    names = [rw.__name__ for rw in LIST_OF_IO_CLASSES if ending in rw.supported_file_endings]
    if not names:
        raise AutolossError(f"file_ending {dj['file_ending']!r}: nnU-Net has no reader for it (use .nii.gz, .nrrd, "
                            ".mha, .png, .bmp, .tif)")
    if names[0] == NATURAL_READER:  # nnU-Net falls through to Tiff3DIO when the 2D reader fails on a 3D TIFF
        return NATURAL_READER if len(_sitk_header(example).shape) == 2 or len(names) == 1 else names[1]
    if names[0] == SITK_READER:
        read_image_header(example, SITK_READER)  # an unreadable first file fails here with its name
    return names[0]


def read_dataset(arg: str | Path, max_cases: int | None = None) -> Dataset:
    """Read and validate a raw dataset; ``max_cases`` keeps the first M cases (sorted by identifier)."""
    root = resolve_dataset(arg)
    dj = _load_dataset_json(root)
    dj_path = root / "dataset.json"
    ending = dj["file_ending"]
    values, ignore, has_regions = _parse_labels(dj["labels"], dj_path)
    if has_regions and "regions_class_order" not in dj:
        raise AutolossError(f"{dj_path}: region labels (lists) need regions_class_order (nnU-Net requires it)")
    cases = _discover_cases(root, dj, ending)
    warnings = [f"{dj_path}: numTraining is {dj['numTraining']} but {len(cases)} labelled cases were found; "
                "using the cases found"] if dj.get("numTraining", len(cases)) != len(cases) else []
    num_training = len(cases)
    if max_cases is not None and max_cases < 1:
        raise AutolossError(f"--max-cases must be at least 1, got {max_cases}")
    cases = cases[:max_cases]
    m = _DATASET_DIR.match(root.name)
    ds = Dataset(root=root, id=int(m.group(1)) if m else None, name=root.name, dataset_json=dj,
                   channel_names={str(k): v for k, v in dj["channel_names"].items()}, labels=dict(dj["labels"]),
                   file_ending=ending, ignore_label=ignore, has_regions=has_regions, label_values=values,
                   cases=cases, num_training=num_training, regions_class_order=dj.get("regions_class_order"),
                   reader=SITK_READER, warnings=warnings)
    example = next((c.images[0] for c in cases if c.images), None)
    if example is None:
        raise AutolossError(f"{root / 'imagesTr' / (cases[0].identifier + '_0000' + ending)}: missing channel file "
                            f"for case {cases[0].identifier} (no image files at all)")
    ds.reader = _pick_reader(dj, example)
    declared = len(ds.channel_names)
    for case in ds.cases:  # cheap: headers only where the file count alone does not settle it (RGB, 4D files)
        if len(case.images) != declared or case is ds.cases[0]:
            check_channels(case, ds)
    return ds


def as_integer_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    """Integer labels in the smallest unsigned type (cc3d and bincount are fastest on those)."""
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise AutolossError(f"{path}: label contains NaN/inf values; labels must be integers")
        if not np.array_equal(arr, np.rint(arr)):
            bad = np.unique(arr[arr != np.rint(arr)])[:5]
            raise AutolossError(f"{path}: non-integer label values (e.g. {', '.join(f'{v:g}' for v in bad)}); "
                                "labels must be integers (re-save the label with an integer type, "
                                "no interpolation)")
    elif arr.dtype.kind not in "iub":
        raise AutolossError(f"{path}: unsupported label pixel type {arr.dtype}; labels must be integers")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0:
        raise AutolossError(f"{path}: negative label value {lo}; labels must be the non-negative values declared "
                            "in dataset.json")
    dtype = np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.uint32
    return arr.astype(dtype, copy=False)


def all_background_error(root: Path, case_ids: list[str]) -> AutolossError:
    """Every label read holds only background: nothing to segment (nnU-Net's planner fails on it later)."""
    which = f"all {len(case_ids)} label files" if len(case_ids) > 1 else f"the only label file ({case_ids[0]})"
    return AutolossError(f"{root}: {which} hold only background (0): there is nothing to segment; check that "
                         "labelsTr holds the annotations (not empty masks)")


def check_label_values(present: np.ndarray | list[int], dataset: Dataset, path: Path) -> None:
    """Raise when a label file holds values that dataset.json does not declare."""
    undeclared = sorted(set(int(v) for v in present) - set(dataset.label_values))
    if undeclared:
        raise AutolossError(f"{path}: label values {undeclared} are not declared in dataset.json labels "
                            f"(declared: {dataset.label_values}); declare them or fix the label file")


def check_case_geometry(case: Case, dataset: Dataset, shape: tuple[int, ...] | None = None,
                        spacing: tuple[float, ...] | None = None) -> None:
    """Every channel of ``case`` must match the label's shape and spacing. With SimpleITK / natural-image data
    both sides come from file headers (same parser, so the same conventions); otherwise pass the label's
    ``shape`` and ``spacing`` as read."""
    if dataset.reader in (SITK_READER, NATURAL_READER) or shape is None:
        ref = read_image_header(case.label, dataset.reader)
        shape, spacing = ref.shape, ref.spacing
    headers = [read_image_header(img, dataset.reader) for img in case.images]
    check_channels(case, dataset, headers)
    for img, h in zip(case.images, headers):
        if tuple(h.shape) != tuple(shape):
            raise AutolossError(f"case {case.identifier}: image {img.name} has shape {list(h.shape)} but label "
                                f"{case.label.name} has {list(shape)}; image and label must cover the same grid")
        if not np.allclose(h.spacing, spacing):
            raise AutolossError(f"case {case.identifier}: image {img.name} has spacing "
                                f"{[round(s, 6) for s in h.spacing]} but label {case.label.name} has "
                                f"{[round(s, 6) for s in spacing]}; copy the image's geometry into the label")


def read_case(case: Case, dataset: Dataset) -> tuple[np.ndarray, tuple[float, ...]]:
    """The validated label of ``case`` (integers, declared values, geometry matching every channel)."""
    arr, spacing = read_label(case, dataset)
    check_case_geometry(case, dataset, arr.shape, spacing)
    return arr, spacing


def read_label(case: Case, dataset: Dataset, check_values: bool = True) -> tuple[np.ndarray, tuple[float, ...]]:
    """The label of ``case`` as a non-negative integer array and its spacing, both in array axis order.
    ``check_values=False`` skips the declared-values check for callers that do it from their own statistics."""
    arr, spacing = _read_label_array(case.label, dataset.reader)
    arr = as_integer_labels(arr, case.label)
    if check_values:
        hi = int(arr.max()) if arr.size else 0
        check_label_values(np.flatnonzero(np.bincount(arr.ravel(), minlength=hi + 1)), dataset, case.label)
    return arr, tuple(float(s) for s in spacing)
