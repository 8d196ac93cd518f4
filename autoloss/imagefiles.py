"""Image files read as nnU-Net's readers read them, headers only where possible (shape, spacing, channels).

SimpleITK files (NIfTI, NRRD, MHA, ...) through SimpleITK with the ImageIO named (NIfTI dim/pixdim straight from
the header); other nnU-Net readers (Tiff3DIO, Nibabel*, custom) run as nnU-Net's own classes.

Natural images (PNG, BMP, TIFF) as nnU-Net's ``NaturalImage2DIO`` reads them:

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

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoloss.errors import AutolossError
from autoloss.filecheck import NATURAL_READER, SITK_READER, check_length, one_line



@dataclass
class ImageHeader:
    shape: tuple[int, ...]       # array order: (z, y, x) or (y, x); without the channel axis
    spacing: tuple[float, ...]   # same order as shape
    channels: int = 1            # a 4D file (SimpleITK) or an RGB/RGBA natural image holds several

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


# ---------------------------------------------------------------- file reading

# Naming the ImageIO skips ITK's probe of every registered format (about 1 ms a file).
_SITK_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
            ".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".gipl": "GiplImageIO", ".png": "PNGImageIO",
            ".bmp": "BMPImageIO", ".tif": "TIFFImageIO", ".tiff": "TIFFImageIO"}


def _sitk_error(path: Path, e: Exception) -> AutolossError:
    detail = one_line(str(e), path) or type(e).__name__
    return AutolossError(f"{path}: cannot be read ({detail}); the file is truncated or not a valid image, re-export it")


def _sitk_run(path: Path, header_only: bool):
    """Run a SimpleITK reader on ``path`` with the ImageIO named by its ending (auto-detection as fallback)."""
    import SimpleITK as sitk

    io = next((v for k, v in _SITK_IO.items() if path.name.lower().endswith(k)), None)
    for named in ([io] if io else []) + [None]:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        if named:
            reader.SetImageIO(named)
        try:
            return reader, (reader.ReadImageInformation() if header_only else reader.Execute())
        except RuntimeError as e:
            error = e
    raise _sitk_error(path, error) from None


def _sitk_header(path: Path) -> ImageHeader:
    reader, _ = _sitk_run(path, header_only=True)
    shape, spacing = tuple(reader.GetSize())[::-1], tuple(abs(s) for s in reader.GetSpacing())[::-1]
    if len(shape) == 4:  # 4D file: several channels in one file, channel axis first in array order
        return ImageHeader(tuple(int(s) for s in shape[1:]), spacing[1:], int(shape[0]))
    return ImageHeader(tuple(int(s) for s in shape), spacing)


def _nifti_header(path: Path) -> ImageHeader | None:
    """dim/pixdim straight from a NIfTI-1/2 header: ITK's ReadImageInformation decodes far more (about 5 ms
    against 0.15 ms here). None when the header is not plain NIfTI, so SimpleITK decides (and names the error)."""
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
            raw = f.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for e in "<>":
        if len(raw) >= 348 and struct.unpack(e + "i", raw[:4])[0] == 348:
            dim, pix = struct.unpack(e + "8h", raw[40:56]), struct.unpack(e + "8f", raw[76:108])
            break
        if len(raw) >= 540 and struct.unpack(e + "i", raw[:4])[0] == 540:
            dim, pix = struct.unpack(e + "8q", raw[16:80]), struct.unpack(e + "8d", raw[104:168])
            break
    else:
        return None
    n = min(dim[0], 3)  # a 4th dim holds channels, as in nnU-Net's SimpleITKIO
    if dim[0] not in (2, 3, 4) or any(d < 1 for d in dim[1:n + 1]):
        return None
    return ImageHeader(tuple(int(d) for d in dim[1:n + 1])[::-1], tuple(abs(float(p)) for p in pix[1:n + 1])[::-1],
                       int(dim[4]) if dim[0] == 4 else 1)


def read_image_header(path: Path | str, reader: str = SITK_READER) -> ImageHeader:
    """Shape and spacing of an image without its voxels (SimpleITK / natural-image readers); other nnU-Net
    readers have no header-only path, so the image is read with nnU-Net's class."""
    path = Path(path)
    check_length(path)  # a file cut short is refused at every read, not only by `autoloss verify`
    if reader == SITK_READER:
        header = _nifti_header(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
        return header or _sitk_header(path)
    if reader == NATURAL_READER:
        header = natural_header(path)  # None: only decoding tells (palette, CMYK, unparsable): nnU-Net decides
        if header is not None:
            return ImageHeader(header[0], (1.0, 1.0), header[1])
    arr, spacing, channels = _read_with_nnunet(path, reader, seg=False, keep_channels=True)
    return ImageHeader(arr.shape, spacing, channels)


def _read_with_nnunet(path: Path, reader: str, seg: bool, keep_channels: bool = False):
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    try:
        rw = recursive_find_reader_writer_by_name(reader)()
        arr, props = rw.read_seg(str(path)) if seg else rw.read_images([str(path)])
    except Exception as e:  # nnU-Net readers raise anything from assert to OSError
        detail = one_line(str(e), path) or type(e).__name__
        raise AutolossError(f"{path}: cannot be read by nnU-Net's {reader} ({detail}); the file is truncated or not "
                            "a valid image, re-export it") from None
    if seg and arr.shape[0] != 1:
        raise AutolossError(f"{path}: a label file must be single-channel (this one has {arr.shape[0]} channels); "
                            "save it as one grey/integer channel")
    channels = int(arr.shape[0])
    arr, spacing = arr[0], tuple(float(s) for s in props["spacing"])
    if arr.shape[0] == 1 and spacing[0] >= 999:  # nnU-Net's 2D convention (1, y, x) with a dummy 999 spacing
        arr, spacing = arr[0], (1.0, 1.0) if reader == NATURAL_READER else spacing[1:]
    return (arr, spacing, channels) if keep_channels else (arr, spacing)


def _read_label_array(path: Path, reader: str) -> tuple[np.ndarray, tuple[float, ...]]:
    check_length(path)
    if reader == NATURAL_READER:
        arr = read_natural_label(path)
        if arr is None:  # not decodable by PIL (or truncated): nnU-Net's reader has the last word
            return _read_with_nnunet(path, reader, seg=True)
        return arr, (1.0, 1.0)
    if reader != SITK_READER:
        return _read_with_nnunet(path, reader, seg=True)
    import SimpleITK as sitk

    _, img = _sitk_run(path, header_only=False)
    if img.GetNumberOfComponentsPerPixel() != 1 or img.GetDimension() > 3:
        raise AutolossError(f"{path}: a label file must be a single-channel 2D or 3D image (this one has "
                            f"{img.GetNumberOfComponentsPerPixel()} component(s), {img.GetDimension()} dims)")
    return sitk.GetArrayFromImage(img), tuple(abs(s) for s in img.GetSpacing())[::-1]
