"""Datasets the sweep (benchmarks/sweep.py) trains on, as an nnU-Net user would set them up.

AxonMyelin has only 10 images: one image per case leaves 2 images per fold and a confirmation of 4 cases, always
inconclusive. So each image is cut into tiles of about ``TILE`` pixels (each tile a case), and all tiles of one
image stay in one fold through a ``splits_final.json`` in the preprocessed folder, which nnU-Net (and autoloss)
honour: a tile is never validated by a network trained on its neighbours.

    python benchmarks/sweep_data.py OUT_RAW OUT_PREPROCESSED     # writes Dataset114_AxonMyelinTiles + its split
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
AXON = SHARED / "Dataset104_AxonMyelin"
TILES_NAME = "Dataset114_AxonMyelinTiles"
TILE = 256
FOLDS = 5


def _cuts(length: int) -> list[tuple[int, int]]:
    n = max(1, length // TILE)
    edges = np.linspace(0, length, n + 1).round().astype(int)
    return list(zip(edges[:-1], edges[1:]))


def make_axon_tiles(raw_root: Path, preprocessed_root: Path, source: Path = AXON) -> Path:
    """Write the tiled dataset under ``raw_root`` and its image-grouped 5-fold split under ``preprocessed_root``;
    returns the raw dataset folder. Idempotent."""
    from PIL import Image

    target = raw_root / TILES_NAME
    split_file = preprocessed_root / TILES_NAME / "splits_final.json"
    if (target / "dataset.json").exists() and split_file.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir(parents=True)
    tiles_of: dict[str, list[str]] = {}
    for image_file in sorted((source / "imagesTr").glob("*_0000.png")):
        case = image_file.name[: -len("_0000.png")]
        image = np.array(Image.open(image_file))
        label = np.array(Image.open(source / "labelsTr" / f"{case}.png"))
        tiles_of[case] = []
        for i, (y0, y1) in enumerate(_cuts(image.shape[0])):
            for j, (x0, x1) in enumerate(_cuts(image.shape[1])):
                tile = f"{case}_t{i}{j}"
                Image.fromarray(image[y0:y1, x0:x1]).save(target / "imagesTr" / f"{tile}_0000.png")
                Image.fromarray(label[y0:y1, x0:x1]).save(target / "labelsTr" / f"{tile}.png")
                tiles_of[case].append(tile)
    dj = json.loads((source / "dataset.json").read_text())
    dj["numTraining"] = sum(len(t) for t in tiles_of.values())
    dj["description"] = (f"{dj.get('description', '')}; cut into ~{TILE} px tiles, one image's tiles in one fold "
                         "(splits_final.json)")
    (target / "dataset.json").write_text(json.dumps(dj, indent=2))
    # largest image first into the fold with the fewest tiles: folds as even as whole images allow
    folds: list[list[str]] = [[] for _ in range(FOLDS)]
    for case in sorted(tiles_of, key=lambda c: -len(tiles_of[c])):
        min(folds, key=len).extend(tiles_of[case])
    all_tiles = sorted(t for ts in tiles_of.values() for t in ts)
    splits = [{"train": sorted(set(all_tiles) - set(f)), "val": sorted(f)} for f in folds]
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text(json.dumps(splits, indent=2))
    return target


if __name__ == "__main__":
    out = make_axon_tiles(Path(sys.argv[1]), Path(sys.argv[2]))
    splits = json.loads((Path(sys.argv[2]) / TILES_NAME / "splits_final.json").read_text())
    print(out, "fold sizes:", [len(s["val"]) for s in splits])
