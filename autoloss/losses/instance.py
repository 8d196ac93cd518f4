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
        b, c = batch.probs.shape[:2]
        comps = batch.extra(self.extra_target).reshape(b, -1).long()
        img, vox = torch.nonzero(comps, as_tuple=True)  # component voxels: a small share of the image
        if img.numel() == 0:
            return batch.probs.sum() * 0.0
        n1 = int(comps.max()) + 1
        gid = img * n1 + comps[img, vox]  # one id per (image, component)
        ce_fg = batch.voxel_ce.reshape(b, -1)[img, vox]
        own = torch.exp(-ce_fg)  # softmax probability of the voxel's own class (CE is -log of it)
        with torch.no_grad():
            size = torch.bincount(gid, minlength=b * n1).float()
            cls = torch.zeros(b * n1, dtype=torch.long, device=gid.device).scatter_(
                0, gid, batch.labels.reshape(b, -1)[img, vox])
            keep = torch.nonzero(size > 0).flatten()  # ids lost to downsampling have no voxels
            img_k, size_k = keep // n1, size[keep]
            slot = img_k * c + cls[keep]  # (image, class) of each component
            size_in_class = torch.zeros(b * c, device=gid.device).index_add_(0, slot, size_k)
            voxels = float(comps.shape[1])
        p_own = torch.zeros(b * n1, device=own.device, dtype=own.dtype).index_add_(0, gid, own)[keep]
        p_in_class = torch.zeros(b * c, device=own.device, dtype=own.dtype).index_add_(0, slot, p_own)
        # P_c over the image minus over its class-c components: P_c on the voxels M_n keeps besides G_n.
        sum_p = batch.class_sums(1)[1]  # (B, C-1) foreground sums, shared with the Dice term
        sum_p = torch.cat([torch.zeros_like(sum_p[:, :1]), sum_p], 1).reshape(-1)
        p_outside = sum_p[slot] - p_in_class[slot]
        dice = (2 * p_own + self.smooth) / (p_own + p_outside + size_k + self.smooth).clamp_min(1e-8)
        ce_own = torch.zeros(b * n1, device=own.device, dtype=own.dtype).index_add_(0, gid, ce_fg)[keep]
        ce_in_class = torch.zeros(b * c, device=own.device, dtype=own.dtype).index_add_(0, slot, ce_own)
        ce_total = batch.voxel_ce.reshape(b, -1).sum(1)
        ce_mean = (ce_own + ce_total[img_k] - ce_in_class[slot]) / (size_k + voxels - size_in_class[slot])
        per_blob = (1.0 - dice) + ce_mean
        total = torch.zeros(b, device=own.device, dtype=own.dtype).index_add_(0, img_k, per_blob)
        count = torch.bincount(img_k, minlength=b)
        has = count > 0
        return (total[has] / count[has]).mean()
