"""Topology-aware terms for thin tubular structures: clDice (soft skeleton on the device) and Skeleton Recall
(recall of a tubed skeleton made in the data loader).

Both are meant to be added to a volumetric loss (registry: ``DiceCE+clDice``, ``DiceCE+SkelRecall``); alone they
reward thin predictions along the centre line and nothing else.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from autoloss.losses.base import DiceStyleLoss, SegBatch, ddp_active, gather_batch


def _pool(x: Tensor, kernel: tuple[int, ...]) -> Tensor:
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    return pool(x, kernel, 1, tuple(k // 2 for k in kernel))


def soft_erode(x: Tensor) -> Tensor:
    """Grey-value erosion with the cross-shaped element: the minimum of 1D min-pools along each axis.

    (Measured alternatives on a CPU: shifted-view min/max with a custom backward was faster forward but slower
    forward+backward than max-pooling, whose backward is one scatter by saved indices.)
    """
    nd = x.ndim - 2
    out = None
    for axis in range(nd):
        kernel = tuple(3 if a == axis else 1 for a in range(nd))
        eroded = -_pool(-x, kernel)
        out = eroded if out is None else torch.minimum(out, eroded)
    return out


def soft_dilate(x: Tensor) -> Tensor:
    """Grey-value dilation with the 3x3(x3) box."""
    return _pool(x, (3,) * (x.ndim - 2))


def soft_skeleton(x: Tensor, iters: int = 3) -> Tensor:
    """Soft skeleton of probabilities ``x`` (B, C, *spatial) by iterated min/max pooling (Shit et al. 2021)::

        skel = relu(x - open(x));  repeat iters times: x = erode(x); d = relu(x - open(x)); skel += relu(d - skel d)

    with ``open = dilate(erode(.))``. Identical to MONAI's ``soft_skel`` but each erosion is computed once (the
    erosion inside ``open(x)`` is the next iteration's ``x``): about half the pooling work.
    """
    eroded = soft_erode(x)
    skel = F.relu(x - soft_dilate(eroded))
    for _ in range(iters):
        x = eroded
        eroded = soft_erode(x)
        delta = F.relu(x - soft_dilate(eroded))
        skel = skel + F.relu(delta - skel * delta)
    return skel


class ClDiceLoss(DiceStyleLoss):
    """Soft clDice (Shit et al., "clDice - a Novel Topology-Preserving Loss Function for Tubular Structure
    Segmentation", CVPR 2021), per class::

        Tprec_c = (sum S(P_c) G_c + s) / (sum S(P_c) + s),   Tsens_c = (sum S(G_c) P_c + s) / (sum S(G_c) + s)
        L = 1 - mean_c 2 Tprec_c Tsens_c / (Tprec_c + Tsens_c)

    ``S`` is :func:`soft_skeleton` with ``iters`` iterations (MONAI ``SoftclDiceLoss(iter_=3, smooth=1)``), ``P``
    the softmax (sigmoid for regions) probabilities, ``G`` the one-hot target. Sums run over the image (and the
    batch with ``batch_dice``); MONAI pools the foreground classes and the batch into one ratio, which equals
    this with one foreground class and ``batch_dice``. Ignored voxels are zeroed in ``P`` and ``G`` before the
    skeletons. Always paired with a volumetric loss (``DiceCE+clDice``).
    """

    term = "cldice"

    def __init__(self, iters: int = 3, smooth: float = 1.0, **kw):
        super().__init__(smooth=smooth, **kw)
        self.iters = int(iters)

    def compute(self, batch: SegBatch) -> Tensor:
        start = batch.first_channel(self.do_bg)
        p = batch.probs[:, start:]
        if batch.maskf is not None:
            p = p * batch.maskf
        g = batch.onehot[:, start:]
        skel_p = soft_skeleton(p, self.iters)
        with torch.no_grad():
            skel_g = soft_skeleton(g, self.iters)
        sums = [(skel_p * g).sum(batch.axes), skel_p.sum(batch.axes), (skel_g * p).sum(batch.axes)]
        with torch.no_grad():
            sum_sg = skel_g.sum(batch.axes)
        sums.append(sum_sg)
        if self.batch_dice:
            if self.ddp and ddp_active():
                sums = [gather_batch(s) for s in sums]
            sums = [s.sum(0) for s in sums]
        inter_p, sum_sp, inter_g, sum_sg = sums
        tprec = (inter_p + self.smooth) / (sum_sp + self.smooth).clamp_min(1e-8)
        tsens = (inter_g + self.smooth) / (sum_sg + self.smooth).clamp_min(1e-8)
        return 1.0 - (2.0 * tprec * tsens / (tprec + tsens).clamp_min(1e-8)).mean()

    def extra_repr(self) -> str:
        return f"iters={self.iters}, " + super().extra_repr()


class SkeletonRecallLoss(DiceStyleLoss):
    """Skeleton Recall (Kirchhoff et al., ECCV 2024; MIC-DKFZ/Skeleton-Recall)::

        L = 1 - mean_c (sum P_c [S = c] + s) / (sum [S = c] + s)

    ``S`` is the tubed skeleton of the label map (``autoloss.losses.targets.tubed_skeleton``), made in nnU-Net's
    data-loading workers after augmentation and downsampled per deep-supervision scale like the label; ``P`` the
    softmax. smooth 1e-5, no background, batch sums with ``batch_dice`` (the paper's ``-recall`` plus 1). Softmax
    label maps only: region-based and ignore-label training are refused by the registry.
    """

    term = "skelrecall"
    extra_target = "skeleton"

    def compute(self, batch: SegBatch) -> Tensor:
        start = batch.first_channel(self.do_bg)
        skel = batch.extra(self.extra_target).long()
        probs = batch.probs
        b, c = probs.shape[:2]
        # The tube is a few % of the voxels: gather the probabilities there instead of a dense one-hot product.
        flat = skel.reshape(b, -1)
        img, vox = torch.nonzero(flat, as_tuple=True)
        cls = flat[img, vox]
        with torch.no_grad():
            sum_s = torch.zeros(b * c, device=probs.device).index_add_(0, img * c + cls, torch.ones_like(vox,
                                                                        dtype=torch.float32)).view(b, c)
        p_at = probs.reshape(b, c, -1)[img, cls, vox]
        inter = torch.zeros(b * c, device=probs.device, dtype=p_at.dtype).index_add_(0, img * c + cls, p_at)
        inter, sum_s = inter.view(b, c)[:, start:], sum_s[:, start:]
        if self.batch_dice:
            if self.ddp and ddp_active():
                inter, sum_s = gather_batch(inter), gather_batch(sum_s)
            inter, sum_s = inter.sum(0), sum_s.sum(0)
        recall = (inter + self.smooth) / (sum_s + self.smooth).clamp_min(1e-8)
        return 1.0 - recall.mean()
