"""Exact Euclidean distance transforms on the device of the data, and the distance maps the boundary losses use.

``edt(mask)`` follows ``scipy.ndimage.distance_transform_edt``: every True voxel gets its distance to the nearest
False voxel (False voxels get 0), in units of ``spacing``. ``mask`` is a stack of volumes ``(V, *spatial)``;
a volume without any False voxel has no defined distance and gets ``inf`` (the maps below turn that into 0).

Backends (``backend="auto"`` picks the first that applies):

- ``cupy``: ``cupyx.scipy.ndimage.distance_transform_edt`` through DLPack, for CUDA tensors when CuPy is
  installed (the ``gpu`` extra);
- ``scipy``: for CPU tensors. The data already live on the CPU, so this is no round trip; volumes run in a
  thread pool (SciPy releases the GIL);
- ``torch``: exact separable squared EDT in plain torch, any device. Pass 1 (along the longest axis) is the exact
  1-D distance to the nearest background voxel from two cumulative max/min scans. Each later pass is the exact
  lower envelope ``d[i] = min_j f[j] + ((i - j) * s)^2``, evaluated as a loop over offsets ``k = |i - j|`` of
  in-place shifted minima over the whole stack (memory: three copies of the input, no ``n x n`` blow-up). The loop
  stops as soon as ``(k + 1)^2 s^2`` exceeds every finite value still present, since no larger offset can lower
  any voxel: cost O(N * D) for largest distance D <= n.

Everything here is no-grad: distance maps are constants of the loss.
"""
from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

BACKENDS = ("auto", "torch", "scipy", "cupy")
_POOL: ThreadPoolExecutor | None = None
_CUPY_FAILED = False


def _spacing(spacing: Sequence[float] | None, nd: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * nd
    sp = tuple(float(s) for s in spacing)
    if len(sp) != nd or any(not (s > 0 and math.isfinite(s)) for s in sp):
        raise ValueError(f"spacing {spacing!r} must give {nd} positive numbers")
    return sp


def _cupy_available() -> bool:
    if _CUPY_FAILED:
        return False
    try:
        import cupy  # noqa: F401
        import cupyx.scipy.ndimage  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(device: torch.device, backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown EDT backend {backend!r}; one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if device.type == "cpu":
        return "scipy"
    if device.type == "cuda" and _cupy_available():
        return "cupy"
    return "torch"


@torch.no_grad()
def edt(mask: Tensor, spacing: Sequence[float] | None = None, backend: str = "auto") -> Tensor:
    """Distance of every True voxel of each volume in ``mask`` (V, *spatial) to its nearest False voxel.

    float32, same device as ``mask``; ``inf`` for volumes without a False voxel.
    """
    global _CUPY_FAILED
    mask = mask.bool()
    sp = _spacing(spacing, mask.ndim - 1)
    which = resolve_backend(mask.device, backend)
    if mask.numel() == 0:
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    if which == "cupy":
        try:
            return _cupy_edt(mask, sp)
        except Exception as exc:  # a broken CuPy install must not stop training: fall back, say so once
            _CUPY_FAILED = True
            warnings.warn(f"CuPy distance transform failed ({exc}); using the torch EDT", stacklevel=2)
            which = "torch"
    if which == "scipy":
        return _scipy_edt(mask, sp)
    return _torch_sq_edt(mask, sp).sqrt_()


# ---- torch backend ---------------------------------------------------------------------------------------------
def _first_pass(mask: Tensor, dim: int, s: float) -> Tensor:
    """Exact squared 1-D distance to the nearest False voxel along ``dim`` (inf if the line has none)."""
    n = mask.shape[dim]
    shape = [1] * mask.ndim
    shape[dim] = n
    idx = torch.arange(n, device=mask.device, dtype=torch.float32).view(shape)
    inf = torch.tensor(float("inf"), device=mask.device)
    zero = ~mask
    left = torch.where(zero, idx, -inf).cummax(dim).values  # last background at or before i
    right = torch.where(zero, idx, inf).flip(dim).cummin(dim).values.flip(dim)  # first at or after i
    d = torch.minimum(idx - left, right - idx).mul_(s)
    return d.mul_(d)


def _envelope_pass(f: Tensor, dim: int, s: float) -> Tensor:
    """Exact ``out[i] = min_j f[j] + ((i - j) s)^2`` along ``dim``, with early exit (see module docstring)."""
    n = f.shape[dim]
    out = f.clone()
    if n == 1:
        return out
    line_ok = torch.isfinite(f).any(dim, keepdim=True)  # lines that will end finite
    zero = torch.zeros((), device=f.device)
    next_check = 1
    for k in range(1, n):
        c = (k * s) ** 2
        hi = out.narrow(dim, k, n - k)
        torch.minimum(hi, f.narrow(dim, 0, n - k) + c, out=hi)
        lo = out.narrow(dim, 0, n - k)
        torch.minimum(lo, f.narrow(dim, k, n - k) + c, out=lo)
        if k >= next_check and k < n - 1:
            # Checking costs a reduction and (on GPU) a sync: do it at geometrically spaced offsets.
            next_check = k + max(1, k // 4)
            worst = torch.where(line_ok, out, zero).max()
            if bool(worst <= ((k + 1) * s) ** 2):
                break
    return out


def _torch_sq_edt(mask: Tensor, sp: tuple[float, ...]) -> Tensor:
    dims = sorted(range(1, mask.ndim), key=lambda d: -mask.shape[d])  # exact O(n) pass on the longest axis
    f = _first_pass(mask, dims[0], sp[dims[0] - 1])
    for d in dims[1:]:
        f = _envelope_pass(f, d, sp[d - 1])
    return f


# ---- scipy (CPU) and cupy (CUDA) backends ---------------------------------------------------------------------
def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="autoloss-edt")
    return _POOL


def _scipy_edt(mask: Tensor, sp: tuple[float, ...]) -> Tensor:
    from scipy import ndimage

    arr = mask.cpu().numpy()
    out = np.zeros(arr.shape, dtype=np.float32)

    def one(v: int) -> None:
        vol = arr[v]
        if not vol.any():
            return  # all background: distances 0
        if vol.all():
            out[v] = np.inf
            return
        # Exact on the bounding box of the True voxels plus a 1-voxel margin: the nearest False voxel of any
        # True voxel lies in it (clamping any False voxel into the box moves it closer and keeps it False).
        box = tuple(slice(max(int(idx[0]) - 1, 0), int(idx[-1]) + 2)
                    for idx in (np.flatnonzero(vol.any(axis=tuple(a for a in range(vol.ndim) if a != d)))
                                for d in range(vol.ndim)))
        out[v][box] = ndimage.distance_transform_edt(vol[box], sampling=sp)

    if arr.shape[0] == 1:
        one(0)
    else:
        list(_pool().map(one, range(arr.shape[0])))
    return torch.from_numpy(out).to(mask.device)


def _cupy_edt(mask: Tensor, sp: tuple[float, ...]) -> Tensor:  # pragma: no cover - needs CUDA and CuPy
    import cupy
    from cupyx.scipy import ndimage as cndi

    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    flat = mask.flatten(1)
    has_fg, has_bg = flat.any(1), (~flat).all(1).logical_not()
    out[~has_bg] = float("inf")  # no background voxel: undefined, as in the other backends
    todo = (has_fg & has_bg).nonzero().flatten().tolist()
    if not todo:
        return out
    u8 = mask.to(torch.uint8).contiguous()
    # Run on torch's current stream so the maps are ordered with the surrounding kernels.
    with cupy.cuda.ExternalStream(torch.cuda.current_stream(mask.device).cuda_stream):
        src = cupy.from_dlpack(u8)
        for v in todo:
            d = cndi.distance_transform_edt(src[v], sampling=sp, float64_distances=False)
            out[v] = torch.from_dlpack(d)
    return out


# ---- distance maps of the losses -------------------------------------------------------------------------------
def _inside_outside(fg: Tensor, valid: Tensor | None, spacing, backend) -> tuple[Tensor, Tensor, Tensor]:
    """d_in (fg voxels to nearest non-fg), d_out (bg voxels to nearest fg) and which volumes have both.

    Ignored voxels (``valid`` False) count as background, as nnU-Net's target does for the Dice term.
    """
    fg = fg.bool()
    if valid is not None:
        fg = fg & valid
    flat = fg.flatten(1)
    both = flat.any(1) & ~flat.all(1)
    d = edt(torch.cat([fg, ~fg]), spacing, backend)
    d_in, d_out = d[: fg.shape[0]], d[fg.shape[0]:]
    return d_in, d_out, both


@torch.no_grad()
def signed_distance(fg: Tensor, spacing: Sequence[float] | None = None, backend: str = "auto",
                    valid: Tensor | None = None) -> Tensor:
    """Kervadec et al.'s signed distance map of each volume (V, *spatial): distance to the object outside it,
    minus (distance to the background - 1 voxel) inside it (their released ``one_hot2dist``). 0 for volumes that
    are empty or all foreground (no boundary)."""
    d_in, d_out, both = _inside_outside(fg, valid, spacing, backend)
    fgf = fg.bool() if valid is None else fg.bool() & valid
    phi = torch.where(fgf, -(d_in - 1.0), d_out)
    return torch.where(_per_volume(both, phi), phi, 0.0)


@torch.no_grad()
def boundary_field(fg: Tensor, spacing: Sequence[float] | None = None, backend: str = "auto",
                   valid: Tensor | None = None) -> Tensor:
    """Unsigned distance to the object boundary, inside and outside (MONAI HausdorffDTLoss's field, Karimi &
    Salcudean's d_G). 0 for volumes that are empty or all foreground."""
    d_in, d_out, both = _inside_outside(fg, valid, spacing, backend)
    field = torch.where(fg.bool() if valid is None else fg.bool() & valid, d_in, d_out)
    return torch.where(_per_volume(both, field), field, 0.0)


@torch.no_grad()
def boundary_penalty(regions: Tensor, spacing: Sequence[float] | None = None, backend: str = "auto") -> Tensor:
    """Caliva et al.'s inverted, normalised distance map: inside each region of each volume (V, *spatial),
    ``(d_max - d) / (d_max - d_min)`` where ``d`` is the distance to the region's boundary (1 on the boundary,
    0 at the deepest voxel); 0 outside the region and for regions that fill their volume (no boundary)."""
    regions = regions.bool()
    d = edt(regions, spacing, backend)
    inside = regions & torch.isfinite(d)
    big = torch.tensor(float("inf"), device=d.device)
    dmax = torch.where(inside, d, -big).flatten(1).amax(1)
    dmin = torch.where(inside, d, big).flatten(1).amin(1)
    shape = (-1,) + (1,) * (d.ndim - 1)
    dmax, dmin = dmax.view(shape), dmin.view(shape)
    span = dmax - dmin
    # A region that is all boundary (span 0) gets the full penalty everywhere.
    phi = torch.where(span > 0, (dmax - d) / torch.where(span > 0, span, 1.0), 1.0)
    return torch.where(inside, phi, 0.0)


def _per_volume(flag: Tensor, like: Tensor) -> Tensor:
    """A per-volume bool (V,) shaped to broadcast against ``like`` (V, *spatial)."""
    return flag.view((-1,) + (1,) * (like.ndim - 1))
