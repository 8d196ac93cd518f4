"""Synthetic nnU-Net raw datasets: ellipse/ellipsoid objects per class on a noisy background.

Each foreground class k gets ``objects_per_case`` separate blobs per case whose total size is ``foreground_ratio``
of the image (in the cases where the class is present), and image intensity ``k`` above a noisy background, so a
tiny nnU-Net training can learn it. Objects never touch (a one-voxel gap), so connected-component counts equal
``objects_per_case``. Written as NIfTI through SimpleITK by default so spacing is honoured; ``.png`` (2D only),
``.nrrd`` and ``.mha`` work too. Deterministic for a given seed. Used by the demo and the unit tests.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from autoloss.errors import AutolossError

_MARKER = "autoloss_synthetic"


def _per_class(value, num_classes: int, what: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * num_classes
    if len(values) != num_classes:
        raise AutolossError(f"{what}: {len(values)} value(s) given for {num_classes} class(es)")
    return values


def _ellipsoid(size: float, dim: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean ellipse/ellipsoid of about ``size`` voxels with random axis ratios (0.7-1.4)."""
    ratios = rng.uniform(0.7, 1.4, dim)
    ratios /= np.prod(ratios) ** (1 / dim)
    unit = math.pi if dim == 2 else 4 / 3 * math.pi
    scale = (size / unit) ** (1 / dim)
    mask = np.ones((1,) * dim, bool)
    for _ in range(6):  # a few fixed-point steps so the discrete count lands on the requested size
        radii = np.maximum(scale * ratios, 0.5)
        half = np.ceil(radii).astype(int)
        grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
        mask = sum((g / r) ** 2 for g, r in zip(grids, radii)) <= 1.0
        count = int(mask.sum())
        if abs(count - size) <= max(1.0, 0.01 * size):
            break
        scale *= (size / max(count, 1)) ** (1 / dim)
    return mask


def _place(canvas: np.ndarray, occupied: np.ndarray, mask: np.ndarray, value: int, rng, where: str) -> None:
    """Put ``mask`` where neither it nor its one-voxel rim overlaps ``occupied`` (so objects stay separate)."""
    from scipy.ndimage import binary_dilation

    if any(m > s for m, s in zip(mask.shape, canvas.shape)):
        raise AutolossError(f"{where}: an object of {int(mask.sum())} voxels does not fit in shape "
                            f"{list(canvas.shape)}; lower foreground_ratio or raise objects_per_case/shape")
    rim = binary_dilation(np.pad(mask, 1), structure=np.ones((3,) * mask.ndim, bool))  # 26/8-conn. gap
    for _ in range(500):
        corner = [int(rng.integers(0, s - m + 1)) for s, m in zip(canvas.shape, mask.shape)]
        box = tuple(slice(max(c - 1, 0), min(c + m + 1, s)) for c, m, s in zip(corner, mask.shape, canvas.shape))
        rim_box = rim[tuple(slice(1 - (c - b.start), 1 - (c - b.start) + (b.stop - b.start))
                            for c, b in zip(corner, box))]
        if not (occupied[box] & rim_box).any():
            target = tuple(slice(c, c + m) for c, m in zip(corner, mask.shape))
            canvas[target][mask] = value
            occupied[target] |= mask
            return
    raise AutolossError(f"{where}: could not place non-touching objects (image too crowded); lower "
                        "foreground_ratio or objects_per_case, or use a larger shape")


def _write(arr: np.ndarray, path: Path, spacing: Sequence[float], is_label: bool) -> None:
    import SimpleITK as sitk

    if is_label:
        arr = arr.astype(np.uint8)
    elif path.name.endswith(".png"):  # PNG holds 8-bit grey: map the float image into 0..255
        arr = np.clip(arr * 40 + 60, 0, 255).astype(np.uint8)
    else:
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    if not path.name.endswith(".png"):
        img.SetSpacing([float(s) for s in spacing][::-1])
    sitk.WriteImage(img, str(path), True)


def make_synthetic_dataset(out_dir: str | Path, *, dim: int = 2, num_cases: int = 8,
                           shape: Sequence[int] | None = None, num_classes: int = 1,
                           foreground_ratio: float | Sequence[float] = 0.05,
                           objects_per_case: int | Sequence[int] = 2, object_size: float | None = None,
                           absent_fraction: float | Sequence[float] = 0.0, spacing: Sequence[float] | None = None,
                           noise: float = 0.3, seed: int = 0, dataset_id: int = 990, name: str = "Synthetic",
                           file_ending: str = ".nii.gz") -> Path:
    """Write ``out_dir/DatasetXXX_Name`` and return its path.

    ``foreground_ratio`` (per class, or one value for all) is the class's voxel fraction in every case where it is
    present; ``absent_fraction`` of the cases (rounded) lack the class. ``object_size`` (voxels) overrides the
    size derived from the ratio (ratio * voxels / objects). A folder written earlier by this function is replaced.
    """
    if dim not in (2, 3):
        raise AutolossError(f"dim must be 2 or 3, got {dim}")
    shape = tuple(int(s) for s in (shape or ((64, 64) if dim == 2 else (32, 32, 32))))
    spacing = tuple(float(s) for s in (spacing or (1.0,) * dim))
    if len(shape) != dim or len(spacing) != dim:
        raise AutolossError(f"shape {list(shape)} and spacing {list(spacing)} must have {dim} entries (dim={dim})")
    if file_ending not in (".nii.gz", ".nrrd", ".mha", ".png") or (file_ending == ".png" and dim != 2):
        raise AutolossError(f"file_ending {file_ending!r}: use .nii.gz, .nrrd or .mha (or .png for 2D)")
    if num_classes < 1 or num_cases < 1:
        raise AutolossError("num_classes and num_cases must be at least 1")
    ratios = [float(r) for r in _per_class(foreground_ratio, num_classes, "foreground_ratio")]
    counts = [int(n) for n in _per_class(objects_per_case, num_classes, "objects_per_case")]
    absent = [float(a) for a in _per_class(absent_fraction, num_classes, "absent_fraction")]
    if sum(ratios) >= 0.8 or min(ratios) <= 0 or min(counts) < 1:
        raise AutolossError(f"foreground_ratio {ratios} must be > 0 and sum below 0.8; objects_per_case >= 1")

    root = Path(out_dir) / f"Dataset{dataset_id:03d}_{name}"
    if root.exists():
        previous = root / "dataset.json"
        if not (previous.is_file() and _MARKER in previous.read_text()):
            raise AutolossError(f"{root}: exists and was not made by make_synthetic_dataset; choose another "
                                "out_dir or dataset_id")
        shutil.rmtree(root)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({_MARKER: "incomplete"}))  # a failed run can be replaced

    rng = np.random.default_rng(seed)
    n_vox = math.prod(shape)
    absent_cases = [set(rng.choice(num_cases, int(round(a * num_cases)), replace=False).tolist()) for a in absent]
    for i in range(num_cases):
        cid = f"case_{i:03d}"
        label = np.zeros(shape, np.uint8)
        occupied = np.zeros(shape, bool)
        # Largest objects first: they are the hardest to fit.
        objects = [(k + 1, object_size or ratios[k] * n_vox / counts[k]) for k in range(num_classes)
                   if i not in absent_cases[k] for _ in range(counts[k])]
        for value, size in sorted(objects, key=lambda o: -o[1]):
            _place(label, occupied, _ellipsoid(size, dim, rng), value, rng, f"case {cid}")
        # Smooth-ish background bias plus noise; class k sits k units above it: learnable, not trivial.
        grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
        bias = 0.3 * sum(g * w for g, w in zip(grids, rng.uniform(-1, 1, dim)))
        image = bias + label.astype(np.float32) + rng.normal(0.0, noise, shape)
        _write(label, root / "labelsTr" / f"{cid}{file_ending}", spacing, True)
        _write(image, root / "imagesTr" / f"{cid}_0000{file_ending}", spacing, False)

    dataset_json = {
        "channel_names": {"0": "synthetic"},
        "labels": {"background": 0, **{f"class{k + 1}": k + 1 for k in range(num_classes)}},
        "numTraining": num_cases,
        "file_ending": file_ending,
        "description": "autoloss synthetic dataset",
        _MARKER: {"dim": dim, "shape": list(shape), "spacing": list(spacing), "foreground_ratio": ratios,
                  "objects_per_case": counts, "object_size": object_size, "absent_fraction": absent,
                  "seed": seed},
    }
    (root / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return root


# ---------------------------------------------------------------- label shapes with known answers

def _distance_to_centre(shape: Sequence[int]) -> np.ndarray:
    """Euclidean distance of every voxel to the centre of the grid (between voxels for even sizes)."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return np.sqrt(sum((g - (s - 1) / 2) ** 2 for g, s in zip(grids, shape)))


def _add_specks(label: np.ndarray, value: int, count: int, rng: np.random.Generator, what: str) -> None:
    """``count`` isolated single voxels of ``value`` where their whole neighbourhood is background, so each is
    its own component under full connectivity."""
    placed = 0
    for _ in range(100 * count):
        if placed == count:
            return
        p = tuple(int(rng.integers(1, s - 1)) for s in label.shape)
        if not label[tuple(slice(c - 1, c + 2) for c in p)].any():
            label[p] = value
            placed += 1
    if placed < count:
        raise AutolossError(f"{what}: only {placed} of {count} specks fit in {list(label.shape)}")


def blob_with_fragments(shape: Sequence[int], radius: float, fragments: int, seed: int = 0) -> np.ndarray:
    """One centred ball/disc of ``radius`` plus ``fragments`` isolated single voxels away from it (each with an
    empty neighbourhood, so every fragment is its own component under full connectivity)."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = [s / 2 for s in shape]
    label = (sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2).astype(np.uint8)
    _add_specks(label, 1, fragments, np.random.default_rng(seed), "blob_with_fragments")
    return label


def layered_ball(shape: Sequence[int], radii: Sequence[float], specks: int = 0, seed: int = 0) -> np.ndarray:
    """Nested layers around the grid's centre: label 1 is the ball of radius ``radii[0]`` (the core), label k the
    shell ``radii[k-2] < d <= radii[k-1]`` around it (a rim ``radii[k-1] - radii[k-2]`` voxels thick), as tumour
    sub-regions nest. ``specks`` single voxels of the outermost label lie apart from everything (label noise).
    ``layered_ball(shape, [r])`` is a solid ball; ``(layered_ball(shape, [r, r + w]) == 2)`` a hollow sphere."""
    d = _distance_to_centre(shape)
    label = np.zeros(shape, np.uint8)
    for k, r in reversed(list(enumerate(radii, 1))):
        label[d <= r] = k
    _add_specks(label, len(radii), specks, np.random.default_rng(seed), "layered_ball")
    return label


def plate(shape: Sequence[int], thickness: int, tilt: float = 0.0) -> np.ndarray:
    """A square plate ``thickness`` voxels thick through the centre of a 3D grid, its sides 80 % of the smaller
    in-plane extent; its normal is axis 0, turned by ``tilt`` radians towards axis 2."""
    z, y, x = np.ogrid[tuple(slice(0, s) for s in shape)]
    cz, cy, cx = (s // 2 for s in shape)
    normal = (z - cz) * math.cos(tilt) + (x - cx) * math.sin(tilt)  # signed distance from the mid-plane
    along = (x - cx) * math.cos(tilt) - (z - cz) * math.sin(tilt)
    half = 0.4 * min(shape[1], shape[2])
    return ((normal >= -(thickness // 2)) & (normal < thickness - thickness // 2)
            & (np.abs(y - cy) <= half) & (np.abs(along) <= half)).astype(np.uint8)


def _capsule(shape: Sequence[int], a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Voxels within ``radius`` of the segment a-b."""
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d = b - a
    t = np.clip(sum((g - ai) * di for g, ai, di in zip(grids, a, d)) / float(d @ d), 0.0, 1.0)
    return sum((g - (ai + t * di)) ** 2 for g, ai, di in zip(grids, a, d)) <= radius ** 2


def branching_tree(shape: Sequence[int], width: float, levels: int = 3) -> np.ndarray:
    """A 3D tree of round tubes ``width`` wide (radius ``width / 2``): a trunk along axis 0 that splits in two at
    each of ``levels`` levels, branches 0.7 times as long as their parent, 35 degrees off it, each split turned
    90 degrees about its branch from the one before (a tree, not a fan in one plane)."""
    label = np.zeros(shape, bool)
    top = np.array(shape, float) - width - 2

    def grow(start: np.ndarray, direction: np.ndarray, side: np.ndarray, length: float, level: int) -> None:
        end = np.clip(start + direction * length, width + 1, top)
        label[...] |= _capsule(shape, start, end, width / 2)
        if level == levels:
            return
        turn = np.cross(direction, side)  # the next split happens in the perpendicular plane
        for sign in (-1, 1):
            branch = direction * math.cos(0.6) + sign * side * math.sin(0.6)
            grow(end, branch / np.linalg.norm(branch), turn / np.linalg.norm(turn), 0.7 * length, level + 1)

    grow(np.array([0.1 * shape[0], shape[1] / 2, shape[2] / 2]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]),
         0.35 * shape[0], 1)
    return label.astype(np.uint8)


def tubes(shape: Sequence[int], width: int, count: int = 3) -> np.ndarray:
    """``count`` straight lines (2D, ``width`` pixels wide) or round tubes (3D, radius ``width / 2``) along the
    last axis, spread evenly over the other axes; each spans 80 % of the last axis."""
    label = np.zeros(shape, np.uint8)
    length = slice(shape[-1] // 10, shape[-1] - shape[-1] // 10)
    if len(shape) == 2:
        for k in range(count):
            y = (k + 1) * shape[0] // (count + 1)
            label[y - width // 2:y - width // 2 + width, length] = 1
        return label
    zz, yy = np.ogrid[:shape[0], :shape[1]]
    for k in range(count):
        cz, cy = shape[0] // 2, (k + 1) * shape[1] // (count + 1)
        disc = (zz - cz) ** 2 + (yy - cy) ** 2 <= (width / 2) ** 2
        label[disc, length] = 1
    return label


def discs(shape: Sequence[int], count: int, radius: float, seed: int = 0) -> np.ndarray:
    """``count`` non-touching discs/balls of ``radius`` at random places."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    occupied = np.zeros(shape, bool)
    grids = np.ogrid[tuple(slice(-math.ceil(radius), math.ceil(radius) + 1) for _ in shape)]
    mask = sum(g ** 2 for g in grids) <= radius ** 2
    for _ in range(count):
        _place(label, occupied, mask, 1, rng, "discs")
    return label


def write_labels_dataset(out_dir: str | Path, labels: Sequence[np.ndarray], *, dataset_id: int = 980,
                         name: str = "Shapes", spacing: Sequence[float] | None = None, rgb: bool = False,
                         file_ending: str | None = None, label_names: dict | None = None, seed: int = 0) -> Path:
    """A raw dataset around given label arrays: images are the label plus noise (NIfTI, or with ``rgb`` one RGB
    PNG per case with channel_names R, G, B, as nnU-Net's NaturalImage2DIO reads them). Replaces a folder it
    wrote before, like make_synthetic_dataset."""
    from PIL import Image

    dim = labels[0].ndim
    ending = file_ending or (".png" if rgb else ".nii.gz")
    if rgb and (dim != 2 or ending != ".png"):
        raise AutolossError("rgb datasets are 2D PNG")
    root = Path(out_dir) / f"Dataset{dataset_id:03d}_{name}"
    if root.exists():
        if _MARKER not in (root / "dataset.json").read_text():
            raise AutolossError(f"{root}: exists and was not made by autoloss.synthetic; choose another out_dir")
        shutil.rmtree(root)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    spacing = tuple(spacing or (1.0,) * dim)
    for i, label in enumerate(labels):
        cid = f"case_{i:03d}"
        image = label.astype(np.float32) + rng.normal(0.0, 0.3, label.shape)
        if rgb:
            grey = np.clip(image * 80 + 60, 0, 255).astype(np.uint8)
            rgb_image = Image.fromarray(np.stack([grey, 255 - grey, grey // 2], -1), "RGB")
            rgb_image.save(root / "imagesTr" / f"{cid}_0000.png")
            Image.fromarray(label.astype(np.uint8)).save(root / "labelsTr" / f"{cid}.png")
            continue
        _write(label, root / "labelsTr" / f"{cid}{ending}", spacing, True)
        _write(image, root / "imagesTr" / f"{cid}_0000{ending}", spacing, False)
    values = sorted(set(np.unique(np.concatenate([np.unique(lb) for lb in labels])).tolist()) - {0}) or [1]
    dataset_json = {
        "channel_names": {"0": "R", "1": "G", "2": "B"} if rgb else {"0": "synthetic"},
        "labels": label_names or {"background": 0, **{f"class{v}": int(v) for v in range(1, max(values) + 1)}},
        "numTraining": len(labels), "file_ending": ending, _MARKER: {"shapes": True, "seed": seed},
    }
    (root / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return root
