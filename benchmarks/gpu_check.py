"""Every GPU figure the README lacks, in one prepared run of at most 9 minutes on one H100/H200.

1. losses: forward+backward time and peak memory of every registered loss against nnU-Net's DC_and_CE in bf16 at
   (2, 3, 128, 128, 128) (the boundary losses with their distance maps, clDice with its soft skeleton, the
   loader-made targets given as in training), and the distance maps against the CPU-scipy path;
2. time allowing, a short real-network comparison: nnU-Net's own 3d_fullres network for a generated 128^3 dataset
   (PlainConvUNet, features 32-320, 6 stages: what nnU-Net's planner makes of it) trained from one seed on the same
   batches with Dice+CE (nnU-Net's DC_and_CE) and with one candidate loss, then validated on held-out volumes.

The GPU machine is bare: Python 3.12, torch, CuPy, SciPy, scikit-image, pandas; no nnunetv2, SimpleITK, Optuna, Ray,
cc3d, and no network. So this script needs torch only, plus nnU-Net's pure-Python packages (nnunetv2,
dynamic_network_architectures: 3.6 MB) carried in a folder made here beforehand; without them it skips what needs
them, in one line. cc3d's components (blob loss targets, made outside the timing) fall back to SciPy's labelling
per class, which gives the same components.

    python benchmarks/gpu_check.py --make-bundle .gpu_bundle          # here, once (an ignored folder)
    python benchmarks/gpu_check.py --bundle .gpu_bundle --out DIR     # on the GPU machine (9 minutes)
    python benchmarks/gpu_check.py --smoke --device cpu --bare        # every step at tiny sizes (a test runs it)

Each table is written (DIR/losses.md, DIR/network.md, DIR/gpu_check.json) as soon as it exists; the headline is
the last line printed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUNDLED = ("nnunetv2", "dynamic_network_architectures")  # pure Python; what the GPU machine lacks and we need
# Installed here, absent there: --bare refuses them, so a CPU run proves the script does without them.
ABSENT_THERE = ("SimpleITK", "batchgenerators", "acvl_utils", "blosc2", "optuna", "ray", "cc3d", "monai", "timm",
                "torchvision", "nibabel", "sklearn", "matplotlib", "rich", "yaml", "einops", "tifffile")


def refuse_absent() -> None:
    """Make the packages the GPU machine lacks unimportable here (None in sys.modules: ``import`` raises
    ImportError, ``importlib.util.find_spec`` answers None, as for a package that is not installed)."""
    for name in ABSENT_THERE:
        if name not in sys.modules or sys.modules[name] is None:
            sys.modules[name] = None


def make_bundle(dest: Path) -> None:
    """Copy nnU-Net's pure-Python packages from this environment into ``dest`` (carried with the tree)."""
    import importlib

    dest.mkdir(parents=True, exist_ok=True)
    for name in BUNDLED:
        src = Path(importlib.import_module(name).__file__).parent
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"bundle: {', '.join(BUNDLED)} -> {dest} ({size / 2 ** 20:.1f} MiB)")


class Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def _write(out: Path | None, name: str, text: str) -> None:
    print(text, flush=True)
    if out is not None:
        (out / name).write_text(text + "\n")


# ---------------------------------------------------------------- 1. losses

def _scipy_components(labels):
    """cc3d's multi-label components (full connectivity) with SciPy: each class labelled on its own."""
    import numpy as np
    from scipy import ndimage

    out, n = np.zeros(labels.shape, np.int16), 0
    for c in np.unique(labels[labels > 0]):
        lab, k = ndimage.label(labels == c, structure=np.ones((3,) * labels.ndim))
        out[lab > 0] = lab[lab > 0] + n
        n += k
    return out


def loss_table(device, shape, reps: int, warmup: int, out: Path | None) -> dict:
    import torch

    import bench_losses as bl
    from autoloss.losses import LOSS_NAMES, build_loss
    from autoloss.losses import targets as made_targets
    from autoloss.spec import LossSpec

    try:
        import cc3d  # noqa: F401
    except ImportError:
        made_targets.EXTRA_TARGETS["components"] = _scipy_components
        print("cc3d absent: the blob loss's component targets (made outside the timing) come from SciPy's labelling")
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    amp = torch.bfloat16 if device.type == "cuda" else None
    logits, target = bl.make_batch(shape, device)
    ref = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                         weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    ref_ms, ref_mb = bl.time_loss(ref, logits, target, device, reps, warmup, amp)
    rows, worst = [], {}
    for name in LOSS_NAMES:
        ms, mb = bl.time_loss(build_loss(LossSpec(name), batch_dice=True), logits, target, device, reps, warmup, amp,
                              bl.extra_for(name, target))
        ratio, bar, group = ms / ref_ms, bl.bar_of(name), bl.group_of(name)
        worst[group] = max(worst.get(group, 0.0), ratio)
        rows.append({"loss": name, "ms": ms, "ratio": ratio, "peak_mb": mb, "bar": bar, "pass": ratio <= bar})
    c = shape[1]
    scipy_ms = bl.time_fn(lambda: bl.scipy_path(target, c), device, max(2, reps // 2))
    edt_ms = bl.time_fn(lambda: bl.device_path(target, c, "auto"), device, reps)
    mb = (lambda v: "n/a" if v is None else f"{v:.0f}")
    lines = [f"### Losses on {device_name(device)}: forward + backward, {tuple(shape)}, "
             f"{'bf16 autocast' if amp else 'float32'}, median of {reps}",
             "", "| loss | ms | vs DC_and_CE | peak MB | bar | |", "|---|---|---|---|---|---|",
             f"| DC_and_CE (nnU-Net) | {ref_ms:.1f} | 1.00x | {mb(ref_mb)} | | |"]
    lines += [f"| {r['loss']} | {r['ms']:.1f} | {r['ratio']:.2f}x | {mb(r['peak_mb'])} | {r['bar']:g}x | "
              f"{'pass' if r['pass'] else '**miss**'} |" for r in rows]
    lines.append(f"\ndistance maps ({shape[0]} x {c - 1} volumes): on the device {edt_ms:.1f} ms, CPU-scipy round "
                 f"trip {scipy_ms:.1f} ms: {scipy_ms / edt_ms:.1f}x (bar 10x)")
    _write(out, "losses.md", "\n".join(lines))
    return {"reference_ms": ref_ms, "rows": rows, "worst": worst, "edt_speedup": scipy_ms / edt_ms}


# ---------------------------------------------------------------- 2. a real network

def nnunet_3d_fullres(patch, base: int = 32, cap: int = 320) -> dict:
    """The architecture block nnU-Net's planner gives a 1 mm isotropic dataset of median shape ``patch``."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, patch, _ = get_pool_and_conv_props([1.0] * 3, list(patch), 4, 999999)
    n = len(strides)
    return {"patch": [int(p) for p in patch], "arch": dict(
        n_stages=n, features_per_stage=[min(cap, base * 2 ** i) for i in range(n)],
        kernel_sizes=[list(k) for k in kernels], strides=[list(s) for s in strides], n_conv_per_stage=[2] * n,
        n_conv_per_stage_decoder=[2] * (n - 1), conv_bias=True, norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None, dropout_op_kwargs=None, nonlin_kwargs={"inplace": True})}


def build_network(block: dict, classes: int):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    net = PlainConvUNet(input_channels=1, num_classes=classes, conv_op=torch.nn.Conv3d,
                        norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU, deep_supervision=True,
                        **block["arch"])
    net.apply(net.initialize)  # nnU-Net's He initialisation (get_network_from_plans does the same)
    return net


def generated_volumes(n: int, shape, device, seed: int):
    """Images and labels on the device: a large ellipsoid (class 1) crossed by three thin tubes (class 2), a smooth
    bias and noise. Deterministic for a seed."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    grids = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    grids = grids.to(device)
    size = torch.tensor(shape, dtype=torch.float32, device=device).view(3, 1, 1, 1)
    images, labels = [], []
    for _ in range(n):
        centre = (0.35 + 0.3 * torch.rand(3, generator=g)).to(device).view(3, 1, 1, 1) * size
        radii = (0.18 + 0.12 * torch.rand(3, generator=g)).to(device).view(3, 1, 1, 1) * size
        label = (((grids - centre) / radii) ** 2).sum(0).lt(1).long()
        for _ in range(3):
            point = (0.2 + 0.6 * torch.rand(3, generator=g)).to(device).view(3, 1, 1, 1) * size
            d = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0).to(device).view(3, 1, 1, 1)
            rel = grids - point
            dist = (rel - (rel * d).sum(0, keepdim=True) * d).norm(dim=0)
            label[dist < max(1.5, shape[0] / 48)] = 2
        bias = sum(w * (grids[i] / shape[i] - 0.5) for i, w in enumerate(torch.randn(3, generator=g).tolist()))
        noise = torch.randn(tuple(shape), generator=g).to(device)
        images.append((label.float() + 0.5 * bias + 0.6 * noise)[None])
        labels.append(label[None])
    return torch.stack(images), torch.stack(labels)


def _downsampled_targets(label, strides):
    import torch

    out, current = [label.float()], label.float()
    for s in strides[1:-1]:
        current = torch.nn.functional.interpolate(current, scale_factor=[1 / v for v in s], mode="nearest")
        out.append(current)
    return out


def train(loss_name: str, block, data, iterations: int, device, seed: int, batch: int, deadline: float) -> dict:
    """Train nnU-Net's network with ``loss_name`` (DiceCE: nnU-Net's DC_and_CE) the way nnU-Net's trainer does
    (SGD 0.01, momentum 0.99 Nesterov, poly schedule, deep supervision, gradient clipping 12, bf16 on CUDA), then
    predict the held-out volumes whole; returns s/iteration and validation Dice per class."""
    import numpy as np
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    from autoloss.losses import build_loss
    from autoloss.spec import LossSpec

    (x_train, y_train), (x_val, y_val) = data
    torch.manual_seed(seed)
    net = build_network(block, 3).to(device)
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    sched = PolyLRScheduler(opt, 1e-2, iterations)
    base = (DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, 1, 1,
                           dice_class=MemoryEfficientSoftDiceLoss) if loss_name == "DiceCE"
            else build_loss(LossSpec(loss_name), batch_dice=True))
    n = len(block["arch"]["strides"])
    weights = np.array([1 / 2 ** i for i in range(n - 1)])
    weights[-1] = 0
    loss_fn = DeepSupervisionWrapper(base, weights / weights.sum())
    amp = torch.bfloat16 if device.type == "cuda" else None
    order = torch.Generator().manual_seed(seed)  # the same batches, in the same order, for every loss
    steps, done = [], 0
    for it in range(iterations):
        if time.perf_counter() > deadline:
            break
        idx = torch.randint(0, len(x_train), (batch,), generator=order)
        flip = torch.randint(0, 2, (3,), generator=order).tolist()
        dims = [d + 2 for d, f in enumerate(flip) if f]
        x, y = x_train[idx], y_train[idx]
        if dims:
            x, y = x.flip(dims), y.flip(dims)
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = net(x)
            value = loss_fn(out, _downsampled_targets(y, block["arch"]["strides"]))
        value.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        sched.step()
        _sync(device)
        steps.append(time.perf_counter() - t0)
        done = it + 1
    net.eval()
    dice = {1: [], 2: []}
    with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        for i in range(len(x_val)):
            pred = net(x_val[i:i + 1])[0].argmax(1)
            for c in dice:
                p, r = pred == c, y_val[i:i + 1, 0] == c
                denom = (p.sum() + r.sum()).item()
                dice[c].append(2 * (p & r).sum().item() / denom if denom else float("nan"))
    return {"loss": loss_name, "iterations": done, "s_per_iteration": statistics.median(steps[1:] or steps),
            "dice": {str(c): float(np.nanmean(v)) for c, v in dice.items()},
            "mean_dice": float(np.nanmean([np.nanmean(v) for v in dice.values()]))}


def network_comparison(device, patch, base: int, iterations: int, candidate: str, cases: tuple[int, int],
                       batch: int, clock: Clock, out: Path | None) -> dict | None:
    block = nnunet_3d_fullres(patch, base=base)
    data = (generated_volumes(cases[0], block["patch"], device, seed=1),
            generated_volumes(cases[1], block["patch"], device, seed=2))
    results = []
    for i, loss in enumerate(("DiceCE", candidate)):
        # each training gets an equal share of what is left (minus a margin for validation and writing)
        deadline = time.perf_counter() + max(0.0, (clock.left() - 20) / (2 - i))
        results.append(train(loss, block, data, iterations, device, seed=0, batch=batch, deadline=deadline))
    f = block["arch"]["features_per_stage"]
    lines = [f"### nnU-Net's 3d_fullres network on {device_name(device)}: patch {'x'.join(map(str, block['patch']))}, "
             f"batch {batch}, features {f[0]}-{max(f)}, {len(f)} stages; {cases[0]} generated training volumes, "
             f"{cases[1]} held out; one seed, the same batches",
             "", "| loss | iterations | s / iteration | Dice class 1 (ellipsoid) | Dice class 2 (tubes) | mean |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['loss']} | {r['iterations']} | {r['s_per_iteration']:.3f} | {r['dice']['1']:.3f} | "
              f"{r['dice']['2']:.3f} | {r['mean_dice']:.3f} |" for r in results]
    _write(out, "network.md", "\n".join(lines))
    return {"patch": block["patch"], "features": f, "batch": batch, "results": results}


# ---------------------------------------------------------------- driver

def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--bundle", type=Path, help="folder made by --make-bundle (put first on sys.path)")
    ap.add_argument("--make-bundle", type=Path, metavar="DIR", help="write the bundle here and exit")
    ap.add_argument("--out", type=Path, help="write the tables here as they are made")
    ap.add_argument("--budget-s", type=float, default=540.0, help="the whole run's time (default 9 minutes)")
    ap.add_argument("--smoke", action="store_true", help="every step at tiny sizes (CPU seconds)")
    ap.add_argument("--bare", action="store_true",
                    help="refuse the packages the GPU machine lacks (proves a CPU run does without them)")
    ap.add_argument("--candidate", default="DiceCE+clDice", help="the loss set against Dice+CE in step 2")
    ap.add_argument("--iterations", type=int, default=None, help="step 2 iterations per loss (default 250)")
    args = ap.parse_args(argv)
    if args.make_bundle:
        make_bundle(args.make_bundle)
        return 0
    clock = Clock(args.budget_s)
    if args.bare:
        refuse_absent()
    if args.bundle:
        sys.path.insert(0, str(args.bundle.resolve()))
    sys.path[:0] = [str(HERE), str(ROOT)]
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    try:
        import nnunetv2
        nnunet_from = str(Path(nnunetv2.__file__).parent.parent)
    except ImportError:
        nnunet_from = None
    print(f"gpu_check: torch {torch.__version__}, Python {sys.version.split()[0]}, {device_name(device)}; nnunetv2 "
          f"from {nnunet_from or 'nowhere (make a bundle: --make-bundle DIR, then --bundle DIR)'}", flush=True)
    if nnunet_from is None:
        print("skipped: both steps need nnU-Net's DC_and_CE and network code; carry them with --bundle")
        return 0
    figures: dict = {"device": device_name(device), "torch": torch.__version__}
    shape = (2, 3, 16, 16, 16) if args.smoke else (2, 3, 128, 128, 128)
    reps, warmup = (1, 1) if args.smoke else (7, 2)
    figures["losses"] = loss_table(device, shape, reps, warmup, args.out)
    _save(args.out, figures)
    need = 30 if args.smoke else 120  # two trainings of a useful length, and validation
    if clock.left() < need:
        print(f"skipped the network comparison: {clock.left():.0f} s left of {args.budget_s:.0f} (needs {need})")
    else:
        figures["network"] = network_comparison(
            device, (32, 32, 32) if args.smoke else (128, 128, 128), 8 if args.smoke else 32,
            args.iterations or (3 if args.smoke else 250), args.candidate, (2, 1) if args.smoke else (16, 4),
            2, clock, args.out)
        _save(args.out, figures)
    w = figures["losses"]["worst"]
    text = (f"headline ({device_name(device)}, {'smoke sizes' if args.smoke else 'bf16 (2,3,128,128,128)'}): "
            f"worst region loss {w.get('region', 0):.2f}x DC_and_CE (bar 1.25x), Lovasz {w.get('lovasz', 0):.2f}x "
            f"(bar 3x), boundary {w.get('boundary', 0):.2f}x (bar 3x), clDice {w.get('cldice', 0):.2f}x (bar 1.5x), "
            f"loader-target losses {w.get('loader', 0):.2f}x (bar 1.1x), distance maps "
            f"{figures['losses']['edt_speedup']:.1f}x faster than CPU scipy (bar 10x)")
    if figures.get("network"):
        base, cand = figures["network"]["results"]
        text += (f"; nnU-Net 3d_fullres step with {cand['loss']} {cand['s_per_iteration'] / base['s_per_iteration']:.2f}x"
                 f" Dice+CE's, validation Dice {cand['mean_dice']:.3f} vs {base['mean_dice']:.3f} after "
                 f"{base['iterations']}/{cand['iterations']} iterations")
    print(f"total {args.budget_s - clock.left():.0f} s")
    print(text)
    return 0


def _save(out: Path | None, figures: dict) -> None:
    if out is not None:
        (out / "gpu_check.json").write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
