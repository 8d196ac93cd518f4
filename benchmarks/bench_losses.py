"""Forward+backward time and peak memory of every registered loss against nnU-Net's DC_and_CE, same run, same
logits; and the boundary losses' distance maps against the CPU-scipy path the Loss Odyssey code used.

    python benchmarks/bench_losses.py                      # CPU: (2, 3, 64, 64, 64), float32
    python benchmarks/bench_losses.py --device cuda        # GPU: (2, 3, 128, 128, 128), bf16 autocast
    python benchmarks/bench_losses.py --shape 2 3 32 32 32 --reps 5 --losses DiceCE DiceBD

Bars (DESIGN.md): distribution / region losses within 1.25x of DC_and_CE; Lovasz within 3x; losses with distance
maps (BD, HD, DiceBD, DiceHD, DPCE) within 3x; distance maps at least 10x faster than the CPU-scipy path on a GPU.
Issue 10: DiceCE+clDice within 1.5x (soft skeleton on the device, 3 iterations); DiceCE+SkelRecall and
DiceCE+Blob within 1.1x, timed with their loader-made targets (skeleton, components) given, as in training; the
cost of making those targets per sample in the loader is printed separately.
The bars are GPU figures; on a CPU the distance maps and the sort cannot be hidden behind a GPU.

The target is synthetic but shaped like a segmentation (a large class-1 ellipsoid holding small class-2 blobs,
one image with class 2 absent); the logits are the one-hot target plus smooth and voxel noise, like a half-trained network.
CPU peak memory is not measured (torch's CPU allocator is invisible to tracemalloc); on CUDA it is
``torch.cuda.max_memory_allocated`` above the memory held before the call.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoloss.losses import LOSS_NAMES, build_loss, get_loss_def  # noqa: E402
from autoloss.losses.distance import edt, signed_distance  # noqa: E402
from autoloss.losses.targets import extra_target_from_batch, make_extra_target  # noqa: E402
from autoloss.spec import LossSpec  # noqa: E402


def make_batch(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, c, *spatial = shape
    grids = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in spatial], indexing="ij")
    target = torch.zeros(b, 1, *spatial)
    for i in range(b):
        centre = (torch.rand(len(spatial), generator=g) - 0.5) * 0.4
        radii = 0.35 + 0.25 * torch.rand(len(spatial), generator=g)
        inside = sum(((x - m) / r) ** 2 for x, m, r in zip(grids, centre, radii)) < 1
        target[i, 0][inside] = 1
        if c > 2 and i % 2 == 0:  # small lesions in every other image: class 2 absent from the rest
            for _ in range(3):
                m2 = centre + (torch.rand(len(spatial), generator=g) - 0.5) * radii
                blob = sum(((x - m) / 0.08) ** 2 for x, m in zip(grids, m2)) < 1
                target[i, 0][blob & inside] = min(2, c - 1)
    onehot = torch.zeros(b, c, *spatial).scatter_(1, target.long(), 1.0)
    # Spatially smooth errors (as a network makes) plus a little voxel noise.
    coarse = torch.randn(b, c, *[max(2, n // 8) for n in spatial], generator=g)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    smooth = torch.nn.functional.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=False)
    logits = 3.0 * (onehot - 0.5) + 3.0 * smooth + 0.5 * torch.randn(b, c, *spatial, generator=g)
    return logits.to(device), target.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loss(fn, logits, target, device, reps: int, warmup: int, amp_dtype, extra=None
              ) -> tuple[float, float | None]:
    """Median ms of forward+backward, and peak MB above the starting allocation (CUDA only). ``extra``: the
    loader-made targets of losses that have them, made once outside the timing (as the data loader does)."""
    x = logits.detach().clone().requires_grad_(True)
    args = (target,) if extra is None else (target, extra)

    def step():
        x.grad = None
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = fn(x, *args)
        loss.backward()

    for _ in range(warmup):
        step()
    sync(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    return median_ms(step, device, reps), peak


def bar_of(name: str) -> float:
    d = get_loss_def(name)
    if d.uses_distance_maps or name == "Lovasz":
        return 3.0
    if name == "DiceCE+clDice":
        return 1.5
    if d.extra_targets:
        return 1.1
    return 1.25


def group_of(name: str) -> str:
    d = get_loss_def(name)
    if name == "Lovasz":
        return "lovasz"
    if d.uses_distance_maps:
        return "boundary"
    if name == "DiceCE+clDice":
        return "cldice"
    return "loader" if d.extra_targets else "region"


def extra_for(name: str, target: torch.Tensor) -> torch.Tensor | None:
    names = get_loss_def(name).extra_targets
    return torch.cat([extra_target_from_batch(n, target) for n in names], 1) if names else None


def scipy_path(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """What the survey's code did each step: copy the target to the CPU, scipy EDT per image and foreground class
    (Kervadec's one_hot2dist), copy the maps back."""
    from scipy.ndimage import distance_transform_edt

    seg = target[:, 0].long().cpu().numpy()
    out = np.zeros((seg.shape[0], num_classes - 1) + seg.shape[1:], dtype=np.float32)
    for b in range(seg.shape[0]):
        for c in range(1, num_classes):
            pos = seg[b] == c
            if pos.any():
                neg = ~pos
                out[b, c - 1] = distance_transform_edt(neg) * neg - (distance_transform_edt(pos) - 1) * pos
    return torch.from_numpy(out).to(target.device)


def device_path(target: torch.Tensor, num_classes: int, backend: str) -> torch.Tensor:
    onehot = torch.cat([target == c for c in range(1, num_classes)], 1)
    return signed_distance(onehot.reshape(-1, *onehot.shape[2:]), backend=backend).view(onehot.shape)


def interleaved(fns: dict, logits, target, device, reps: int, warmup: int, amp_dtype) -> dict[str, float]:
    """Median ms of forward+backward of each ``name -> (fn, extra)``, one step of each per round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + reps):
        for name, (fn, extra) in fns.items():
            x = logits.detach().clone().requires_grad_(True)
            args = (target,) if extra is None else (target, extra)
            sync(device)
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = fn(x, *args)
            loss.backward()
            sync(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - t) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def monai_cldice_peer(ref) -> dict:
    """DC_and_CE + MONAI's SoftclDiceLoss(iter_=3) on the foreground channels: the clDice peer, when installed."""
    try:
        from monai.losses.cldice import SoftclDiceLoss
    except ImportError:
        return {}
    cl = SoftclDiceLoss(iter_=3, include_background=False)

    def peer(x, target):
        onehot = torch.zeros_like(x).scatter_(1, target.long(), 1.0)
        return ref(x, target) + cl(torch.softmax(x, 1), onehot)

    return {"DC_and_CE + MONAI clDice": (peer, None)}


def median_ms(fn, device, reps: int) -> float:
    """Median wall time of ``fn()`` in ms over ``reps`` synchronised calls (no warm-up)."""
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def time_fn(fn, device, reps: int) -> float:
    fn()  # warm-up
    return median_ms(fn, device, reps)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", type=int, nargs="+", help="B C X Y [Z]")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--amp", choices=("none", "bf16", "fp16"), help="autocast dtype (default: bf16 on CUDA)")
    ap.add_argument("--losses", nargs="+", default=list(LOSS_NAMES))
    ap.add_argument("--interleave", action="store_true",
                    help="time the losses round-robin, one step each per round (robust to load drift on shared "
                         "CPUs; no peak memory)")
    args = ap.parse_args(argv)

    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    device = torch.device(args.device)
    shape = tuple(args.shape) if args.shape else ((2, 3, 128, 128, 128) if device.type == "cuda" else (2, 3, 64, 64, 64))
    amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    logits, target = make_batch(shape, device)
    print(f"device {device} ({torch.get_num_threads()} CPU threads), shape {shape}, autocast {amp}, "
          f"reps {args.reps} (median after {args.warmup} warm-up)")

    ref = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                         weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    losses = {}
    for name in args.losses:
        loss = build_loss(LossSpec(name), batch_dice=True)
        if name == "Lovasz":  # its optional CE warm-up term is off by default: time the Lovasz term itself
            assert loss.weights["ce"] == 0.0
        losses[name] = (loss, extra_for(name, target))
    peers = monai_cldice_peer(ref) if "DiceCE+clDice" in losses else {}
    if args.interleave:
        ms = interleaved({"DC_and_CE": (ref, None), **losses, **peers}, logits, target, device, args.reps,
                         args.warmup, amp_dtype)
        ref_ms, ref_mb = ms.pop("DC_and_CE"), None
        rows = [(name, ms[name], None, bar_of(name)) for name in losses]
        peer_rows = [(name, ms[name]) for name in peers]
    else:
        ref_ms, ref_mb = time_loss(ref, logits, target, device, args.reps, args.warmup, amp_dtype)
        rows = []
        for name, (loss, extra) in losses.items():
            ms, mb = time_loss(loss, logits, target, device, args.reps, args.warmup, amp_dtype, extra)
            rows.append((name, ms, mb, bar_of(name)))
        peer_rows = [(name, time_loss(fn, logits, target, device, args.reps, args.warmup, amp_dtype)[0])
                     for name, (fn, _) in peers.items()]
        # The reference again at the end: the ratio uses the median of both measurements (drift on shared CPUs).
        ref_ms = statistics.median([ref_ms, time_loss(ref, logits, target, device, args.reps, args.warmup,
                                                      amp_dtype)[0]])

    fmt = "{:<26}{:>10}{:>8}{:>10}{:>7}  {}"
    print(fmt.format("loss", "ms", "ratio", "peak MB", "bar", "result"))
    mb_text = (lambda mb: "n/a" if mb is None else f"{mb:.0f}")
    print(fmt.format("DC_and_CE", f"{ref_ms:.1f}", "1.00x", mb_text(ref_mb), "", "nnU-Net reference"))
    worst = {"region": 0.0, "lovasz": 0.0, "boundary": 0.0, "cldice": 0.0, "loader": 0.0}
    for name, ms, mb, bar in rows:
        ratio = ms / ref_ms
        group = group_of(name)
        worst[group] = max(worst[group], ratio)
        print(fmt.format(name, f"{ms:.1f}", f"{ratio:.2f}x", mb_text(mb), f"{bar:g}x",
                         "pass" if ratio <= bar else "FAIL"))
    for name, ms in peer_rows:
        print(fmt.format(name, f"{ms:.1f}", f"{ms / ref_ms:.2f}x", "n/a", "", "peer"))

    c = shape[1]
    scipy_ms = time_fn(lambda: scipy_path(target, c), device, args.reps)
    dev_ms = time_fn(lambda: device_path(target, c, "auto"), device, args.reps)
    torch_ms = time_fn(lambda: device_path(target, c, "torch"), device, args.reps)
    check = device_path(target, c, "torch")
    err = float((check - scipy_path(target, c)).abs().max())
    print(f"distance maps of {shape[0]} x {c - 1} foreground volumes: CPU-scipy path {scipy_ms:.1f} ms; "
          f"on-device auto backend {dev_ms:.1f} ms; torch EDT {torch_ms:.1f} ms (max |diff| vs scipy {err:.2e})")
    made = {n for name, *_ in rows for n in get_loss_def(name).extra_targets}
    labels = target[:, 0].long().cpu().numpy()
    for n in sorted(made):  # what the data-loading workers pay per sample (one CPU process)
        per_sample = time_fn(lambda: [make_extra_target(n, labels[b]) for b in range(labels.shape[0])],
                             torch.device("cpu"), max(3, args.reps // 2)) / labels.shape[0]
        print(f"loader-made {n} target: {per_sample:.1f} ms per sample of {tuple(labels.shape[1:])} (CPU, in the "
              "augmentation workers, not in the training step)")
    if peer_rows:
        clms = next(ms for name, ms, *_ in rows if name == "DiceCE+clDice")
        print(f"DiceCE+clDice vs DC_and_CE + MONAI clDice (same run): {peer_rows[0][1] / clms:.2f}x faster")
    print(f"headline: worst distribution/region loss ratio {worst['region']:.2f}x (bar 1.25x); "
          f"Lovasz {worst['lovasz']:.2f}x (bar 3x); boundary {worst['boundary']:.2f}x (bar 3x); "
          f"clDice {worst['cldice']:.2f}x (bar 1.5x); loader-target losses {worst['loader']:.2f}x (bar 1.1x); "
          f"EDT speedup vs CPU scipy {scipy_ms / dev_ms:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
