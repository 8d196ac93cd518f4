"""Instance-aware term for many small lesions: blob loss.

Why blob loss and not a connected-component Dice+CE with Voronoi regions: blob loss needs only the connected
components of the label (cheap, ``cc3d`` in the data loader), while the Voronoi variants also need a geometric
partition of the image per sample (a distance transform with indices); and blob loss has a published, replicated
lesion-F1 gain (MS lesions +5 %, liver tumours +3 % vs soft Dice) with its recipe (global + per-blob loss).
Computed here without a loop over instances: every per-instance sum is one ``index_add`` over the component ids.
"""
from __future__ import annotations

import torch
from torch import Tensor

from autoloss.losses.base import SegBatch, SegLoss


class BlobLoss(SegLoss):
    """Blob loss (Kofler et al., "blob loss: instance imbalance aware loss functions for semantic segmentation",
    IPMI 2023), with Dice + CE as the per-blob criterion::

        L_blob = mean_images mean_n [ (1 - Dice(P_c ⊙ M_n, G_n)) + CE(M_n) ]

    for every connected component n of class c in an image, ``G_n`` its mask and ``M_n`` the image without the
    OTHER components of class c (so each lesion is scored as if it were the only one, and a large lesion cannot
    hide a missed small one). ``Dice = (2 sum P_c G_n + s) / (sum P_c M_n + |G_n| + s)``; ``CE(M_n)`` the mean
    voxel cross-entropy over ``M_n``. Images without components add nothing. The paper's total is
    ``alpha L_global + beta L_blob`` with alpha 2, beta 1: the registry's ``DiceCE+Blob`` is Dice + CE + 0.5 blob.
    The component labels come from the data loader (``autoloss.losses.targets.component_labels``).
    """

    term = "blob"
    extra_target = "components"

    def __init__(self, smooth: float = 1e-5, **kw):
        super().__init__(**kw)
        self.smooth = float(smooth)

    def compute(self, batch: SegBatch) -> Tensor:
        comps = batch.extra(self.extra_target).long()
        probs, ce, labels = batch.probs, batch.voxel_ce, batch.labels
        c = probs.shape[1]
        per_image = []
        for b in range(probs.shape[0]):
            ids_all = comps[b, 0].reshape(-1)
            (fg,) = torch.nonzero(ids_all, as_tuple=True)  # components are a small share of the voxels
            if fg.numel() == 0:
                continue
            ids, n = ids_all[fg], int(ids_all.max())
            lab = labels[b, 0].reshape(-1)[fg]
            with torch.no_grad():
                size = torch.bincount(ids, minlength=n + 1).float()
                cls = torch.zeros(n + 1, dtype=torch.long, device=ids.device).scatter_(0, ids, lab)
                keep = torch.nonzero(size[1:] > 0).flatten() + 1  # ids lost to downsampling have no voxels
                cls_n, size_n = cls[keep], size[keep]
                size_in_class = torch.zeros(c, device=ids.device).index_add_(0, cls_n, size_n)
            p = probs[b].reshape(c, -1)
            own = p[lab, fg]  # probability of its own class at each component voxel
            p_own = torch.zeros(n + 1, device=p.device, dtype=p.dtype).index_add_(0, ids, own)[keep]
            p_in_class = torch.zeros(c, device=p.device, dtype=p.dtype).index_add_(0, cls_n, p_own)
            p_outside = p.sum(1)[cls_n] - p_in_class[cls_n]  # P_c over voxels that are no component of class c
            dice = (2 * p_own + self.smooth) / (p_own + p_outside + size_n + self.smooth).clamp_min(1e-8)
            v = ce[b, 0].reshape(-1)
            ce_own = torch.zeros(n + 1, device=v.device, dtype=v.dtype).index_add_(0, ids, v[fg])[keep]
            ce_in_class = torch.zeros(c, device=v.device, dtype=v.dtype).index_add_(0, cls_n, ce_own)
            ce_mean = (ce_own + v.sum() - ce_in_class[cls_n]) / (size_n + v.numel() - size_in_class[cls_n])
            per_image.append(((1.0 - dice) + ce_mean).mean())
        if not per_image:
            return probs.sum() * 0.0
        return torch.stack(per_image).mean()
