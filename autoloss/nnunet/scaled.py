"""A compute-scaled nnU-Net configuration, so that a search's trainings learn on the machine at hand.

nnU-Net sizes its network for a GPU: its Montgomery 2d plan (512x512 patch, batch 6, features 32-512, 8 stages)
costs seconds per iteration on 2 CPU cores, and trainings short enough for a search there learn nothing. A
scaled network is derived from nnU-Net's own plan for the configuration, deterministically (no timing: the same
command gives the same network on any machine, at any load):

- fewer features (``Size.base_features`` doubling per stage up to ``Size.max_features``);
- the patch the largest that fits the size's cost target at batch 2, reduced the way nnU-Net's planner reduces
  it (the axis largest relative to the image first), with nnU-Net's own topology rule for the stages, strides
  and kernels (``get_pool_and_conv_props``: bottleneck at least 4 voxels per axis, patch divisible by the
  product of the strides); the batch then fills the cost target, capped like nnU-Net's (5 % of the dataset);
- a coarser spacing (2x, 4x, 8x the configuration's finest axis, coarse axes kept, as nnU-Net's 3d_lowres
  coarsens) when the patch would not hold the typical object (fingerprint: the object a typical voxel belongs
  to) ``CONTEXT`` times over, capped at the image, as long as every class stays ``MIN_THICKNESS_VOXELS`` thick.

The result is a configuration ``<parent>_autoloss_<size>`` with ``inherits_from: <parent>`` in a plans file of its
own (``nnUNetPlans_autoloss_<size>.json`` beside nnU-Net's plans, which are never changed): nnU-Net's trainer,
preprocessor and ``nnUNetv2_train DATASET <configuration> FOLD -p nnUNetPlans_autoloss_<size>`` use it as any
other configuration. A coarser spacing gets its own ``data_identifier``, preprocessed by nnU-Net's preprocessor.

The cost model (``network_cost``) counts, per sample and forward pass, the multiply-accumulates of every
convolution plus ``ACTIVATION_WEIGHT`` times the elements they write (normalisation, nonlinearity and copies are
memory-bound on a CPU and dominate narrow networks). ``benchmarks/calibrate_network_cost.py`` measures real
training steps against it; the constants and targets below come from that run (README, "Network size").
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from autoloss.errors import AutolossError

NETWORKS = ("full", "small", "tiny")
PLANS = "nnUNetPlans"  # nnU-Net's own plans name (autoloss.nnunet.prepare plans with nnU-Net's default planner)


@dataclass(frozen=True)
class Size:
    base_features: int
    max_features: int
    cost_target: float  # cost units (network_cost x batch) of one training iteration


# Calibrated on 2 CPU cores (benchmarks/calibrate_network_cost.py): a cost unit is about 0.1 s of forward+backward
# there; small ~ 16-128 features at 128x128, batch 8; tiny ~ 8-64 at 64x64, batch 8.
SIZES = {"small": Size(16, 128, 4.0), "tiny": Size(8, 64, 0.5)}
ACTIVATION_WEIGHT = 40.0  # one written element costs about as much as this many multiply-accumulates (CPU)
CONTEXT = 2.0  # the patch should span this many typical-object diameters per axis (capped at the image)
MIN_THICKNESS_VOXELS = 4.0  # a coarser spacing keeps every class's median thickness at least this many voxels
SPACING_FACTORS = (1, 2, 4, 8)
MIN_BATCH = 2
DATASET_SHARE = 0.05  # nnU-Net's cap: one batch covers at most 5 % of the dataset's voxels
MIN_FEATURE_MAP = 4  # nnU-Net's bottleneck edge length


def default_network(device: str) -> str:
    """``full`` (nnU-Net's own network) on a GPU, ``small`` on a CPU."""
    return "full" if str(device).startswith("cuda") else "small"


def plans_name(size: str) -> str:
    return PLANS if size == "full" else f"{PLANS}_autoloss_{size}"


def configuration_name(parent: str, size: str) -> str:
    return parent if size == "full" else f"{parent}_autoloss_{size}"


# ---------------------------------------------------------------- the cost model

def network_cost(arch: dict[str, Any], patch, in_channels: int, num_outputs: int) -> float:
    """Cost units of ONE sample's forward pass through a PlainConvUNet described by nnU-Net's ``arch_kwargs``
    (backward costs about twice the forward, so the sum is proportional): 1e9 multiply-accumulates per unit,
    each written activation counted as ``ACTIVATION_WEIGHT`` of them."""
    strides, kernels, features = arch["strides"], arch["kernel_sizes"], arch["features_per_stage"]
    n_conv, n_conv_dec = arch["n_conv_per_stage"], arch["n_conv_per_stage_decoder"]
    voxels, channels, macs, written = float(math.prod(patch)), in_channels, 0.0, 0.0
    resolution = []
    for s, f in enumerate(features):  # encoder: the first conv of a stage strides
        voxels /= math.prod(strides[s])
        for i in range(n_conv[s]):
            macs += voxels * math.prod(kernels[s]) * (channels if i == 0 else f) * f
            written += voxels * f
        channels = f
        resolution.append(voxels)
    for s in range(len(features) - 2, -1, -1):  # decoder: transposed conv, then convs on the concatenation
        voxels, f = resolution[s], features[s]
        macs += voxels * features[s + 1] * f
        written += voxels * f
        for i in range(n_conv_dec[s]):
            macs += voxels * math.prod(kernels[s]) * (2 * f if i == 0 else f) * f
            written += voxels * f
        macs += voxels * f * num_outputs  # deep-supervision head
    return (macs + ACTIVATION_WEIGHT * written) / 1e9


def iteration_cost(config: dict[str, Any], in_channels: int, num_outputs: int) -> float:
    """Cost units of one training iteration of a resolved nnU-Net configuration (its batch)."""
    arch = config["architecture"]["arch_kwargs"]
    return config["batch_size"] * network_cost(arch, config["patch_size"], in_channels, num_outputs)


# ---------------------------------------------------------------- the derivation

def resolved_configuration(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """A configuration with its ``inherits_from`` chain applied (nnU-Net's shallow update)."""
    configs = plans["configurations"]
    if name not in configs:
        raise AutolossError(f"nnU-Net's plans have no {name!r} configuration (available: {', '.join(configs)})")
    config = copy.deepcopy(configs[name])
    parent = config.pop("inherits_from", None)
    return resolved_configuration(plans, parent) | config if parent else config


def topology(spacing, patch):
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernels, patch, divisible = get_pool_and_conv_props(list(spacing), list(patch), MIN_FEATURE_MAP,
                                                                    999999)
    return ([[int(v) for v in s] for s in strides], [[int(v) for v in k] for k in kernels],
            [int(p) for p in patch], [int(d) for d in divisible])


def architecture(parent_arch: dict[str, Any], size: Size, strides, kernels) -> dict[str, Any]:
    """nnU-Net's architecture block with the scaled lists; every list has n_stages entries (decoder n_stages-1)."""
    n = len(strides)
    arch = copy.deepcopy(parent_arch)
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    arch["arch_kwargs"].update(n_stages=n, strides=strides, kernel_sizes=kernels,
                               features_per_stage=[min(size.max_features, size.base_features * 2 ** i)
                                                   for i in range(n)],
                               n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
    return arch


def _fit_patch(spacing, shape, size: Size, parent_arch, in_channels, num_outputs):
    """The largest patch (reduced in nnU-Net's order) whose batch-2 cost fits the size's target."""
    strides, kernels, patch, divisible = topology(spacing, [max(1, round(s)) for s in shape])
    while True:
        arch = architecture(parent_arch, size, strides, kernels)
        cost = network_cost(arch["arch_kwargs"], patch, in_channels, num_outputs)
        # the axis largest relative to the image first, as nnU-Net's planner reduces it
        axes = sorted(range(len(patch)), key=lambda i: (-patch[i] / shape[i], i))
        axes = [i for i in axes if patch[i] - divisible[i] >= 2 * MIN_FEATURE_MAP]
        if MIN_BATCH * cost <= size.cost_target or not axes:
            return patch, arch, cost
        axis, trial = axes[0], list(patch)
        trial[axis] -= divisible[axis]
        # nnU-Net's step: the divisor of the smaller patch, so that no valid size is skipped
        step = topology(spacing, trial)[3][axis]
        patch = list(patch)
        patch[axis] -= step
        strides, kernels, patch, divisible = topology(spacing, patch)


def _typical_object(fingerprint: dict[str, Any] | None) -> tuple[float | None, float | None, str]:
    """(largest typical-object diameter in mm, smallest median thickness in mm, the class it comes from)."""
    if not fingerprint:
        return None, None, ""
    dim = int((fingerprint.get("dataset") or {}).get("dim") or 3)
    diameter, thickness, name = None, None, ""
    for key, c in (fingerprint.get("classes") or {}).items():
        size = ((c.get("object_size_weighted_mm") or c.get("object_size_physical") or {}).get("median"))
        if size:
            d = (4 * size / math.pi) ** 0.5 if dim == 2 else (6 * size / math.pi) ** (1 / 3)
            if diameter is None or d > diameter:
                diameter, name = d, c.get("name") or key
        t = (c.get("thickness_mm") or {}).get("median")
        if t:
            thickness = t if thickness is None else min(thickness, t)
    return diameter, thickness, name


def derive_network(plans: dict[str, Any], parent: str, size_name: str, fingerprint: dict[str, Any] | None,
                   in_channels: int, num_outputs: int, num_training: int) -> dict[str, Any]:
    """The network record of ``size_name`` for nnU-Net's configuration ``parent``: JSON-able, stored in the study's
    identity, and all that :func:`write_plans` needs. ``full`` describes nnU-Net's own configuration unchanged."""
    if size_name not in NETWORKS:
        raise AutolossError(f"unknown network {size_name!r}; use one of {', '.join(NETWORKS)}")
    base = resolved_configuration(plans, parent)
    full_cost = iteration_cost(base, in_channels, num_outputs)
    if size_name == "full":
        return _record(size_name, parent, base, 1, full_cost, full_cost, base["data_identifier"],
                       "nnU-Net's own plan")
    size = SIZES[size_name]
    spacing = [float(s) for s in base["spacing"]]
    shape = [float(s) for s in base["median_image_size_in_voxels"]]
    diameter, thickness, cls = _typical_object(fingerprint)
    image_mm = [n * s for n, s in zip(shape, spacing)]
    need = [min(mm, CONTEXT * diameter) if diameter else 0.0 for mm in image_mm]
    chosen = None
    for factor in SPACING_FACTORS:
        coarse = [max(s, factor * min(spacing)) for s in spacing]
        if factor > 1 and thickness and thickness / min(coarse) < MIN_THICKNESS_VOXELS:
            break  # coarser would blur the thinnest class
        coarse_shape = [n * s / c for n, s, c in zip(shape, spacing, coarse)]
        patch, arch, cost = _fit_patch(coarse, coarse_shape, size, base["architecture"], in_channels, num_outputs)
        chosen = (factor, coarse, coarse_shape, patch, arch, cost)
        if all(p * c >= 0.95 * n for p, c, n in zip(patch, coarse, need)):
            break
    factor, coarse, coarse_shape, patch, arch, cost = chosen
    dataset_voxels = math.prod(coarse_shape) * num_training
    cap = max(MIN_BATCH, round(DATASET_SHARE * dataset_voxels / math.prod(patch)))
    batch = int(min(cap, max(MIN_BATCH, math.floor(size.cost_target / cost))))
    config = {"inherits_from": parent, "patch_size": patch, "batch_size": batch, "architecture": arch}
    data_identifier = base["data_identifier"]
    if factor > 1:
        data_identifier = f"{base['data_identifier']}_autoloss_{factor}x"
        config.update(data_identifier=data_identifier, spacing=coarse,
                      median_image_size_in_voxels=[round(s, 1) for s in coarse_shape])
    why = (f"typical object ({cls}) {diameter:.0f} mm across; the patch spans "
           + "x".join(f"{p * c:.0f}" for p, c in zip(patch, coarse)) + " mm"
           if diameter else "no object sizes in the fingerprint")
    return _record(size_name, parent, config, factor, batch * cost, full_cost, data_identifier, why)


def _record(size, parent, config, factor, cost, full_cost, data_identifier, why) -> dict[str, Any]:
    arch = config["architecture"]["arch_kwargs"]
    record = {"size": size, "parent": parent, "plans_identifier": plans_name(size),
            "configuration": configuration_name(parent, size), "spacing_factor": factor,
            "data_identifier": data_identifier, "features": [int(f) for f in arch["features_per_stage"]],
            "patch_size": [int(p) for p in config["patch_size"]], "batch_size": int(config["batch_size"]),
            "cost_per_iteration": round(cost, 4), "cost_vs_full": round(cost / full_cost, 4), "why": why,
            "plans_configuration": None if size == "full" else _jsonable(config)}
    return record | {"label": label(record)}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else list(o)))


def network_for(prepared, requested: str, device: str, fingerprint: dict[str, Any] | None,
                stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """The network a study trains: ``requested`` (``auto``: the stored study's size, else ``default_network``),
    the stored record itself on resume (derived once, at creation: the same network whatever changed since),
    else derived from nnU-Net's plans in ``prepared`` (a ``PreparedDataset`` of nnU-Net's own configuration)."""
    if requested != "auto" and requested not in NETWORKS:
        raise AutolossError(f"unknown network {requested!r}; use auto or one of {', '.join(NETWORKS)}")
    size = requested if requested != "auto" else (stored or {}).get("size") or default_network(device)
    if stored and stored.get("size") == size and stored.get("parent") == prepared.configuration:
        return stored
    dataset_json = prepared.load_dataset_json()
    return derive_network(prepared.load_plans(), prepared.configuration, size, fingerprint,
                          len(dataset_json["channel_names"]), len(dataset_json["labels"]), len(prepared.case_ids))


# ---------------------------------------------------------------- words

def label(network: dict[str, Any] | None) -> str:
    """A short name for tables: ``small 2d 16-128 4x``, ``full 3d_fullres 32-320``."""
    if not network:
        return "not recorded"
    f = network["features"]
    spacing = f" {network['spacing_factor']}x" if network.get("spacing_factor", 1) != 1 else ""
    return f"{network['size']} {network['parent']} {f[0]}-{max(f)}{spacing}"


def describe(network: dict[str, Any] | None) -> str:
    """The sentence outputs use to say which network judged the losses."""
    if not network:
        return ("network not recorded (a study from before autoloss recorded it: nnU-Net's own network of its "
                "configuration)")
    f, patch = network["features"], "x".join(map(str, network["patch_size"]))
    if network["size"] == "full":
        return (f"judged with nnU-Net's own {network['parent']} network: features {f[0]}-{max(f)}, patch {patch}, "
                f"batch {network['batch_size']}")
    spacing = (f", {network['spacing_factor']}x native spacing" if network["spacing_factor"] != 1
               else ", native spacing")
    return (f"judged with a scaled {network['parent']} network ({network['size']}): features {f[0]}-{max(f)}, "
            f"patch {patch}, batch {network['batch_size']}{spacing}, {network['cost_vs_full']:.3g} of nnU-Net's "
            f"cost per iteration; the exported trainer trains nnU-Net's own {network['parent']} configuration")


# ---------------------------------------------------------------- plans and preprocessing

def write_plans(preprocessed_dir: Path, network: dict[str, Any]) -> Path | None:
    """Write the scaled configuration into its own plans file beside nnU-Net's (None for ``full``). A file of that
    name holding a different configuration is refused, never overwritten (another study may train from it)."""
    if network["size"] == "full":
        return None
    parent_plans = json.loads((preprocessed_dir / f"{PLANS}.json").read_text())
    plans = copy.deepcopy(parent_plans)
    plans["plans_name"] = network["plans_identifier"]
    plans["configurations"][network["configuration"]] = network["plans_configuration"]
    path = preprocessed_dir / f"{network['plans_identifier']}.json"
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("configurations", {}).get(network["configuration"]) == network["plans_configuration"]:
            return path
        raise AutolossError(f"{path} exists with another {network['configuration']} configuration (made by "
                            "another autoloss version, or edited); move it away to let autoloss write its own")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(plans, indent=2))
    tmp.replace(path)
    return path


def apply(prepared, network: dict[str, Any], *, num_processes: int = 2, log: Callable[[str], None] = print):
    """The ``PreparedDataset`` that trains ``network``: its plans written, its spacing preprocessed once (a marker
    records the cases done, as for nnU-Net's own configuration)."""
    from autoloss.nnunet.prepare import MARKER

    if network["size"] == "full":
        return prepared
    write_plans(prepared.preprocessed_dir, network)
    scaled = replace(prepared, plans_identifier=network["plans_identifier"], configuration=network["configuration"])
    if network["spacing_factor"] == 1:
        return scaled  # nnU-Net's own preprocessed data of the parent configuration
    marker = prepared.preprocessed_dir / MARKER.format(configuration=network["data_identifier"])
    done = json.loads(marker.read_text()).get("case_ids") if marker.exists() else None
    if done != list(prepared.case_ids):
        from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess

        log(f"nnU-Net: preprocessing {prepared.dataset_name} at {network['spacing_factor']}x spacing for the "
            f"{network['size']} network ({network['data_identifier']}) ...")
        preprocess([prepared.dataset_id], plans_identifier=network["plans_identifier"],
                   configurations=(network["configuration"],), num_processes=(num_processes,),
                   show_progress_bar=False)
        marker.write_text(json.dumps({"case_ids": list(prepared.case_ids)}))
    return scaled
