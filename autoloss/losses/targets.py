"""Extra per-sample targets derived from a label map on the CPU: the tubed skeleton (Skeleton Recall) and
connected-component labels (blob loss).

These are made in nnU-Net's data-loading workers (``autoloss.nnunet.extra_targets``) from the augmented label,
before deep-supervision downsampling, so the GPU loop never waits for them. The same functions serve the losses
when they are called without a loader-made target (tests, benchmarks): then the loss derives them from the
target it receives, on the CPU, which is correct but slow.

- ``skeleton``: Kirchhoff et al., "Skeleton Recall Loss for Connectivity Conserving and Resource Efficient
  Segmentation of Thin Tubular Structures", ECCV 2024 (MIC-DKFZ/Skeleton-Recall): skeletonise the binarised
  label (``skimage.morphology.skeletonize``; Lee's thinning in 3D), dilate twice with the cross-shaped
  structuring element ("tubed"), multiply by the label map so each class keeps its own part.
- ``components``: connected components of each class (8-/26-connectivity, ``cc3d``), numbered 1..N per sample
  over all classes (the class of a component is the label under it), 0 elsewhere.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

# int16 is the dtype nnU-Net's loader gives segmentations; ids above it are merged into the last one.
MAX_COMPONENTS = np.iinfo(np.int16).max


def tubed_skeleton(labels: np.ndarray) -> np.ndarray:
    """Tubed skeleton of a label map (2D or 3D, integer labels, 0 = background) -> same shape, int16 labels."""
    from skimage.morphology import skeletonize

    labels = np.asarray(labels)
    fg = labels > 0
    out = np.zeros(labels.shape, dtype=np.int16)
    if not fg.any():
        return out
    skel = skeletonize(fg)
    tube = ndimage.binary_dilation(skel, ndimage.generate_binary_structure(labels.ndim, 1), iterations=2)
    out[tube] = labels[tube]  # dilation can leave the label: outside it the product is 0
    out[~fg] = 0
    return out


def component_labels(labels: np.ndarray) -> np.ndarray:
    """Connected components of every class (full connectivity), numbered 1..N, as int16 (0 = background)."""
    import cc3d

    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.int16)
    if not (labels > 0).any():
        return out
    connectivity = 8 if labels.ndim == 2 else 26
    cc = cc3d.connected_components(np.ascontiguousarray(labels.astype(np.int32)), connectivity=connectivity)
    return np.minimum(cc, MAX_COMPONENTS).astype(np.int16)


EXTRA_TARGETS = {"skeleton": tubed_skeleton, "components": component_labels}


def make_extra_target(name: str, labels: np.ndarray) -> np.ndarray:
    """One extra target of one sample's label map (spatial dims only)."""
    return EXTRA_TARGETS[name](labels)


def extra_target_from_batch(name: str, labels: torch.Tensor) -> torch.Tensor:
    """The extra target of a (B, 1, *spatial) label batch, per image on the CPU (the slow fallback path)."""
    arr = labels.detach().to("cpu", torch.int64).numpy()
    out = np.stack([make_extra_target(name, arr[b, 0])[None] for b in range(arr.shape[0])])
    return torch.from_numpy(out).to(labels.device)
