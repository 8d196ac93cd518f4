"""Is a file whole? Cheap byte-count checks at every read, and decoding every voxel once (``autoloss verify``).

Readers are lenient where it hurts: SimpleITK reads a .nii/.nii.gz cut short as if it were whole (the missing
voxels become 0, no error) and reads NaN/Inf in NIfTI as 0; ITK's MetaImage reader writes its complaint about a
short .mha to the C++ stderr before failing. So:

- :func:`check_length` compares the bytes a file holds with the bytes its header promises, in O(1): NIfTI
  (``vox_offset + voxels x bitpix/8``; for .nii.gz the gzip trailer's ISIZE, confirmed by decompressing only when
  it disagrees, since multi-member gzip files carry the last member's size), MetaImage (attached or detached data,
  raw or ``CompressedDataSize``), raw NRRD (``sizes`` x ``type``) and PNG (the IEND chunk). Every read in autoloss
  calls it, so ``fingerprint`` and ``recommend`` refuse a truncated file too.
- :func:`decode` reads every voxel: NIfTI with nibabel (Python's gzip raises where SimpleITK zero-fills, and NaN
  stays NaN), PNG/BMP/TIFF with PIL (which raises on a truncated stream), other formats with SimpleITK or
  nnU-Net's own reader class. Only ``verify`` (and a search, which verifies first) pays for it.
"""
from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from autoloss.errors import AutolossError

NATURAL_READER = "NaturalImage2DIO"  # nnU-Net's reader class names (imagefiles reads with them)
SITK_READER = "SimpleITKIO"
_REEXPORT = "re-export it from the original (or restore it from a backup)"

# MetaImage element types -> bytes
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def short_file(path: Path, have: int, want: int, what: str = "bytes") -> AutolossError:
    return AutolossError(f"{path}: truncated: holds {have} of the {want} {what} its header promises; {_REEXPORT}")


def nifti_data_end(raw: bytes) -> int | None:
    """Byte offset where a NIfTI-1/2 file's voxel data ends (vox_offset + voxels x bitpix/8), from its header bytes;
    None when ``raw`` is no NIfTI header."""
    for e in "<>":
        if len(raw) >= 348 and struct.unpack(e + "i", raw[:4])[0] == 348:
            dim = struct.unpack(e + "8h", raw[40:56])
            bitpix = struct.unpack(e + "h", raw[72:74])[0]
            offset = int(struct.unpack(e + "f", raw[108:112])[0])
            offset = max(offset, 352)
            break
        if len(raw) >= 540 and struct.unpack(e + "i", raw[:4])[0] == 540:
            dim = struct.unpack(e + "8q", raw[16:80])
            bitpix = struct.unpack(e + "h", raw[14:16])[0]
            offset = max(int(struct.unpack(e + "q", raw[168:176])[0]), 544)
            break
    else:
        return None
    if not 1 <= dim[0] <= 7 or bitpix <= 0:
        return None
    voxels = 1
    for d in dim[1:dim[0] + 1]:
        voxels *= max(int(d), 1)
    return offset + voxels * bitpix // 8


def _gunzipped_size(path: Path) -> int:
    """Bytes a gzip file decompresses to; raises AutolossError when its stream ends early or is corrupt."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except EOFError:
        raise AutolossError(f"{path}: truncated: the gzip stream ends early; {_REEXPORT}") from None
    except (OSError, zlib.error) as exc:
        raise AutolossError(f"{path}: corrupt gzip data ({exc}); {_REEXPORT}") from None
    return total


def _check_nifti(path: Path) -> None:
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            raw = f.read(544)
    except EOFError:
        raise AutolossError(f"{path}: truncated: the gzip stream ends inside the NIfTI header; {_REEXPORT}") from None
    except (OSError, zlib.error):
        return  # not gzip at all: the reader names the error
    end = nifti_data_end(raw)
    if end is None:
        if len(raw) < 348 and raw[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"):
            raise short_file(path, len(raw), 348, "header bytes")
        return
    if not gz:
        size = os.path.getsize(path)
        if size < end:
            raise short_file(path, size, end)
        return
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]
    if isize == end % (1 << 32):
        return
    size = _gunzipped_size(path)  # the trailer disagrees: decompress to be sure (multi-member files are fine)
    if size < end:
        raise short_file(path, size, end, "bytes (uncompressed)")


def _meta_header(path: Path) -> tuple[dict[str, str], int] | None:
    """MetaImage header fields and the byte offset where attached data starts (after ElementDataFile)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields, pos = {}, 0
    for line in head.split(b"\n"):
        pos += len(line) + 1
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, pos
    return None


def _check_meta(path: Path) -> None:
    parsed = _meta_header(path)
    if parsed is None:
        return
    fields, start = parsed
    try:
        voxels = int(np.prod([int(v) for v in fields["DimSize"].split()]))
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        element = _MET_BYTES[fields["ElementType"]]
    except (KeyError, ValueError):
        return  # unusual header: ITK decides
    data_file = fields["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        target, size = path, os.path.getsize(path) - start
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        return  # slice lists and patterns: ITK decides
    else:
        target = path.parent / data_file
        if not target.is_file():
            raise AutolossError(f"{path}: its data file {target} is missing; put it beside the header")
        size = os.path.getsize(target)
    compressed = fields.get("CompressedData", "False").lower() == "true"
    want = int(fields["CompressedDataSize"]) if compressed and fields.get("CompressedDataSize", "").isdigit() \
        else None if compressed else voxels * channels * element
    if want is not None and size < want:
        raise short_file(target, size, want)


_NRRD_BYTES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "signed char": 1, "unsigned char": 1, "short": 2,
               "ushort": 2, "int16": 2, "uint16": 2, "short int": 2, "unsigned short": 2, "int": 4, "uint": 4,
               "int32": 4, "uint32": 4, "unsigned int": 4, "longlong": 8, "ulonglong": 8, "int64": 8, "uint64": 8,
               "long long": 8, "unsigned long long": 8, "float": 4, "double": 8}


def _check_nrrd(path: Path) -> None:
    """An attached raw NRRD holds prod(sizes) x type bytes after the header (ends at the first blank line)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"\n\n")
    if not head.startswith(b"NRRD") or end < 0:
        return
    fields = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[key.strip().lower()] = value.strip().lstrip("=").strip()
    if fields.get("encoding") != "raw" or "data file" in fields or "datafile" in fields:
        return  # compressed or detached: ITK decides (and fails cleanly on a short gzip stream)
    try:
        want = int(np.prod([int(v) for v in fields["sizes"].split()])) * _NRRD_BYTES[fields["type"]]
    except (KeyError, ValueError):
        return
    have = os.path.getsize(path) - (end + 2)
    if have < want:
        raise short_file(path, have, want)


def _check_png(path: Path) -> None:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return  # not a PNG at all: the reader names the error
        f.seek(max(0, size - 64))
        if b"IEND" not in f.read():
            raise AutolossError(f"{path}: truncated: the PNG ends before its IEND chunk; {_REEXPORT}")


def check_length(path: Path | str) -> None:
    """Raise AutolossError when ``path`` holds fewer bytes than its header promises (cheap: header and trailer
    only). Formats without such a check pass; their readers or :func:`decode` catch damage."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            _check_nifti(path)
        elif name.endswith((".mha", ".mhd")):
            _check_meta(path)
        elif name.endswith(".nrrd"):
            _check_nrrd(path)
        elif name.endswith(".png"):
            _check_png(path)
    except PermissionError as exc:
        raise AutolossError(f"{path}: cannot be read ({exc.strerror}); make it readable") from None


# ---------------------------------------------------------------- decoding every voxel

def one_line(text: str, path: Path | str | None = None) -> str:
    """The informative line of a reader's (often multi-line, C++-sourced) error, with ``path`` left out (the
    caller's message names it already)."""
    if path is not None:
        for quoted in (f'"{path}"', f"'{path}'", str(path)):
            text = str(text).replace(quoted, "the file")
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    best = next((ln.split("sitk::ERROR:")[-1].strip() for ln in lines if "sitk::ERROR" in ln), None)
    best = best or next((ln for ln in lines if not re.search(r"\.(cxx|cpp|h|hxx):\d+", ln)), "")
    return re.sub(r"\s+", " ", best)[:200]


def decode(path: Path, reader: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Every voxel of ``path`` (any axis order) and, where the format has one, its 4x4 affine (origin, direction
    and spacing: compared between a case's files). Raises AutolossError naming the file when it cannot be
    decoded whole."""
    path = Path(path)
    check_length(path)
    name = path.name.lower()
    try:
        if reader == SITK_READER and name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            return np.asanyarray(img.dataobj), np.asarray(img.affine, np.float64)
        if reader == NATURAL_READER:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                return np.asarray(im), None
        if reader == SITK_READER:
            return _decode_sitk(path)
        from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

        arr, _ = recursive_find_reader_writer_by_name(reader)().read_images([str(path)])
        return np.asarray(arr), None
    except AutolossError:
        raise
    except EOFError:
        raise AutolossError(f"{path}: truncated: the compressed stream ends early; {_REEXPORT}") from None
    except MemoryError:
        raise AutolossError(f"{path}: too large to decode in this machine's memory") from None
    except Exception as exc:  # noqa: BLE001 - readers raise anything from OSError to AssertionError
        detail = one_line(str(exc), path) or type(exc).__name__
        raise AutolossError(f"{path}: cannot be decoded ({detail}); the file is truncated or not a valid image, "
                            f"{_REEXPORT}") from None


def _decode_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    dim = img.GetDimension()
    d = min(dim, 3)  # a 4th axis holds channels
    affine = np.eye(4)
    direction = np.asarray(img.GetDirection(), np.float64).reshape(dim, dim)[:d, :d]
    affine[:d, :d] = direction * np.asarray(img.GetSpacing()[:d])
    affine[:d, 3] = img.GetOrigin()[:d]
    return sitk.GetArrayFromImage(img), affine
