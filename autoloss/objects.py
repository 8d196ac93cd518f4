"""Per-class object statistics that fragments cannot swamp, and the thickness of thin structures.

For one class in one case, given the sizes s_i of its connected components:

- weighted object size  sum(s_i^2) / sum(s_i): the size of the component a random voxel of the class belongs
  to. One 40 000-voxel blob plus 300 one-voxel specks gives about 39 700, where the median component is 1.
- largest object share  max(s_i) / sum(s_i).
- major objects         components of at least ``MAJOR_SHARE`` (1 %) of the class volume in that case; their
  count and sizes describe a few objects without counting specks (hundreds of equal objects are each under 1 %,
  so they are counted by the next figure).
- instances             components of at least ``INSTANCE_SHARE`` (10 %) of the weighted size: objects comparable
  to a typical one. The rest are fragments (specks beside a body, or debris).

Thickness (after the medial-axis idea of Blum, 1967, as used by clDice, Shit et al. CVPR 2021): skeletonise the
class mask (skimage ``skeletonize``, 2D and 3D), take the Euclidean distance transform (EDT) to the background,
and read ``2 * EDT - 1`` on the skeleton voxels (a line ``w`` voxels wide has EDT ``(w + 1) / 2`` at its centre);
the median over skeleton voxels is the thickness. ``skeleton_ratio`` = skeleton voxels / class voxels (a tube
of radius r has about 1 / (pi r^2)). ``elongation`` = skeleton length of the typical component (skeleton_ratio x
weighted size) / thickness: length over width for a tube or strip (L/d), about 1/d for a disc or ball (its
skeleton is a point or a short curve), so it separates tubes from blobs without tracing a skeleton graph, and
many small discs are not one long tube.

The caller passes the mask of the class's instances only (``INSTANCE_SHARE``): a one-voxel speck is its own
skeleton with thickness 1, and 150 specks beside a ball would otherwise make the ball read as a thin tree.

Cost bound: skeletonisation is done on the class's bounding box, and when that box exceeds
``THICKNESS_WINDOW`` voxels per axis, on a window of that size centred on the class's middle foreground voxel.
A structure thicker than the window then reads as about the window's size (still thick, which is all the regimes
need). The driver may also measure thickness on a subset of cases (``autoloss.fingerprint``).
"""
from __future__ import annotations

import numpy as np

MAJOR_SHARE = 0.01
INSTANCE_SHARE = 0.1
THICKNESS_WINDOW = {2: 1024, 3: 64}  # voxels per axis; ~1 M (2D) / 0.26 M (3D) voxels keep a case under 0.1 s


def component_stats(sizes: np.ndarray) -> dict[str, float | list[int] | int]:
    """Fragment-proof figures of one class in one case from its component sizes (voxels)."""
    s = np.asarray(sizes, np.float64)
    total = float(s.sum())
    if total == 0:
        return {"weighted": None, "largest_share": None, "n_objects": 0, "major": 0, "major_sizes": [],
                "instances": 0}
    major = s[s >= MAJOR_SHARE * total]
    weighted = float((s * s).sum() / total)
    return {"weighted": weighted, "largest_share": float(s.max() / total), "n_objects": int(s.size),
            "major": int(major.size), "major_sizes": sorted(int(v) for v in major),
            "instances": int((s >= INSTANCE_SHARE * weighted).sum())}


def _window(mask: np.ndarray) -> tuple[slice, ...]:
    """The class's bounding box, cut to a window of THICKNESS_WINDOW voxels per axis when larger, centred on the
    middle foreground voxel in raster order (a voxel of the class, so the window is never empty)."""
    flat = np.flatnonzero(mask)
    centre = np.unravel_index(flat[flat.size // 2], mask.shape)
    coords = np.unravel_index(flat, mask.shape)
    limit = THICKNESS_WINDOW.get(mask.ndim, 64)
    box = []
    for axis, c in enumerate(coords):
        lo, hi = int(c.min()), int(c.max()) + 1
        if hi - lo > limit:
            lo = min(max(int(centre[axis]) - limit // 2, lo), hi - limit)
            hi = lo + limit
        box.append(slice(lo, hi))
    return tuple(box)


def coarse_stride(boundary_to_volume: float, dim: int) -> int:
    """A sampling stride for thick structures: a ball or tube of thickness t has boundary/volume of about
    2 dim / t, so t is estimated from it and sampled at >= 16 voxels across. Thin ones (t < 32) keep stride 1,
    so every figure near the thin threshold is measured at full resolution."""
    if boundary_to_volume <= 0:
        return 1
    return max(1, int(2 * dim / boundary_to_volume) // 16)


def thickness_stats(mask: np.ndarray, spacing: tuple[float, ...], stride: int = 1) -> dict[str, float | None]:
    """Median thickness (voxels and mm) on the skeleton of a boolean ``mask`` and its skeleton ratio. With
    ``stride`` > 1 (thick structures, see coarse_stride) the mask is sampled every ``stride`` voxels and the
    figures scaled back: thickness x stride, skeleton ratio / stride^(dim-1) (a curve skeleton's length scales
    with stride, the volume with stride^dim)."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    if stride > 1:
        mask = mask[tuple(slice(None, None, stride) for _ in range(mask.ndim))]
        spacing = tuple(s * stride for s in spacing)
    if not mask.any():
        return {"thickness": None, "thickness_mm": None, "skeleton_ratio": None}
    crop = np.pad(mask[_window(mask)], 1)  # one background voxel around: the box edge is no boundary otherwise
    skeleton = skeletonize(crop).astype(bool)
    if not skeleton.any():  # skeletonize keeps at least a point for any object; be safe anyway
        skeleton = crop
    dist = distance_transform_edt(crop)[skeleton]
    # 2 * EDT - 1 in voxels; in mm the one-voxel correction is the finest spacing (the direction the EDT
    # reaches first on a near-isotropic grid). An isotropic grid needs one EDT only.
    isotropic = max(spacing) == min(spacing)
    dist_mm = dist * spacing[0] if isotropic else distance_transform_edt(crop, sampling=spacing)[skeleton]
    return {"thickness": float(np.median(2 * dist - 1)) * stride,
            "thickness_mm": float(np.median(2 * dist_mm - min(spacing))),
            "skeleton_ratio": float(skeleton.sum() / crop.sum()) / stride ** (mask.ndim - 1)}


def elongation(weighted_size: float | None, thickness: float | None, skeleton_ratio: float | None) -> float | None:
    """Skeleton length of the typical component / its thickness: L/d for a tube or strip, ~1/d for a ball."""
    if not weighted_size or not thickness or skeleton_ratio is None:
        return None
    return float(skeleton_ratio * weighted_size / max(thickness, 1.0))
