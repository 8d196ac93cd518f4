"""Lovasz-Softmax (Berman, Rannen Triki & Blaschko, CVPR 2018): a convex surrogate of the Jaccard loss.

For each class c the errors ``e_v = |g_c(v) - p_c(v)|`` of the probabilities (not the logits: the survey's
defect) are sorted in decreasing order and dotted with the gradient of the Lovasz extension of the Jaccard loss,
computed from the ground truth in the same order (Alg. 1 of the paper). Classes absent from the ground truth
are skipped ("present" classes); the loss is the mean over the remaining classes, over the whole batch or per
image (then averaged over images, an image without any present class counting 0, as in the reference code).

Sorting dominates the cost. The errors are non-negative float32, whose bit patterns read as int32 are in the
same order as the values, so each row is sorted as int32 keys: a radix sort on the CPU (about 10x faster than
torch's float sort there) and on the GPU. Rows are sorted one by one: a single sort of (row, key) int64 keys was
measured slower than the loop (more radix passes), and there are at most B x C rows.
"""
from __future__ import annotations

import torch
from torch import Tensor

from autoloss.losses.base import SegBatch, SegLoss


@torch.no_grad()
def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. errors sorted decreasingly, row-wise.

    ``gt_sorted`` is a 0/1 tensor (any dtype) of shape (R, N).
    """
    n = gt_sorted.shape[-1]
    hits = gt_sorted.float().cumsum(-1)  # ground-truth voxels among the first i + 1 (cumsum on bool is slow)
    gts = hits[..., -1:]
    position = torch.arange(1, n + 1, device=gt_sorted.device, dtype=torch.float32)
    # 1 - intersection / union with intersection = gts - hits and union = gts - hits + (i + 1) >= 1
    # (the reference's second cumsum, of 1 - gt, is i + 1 - hits)
    jaccard = position / (gts - hits).add_(position)
    if n > 1:
        jaccard[..., 1:] -= jaccard[..., :-1].clone()
    return jaccard


@torch.no_grad()
def sort_rows_descending(errors: Tensor) -> Tensor:
    """Permutation sorting each row of non-negative float32 ``errors`` (R, N) in decreasing order."""
    keys = (2 ** 31 - 1) - errors.contiguous().view(torch.int32)  # decreasing error = increasing key
    values = torch.empty_like(keys)
    order = torch.empty(keys.shape, dtype=torch.int64, device=keys.device)
    for r in range(keys.shape[0]):
        torch.sort(keys[r], stable=True, out=(values[r], order[r]))
    return order


class LovaszSoftmaxLoss(SegLoss):
    """Lovasz-Softmax loss on probabilities; region mode: the same per sigmoid channel.

    ``L = mean_{c present} sum_i e_{c,(i)} * grad_i(g_c sorted by e_c)``. Ignored voxels get error 0 and no
    ground truth, which leaves every other voxel's contribution unchanged (they sort after all positive errors).
    """

    term = "lovasz"

    def __init__(self, per_image: bool = False, do_bg: bool = True, **kw):
        super().__init__(**kw)
        self.per_image = bool(per_image)
        self.do_bg = bool(do_bg)

    def compute(self, batch: SegBatch) -> Tensor:
        start = batch.first_channel(self.do_bg)
        p, g = batch.probs[:, start:], batch.onehot[:, start:]
        b, c = p.shape[:2]
        errors = (g - p).abs()
        if batch.maskf is not None:
            errors = errors * batch.maskf
        if self.per_image:
            e, gt = errors.reshape(b * c, -1), g.reshape(b * c, -1)
        else:  # one row per class over the whole batch
            e, gt = errors.transpose(0, 1).reshape(c, -1), g.transpose(0, 1).reshape(c, -1)
        with torch.no_grad():
            gt_bool = gt > 0.5  # gathered as bytes: a quarter of the memory traffic of float
            perm = sort_rows_descending(e.detach())
            # The Lovasz gradient of each voxel, put back in voxel order: the loss is then a plain dot product
            # whose backward is a multiplication (cheaper than back-propagating through a gather).
            grad = torch.empty_like(e).scatter_(1, perm, lovasz_grad(gt_bool.gather(1, perm)))
            present = gt.sum(1) > 0
        per_row = (e * grad).sum(1)
        if not self.per_image:
            return (per_row * present).sum() / present.sum().clamp_min(1)
        per_row, present = per_row.view(b, c), present.view(b, c)
        per_img = (per_row * present).sum(1) / present.sum(1).clamp_min(1)
        return per_img.mean()
