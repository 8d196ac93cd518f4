"""Natural images (PNG, BMP, TIFF) read as nnU-Net's ``NaturalImage2DIO`` reads them, from their headers.

nnU-Net reads these files with ``skimage.io.imread``: a 2D array is one grey channel; a (y, x, 3) or (y, x, 4)
array is an RGB or RGBA image whose colours are channels, so an RGB dataset stores ONE file ``CASE_0000.png``
per case with ``channel_names`` {"0": "R", "1": "G", "2": "B"} (nnU-Net's Dataset120 road segmentation example).
Any other last-axis size (grey + alpha, "LA") fails nnU-Net's reader, and files of one case must have the same
channel count (it stacks them). JPEG has no nnU-Net reader (lossy), so it never gets here.

Here PIL (skimage's own backend) opens the header only: the channel count is the number of bands of the image
mode. Modes whose decoded band count PIL cannot promise (palette "P", CMYK, ...) return None so the caller reads
the file with nnU-Net's own class and counts what it gets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from autoloss.errors import AutolossError

# PIL mode -> channels as skimage.io.imread returns them (the modes whose decoded shape is certain).
_CHANNELS = {"1": 1, "L": 1, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "I;16N": 1, "RGB": 3, "RGBA": 4}


def _open(path: Path):
    from PIL import Image

    return Image.open(path)  # lazy: decodes the header only


def natural_header(path: Path) -> tuple[tuple[int, int], int] | None:
    """``((y, x), channels)`` of a natural image from its header, None when only decoding can tell (or PIL
    cannot parse it: nnU-Net's reader then has the last word and names the error)."""
    try:
        with _open(path) as im:
            mode, size, frames = im.mode, im.size, getattr(im, "n_frames", 1)
    except Exception:
        return None
    if frames != 1:
        return None  # a multi-page TIFF: a 3D stack, nnU-Net's Tiff3DIO business
    if mode == "LA":
        raise AutolossError(f"{path}: grey + alpha (2 channels) is not an image nnU-Net reads (it takes grey, RGB "
                            "or RGBA); save it as grey or RGB")
    channels = _CHANNELS.get(mode)
    return None if channels is None else ((size[1], size[0]), channels)


def read_natural_label(path: Path) -> np.ndarray | None:
    """A natural-image label as a 2D array; None when PIL cannot decode it (the caller asks nnU-Net's reader).
    A label must be one grey channel: colour and palette labels are refused (a palette PNG decodes to RGB in
    skimage, and nnU-Net would then read three label channels)."""
    try:
        with _open(path) as im:
            bands, mode, arr = len(im.getbands()), im.mode, np.array(im)
    except Exception:
        return None
    if bands != 1 or mode == "P" or arr.ndim != 2:
        raise AutolossError(f"{path}: a label file must be single-channel grey values (this one is PIL mode "
                            f"{mode}); save it as 8/16-bit greyscale")
    return arr
