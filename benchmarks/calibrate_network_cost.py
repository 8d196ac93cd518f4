"""Calibrate the network cost model of ``autoloss.nnunet.scaled`` against real training steps on this machine.

Each network is built from an nnU-Net architecture block (the same ``get_network_from_plans`` nnU-Net's trainer
uses) and trained for a few steps the way nnU-Net's ``train_step`` does (forward with deep supervision, Dice+CE
through the deep-supervision wrapper, backward, gradient clipping, SGD step; no data loading). The model's two
terms (multiply-accumulates, written activations) are fitted to the medians by non-negative least squares.

Prints, per network: the model's cost, the measured seconds per iteration, the fitted prediction; then the
fitted constants (seconds per cost unit, activation weight) and, last, how well the model with the constants in
the code (``ACTIVATION_WEIGHT``) ranks and predicts the networks: the headline.

    python benchmarks/calibrate_network_cost.py [--threads 2] [--reps 3] [--quick]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average  # noqa: E402

# (dim, patch, base features, max features, batch): narrow and wide, 2D and 3D, from tiny to nnU-Net's size
GRID = [
    (2, (64, 64), 8, 64, 8), (2, (128, 128), 8, 64, 8), (2, (128, 128), 16, 128, 4), (2, (128, 128), 16, 128, 8),
    (2, (256, 256), 16, 128, 2), (2, (128, 128), 32, 512, 4), (2, (256, 256), 32, 512, 2),
    (2, (512, 512), 32, 512, 1), (3, (32, 32, 32), 8, 64, 2), (3, (40, 56, 40), 16, 128, 2),
    (3, (64, 64, 64), 16, 128, 2), (3, (40, 56, 40), 32, 320, 2),
]
QUICK = [GRID[0], GRID[2], GRID[5], GRID[8]]


def network_block(dim: int, patch, base: int, cap: int) -> tuple[dict, list[int]]:
    """nnU-Net's PlainConvUNet architecture block for ``patch`` (nnU-Net's topology), features base..cap."""
    from autoloss.nnunet import scaled

    strides, kernels, patch, _ = scaled.topology([1.0] * dim, list(patch))
    conv = "torch.nn.modules.conv.Conv2d" if dim == 2 else "torch.nn.modules.conv.Conv3d"
    norm = "torch.nn.modules.instancenorm.InstanceNorm2d" if dim == 2 else "torch.nn.modules.instancenorm.InstanceNorm3d"
    parent = {"network_class_name": "", "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
              "arch_kwargs": {"conv_op": conv, "conv_bias": True, "norm_op": norm,
                              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                              "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                              "nonlin_kwargs": {"inplace": True}}}
    return scaled.architecture(parent, scaled.Size(base, cap, 0.0), strides, kernels), patch


def training_step(block: dict, patch, batch: int, classes: int = 2):
    """A function running one nnU-Net-style training step of this network and returning its seconds."""
    import numpy as np
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    net = get_network_from_plans(block["network_class_name"], block["arch_kwargs"], block["_kw_requires_import"],
                                 1, classes, deep_supervision=True)
    opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    n = len(block["arch_kwargs"]["strides"])
    weights = np.array([1 / 2 ** i for i in range(n - 1)])
    weights[-1] = 0
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                 {}, 1, 1, dice_class=MemoryEfficientSoftDiceLoss),
                                  weights / weights.sum())
    x = torch.randn(batch, 1, *patch)
    targets, shape = [], list(patch)
    for s in block["arch_kwargs"]["strides"][:-1]:
        shape = [a // b for a, b in zip(shape, s)]
        targets.append(torch.randint(0, classes, (batch, 1, *shape)).float())

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = net(x)
        loss(out, targets[:len(out)]).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        return time.perf_counter() - start

    step()  # warm-up: oneDNN builds its kernels on the first call
    return step


def terms(block: dict, patch) -> tuple[float, float]:
    """(multiply-accumulates, written elements) of one sample's forward pass, in units of 1e9."""
    from autoloss.nnunet import scaled

    old = scaled.ACTIVATION_WEIGHT
    try:
        scaled.ACTIVATION_WEIGHT = 0.0
        macs = scaled.network_cost(block["arch_kwargs"], patch, 1, 2)
        scaled.ACTIVATION_WEIGHT = 1.0
        written = scaled.network_cost(block["arch_kwargs"], patch, 1, 2) - macs
    finally:
        scaled.ACTIVATION_WEIGHT = old
    return macs, written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="four networks only")
    args = ap.parse_args()
    import numpy as np
    import torch
    from scipy.optimize import nnls

    from autoloss.nnunet import scaled

    torch.set_num_threads(args.threads)
    os.environ.setdefault("nnUNet_compile", "false")
    print(f"threads {args.threads}, load before: {load_average()}")
    nets = []
    for dim, patch, base, cap, batch in (QUICK if args.quick else GRID):
        block, patch = network_block(dim, patch, base, cap)
        macs, written = terms(block, patch)
        nets.append((f"{dim}d {'x'.join(map(str, patch))} {base}-{cap} b{batch}", batch * macs, batch * written,
                     batch * scaled.network_cost(block["arch_kwargs"], patch, 1, 2),
                     training_step(block, patch, batch)))
    # Round-robin, fastest of the rounds: other jobs on a shared machine only ever add time.
    times = [[] for _ in nets]
    for r in range(args.reps):
        for i, net in enumerate(nets):
            times[i].append(net[4]())
        print(f"  round {r + 1}/{args.reps}: load {load_average()}", flush=True)
    rows = [(name, macs, written, cost, min(t)) for (name, macs, written, cost, _), t in zip(nets, times)]
    a = np.array([[r[1], r[2]] for r in rows])
    t = np.array([r[4] for r in rows])
    # relative errors matter (networks span 1000x): weight every row by 1/t
    (per_mac, per_written), _ = nnls(a / t[:, None], np.ones(len(t)))
    print("\n| network | cost units | s / iteration | fitted s | code model s |")
    print("|---|---|---|---|---|")
    per_unit = float(np.median(t / np.array([r[3] for r in rows])))
    for (name, macs, written, cost, sec) in rows:
        print(f"| {name} | {cost:.3f} | {sec:.3f} | {per_mac * macs + per_written * written:.3f} | "
              f"{per_unit * cost:.3f} |")
    errors = [abs(per_unit * r[3] - r[4]) / r[4] for r in rows]
    ranks = _spearman([r[3] for r in rows], list(t))
    print(f"\nfit: {per_mac:.4g} s per 1e9 MAC, {per_written:.4g} s per 1e9 written elements -> activation weight "
          f"{per_written / per_mac if per_mac else math.inf:.1f} (code: {scaled.ACTIVATION_WEIGHT}); "
          f"{per_unit:.4g} s per cost unit; load after: {load_average()}")
    print(f"headline: the code's cost model ranks the {len(rows)} networks with Spearman {ranks:.3f} and predicts "
          f"their s/iteration within {100 * statistics.median(errors):.0f} % (median; worst "
          f"{100 * max(errors):.0f} %) at {per_unit:.3g} s per cost unit")


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


if __name__ == "__main__":
    main()
