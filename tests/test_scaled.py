"""The compute-scaled network (autoloss.nnunet.scaled): derived from nnU-Net's real plans, consistent, deterministic,
trainable by nnU-Net's own nnUNetv2_train, and a training with it learns (a training that learns nothing fails)."""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoloss.errors import AutolossError
from autoloss.nnunet import scaled

# A generated dataset whose one object per case covers 30 % of a 192x192 image: a 96x96 patch cannot hold it with
# context, so the scaled networks train at a coarser spacing; Dice+CE learns it in a few dozen iterations.
SHAPE, RATIO, CASES = (192, 192), 0.3, 10


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(PreparedDataset of nnU-Net's 2d configuration, fingerprint) of the generated dataset: real nnU-Net
    fingerprint extraction, planning and preprocessing."""
    from autoloss.dataset import read_dataset
    from autoloss.fingerprinting import compute_fingerprint
    from autoloss.nnunet import env
    from autoloss.nnunet.prepare import prepare
    from autoloss.synthetic import make_synthetic_dataset

    work = tmp_path_factory.mktemp("scaled")
    snapshot = dict(os.environ)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.pop(k, None)
    try:
        env.configure(work, processes=2)
        root = make_synthetic_dataset(work / "data", dim=2, num_cases=CASES, shape=SHAPE, foreground_ratio=RATIO,
                                      objects_per_case=1, seed=3, dataset_id=971, name="ScaledLearn")
        ds = read_dataset(root)
        fp = compute_fingerprint(ds, num_workers=1)
        prepared = prepare(ds, "2d", work, num_processes=2, log=lambda s: None)
    finally:
        os.environ.clear()
        os.environ.update(snapshot)
    return prepared, fp


def _use(prepared) -> None:
    os.environ["nnUNet_raw"] = str(prepared.raw_dir.parent)
    os.environ["nnUNet_preprocessed"] = str(prepared.preprocessed_dir.parent)


def hippo_plans(hippo_prepared) -> dict:
    return json.loads((hippo_prepared / "nnunet" / "preprocessed" / "Dataset103_Hippocampus" / "nnUNetPlans.json")
                      .read_text())


def assert_consistent(network: dict, plans: dict) -> None:
    """nnU-Net's architecture rules, checked on the configuration nnU-Net itself resolves from the plans."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    child = copy.deepcopy(plans)
    child["configurations"][network["configuration"]] = network["plans_configuration"]
    config = PlansManager(child).get_configuration(network["configuration"])
    arch = config.network_arch_init_kwargs
    n = arch["n_stages"]
    assert n == len(arch["features_per_stage"]) == len(arch["kernel_sizes"]) == len(arch["strides"]) \
        == len(arch["n_conv_per_stage"])
    assert len(arch["n_conv_per_stage_decoder"]) == n - 1
    for axis, size in enumerate(config.patch_size):
        product = math.prod(s[axis] for s in arch["strides"])
        assert size % product == 0 and size // product >= 4, (config.patch_size, arch["strides"])
    assert list(arch["features_per_stage"]) == network["features"]
    assert config.batch_size == network["batch_size"] >= 2
    assert config.data_identifier == network["data_identifier"]


@pytest.mark.parametrize("size", ["small", "tiny"])
def test_scaled_network_is_a_consistent_nnunet_configuration_within_its_cost(generated, hippo_prepared, size):
    prepared, fp = generated
    for plans, parent in ((prepared.load_plans(), "2d"), (hippo_plans(hippo_prepared), "2d")):
        net = scaled.derive_network(plans, parent, size, fp, 1, 2, CASES)
        assert_consistent(net, plans)
        rule = scaled.SIZES[size]
        assert net["features"][0] == rule.base_features and max(net["features"]) == rule.max_features
        assert net["cost_per_iteration"] <= rule.cost_target + 1e-9
        assert net["cost_vs_full"] < 0.25  # nnU-Net's own plan costs several times more per iteration
        assert net["plans_identifier"] == f"nnUNetPlans_autoloss_{size}"
        assert net["configuration"] == f"2d_autoloss_{size}" and net["plans_configuration"]["inherits_from"] == "2d"
    full = scaled.derive_network(plans, "2d", "full", fp, 1, 2, CASES)
    assert full["configuration"] == "2d" and full["plans_identifier"] == "nnUNetPlans"
    assert full["features"] == list(plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"])


def test_spacing_follows_the_typical_object_and_never_blurs_a_thin_class(generated):
    prepared, fp = generated
    plans = prepared.load_plans()
    large = scaled.derive_network(plans, "2d", "tiny", fp, 1, 2, CASES)
    assert large["spacing_factor"] >= 2 and large["data_identifier"] == f"nnUNetPlans_2d_autoloss_{large['spacing_factor']}x"
    patch_mm = [p * s for p, s in zip(large["patch_size"], large["plans_configuration"]["spacing"])]
    assert all(mm >= 0.95 * n for mm, n in zip(patch_mm, SHAPE)), "the patch holds the whole image (object + context)"

    small_objects = copy.deepcopy(fp)
    for c in small_objects["classes"].values():
        c["object_size_weighted_mm"] = {"median": 200.0}  # ~16 mm across: a native-spacing patch holds it
    native = scaled.derive_network(plans, "2d", "tiny", small_objects, 1, 2, CASES)
    assert native["spacing_factor"] == 1 and native["data_identifier"] == "nnUNetPlans_2d"
    assert "spacing" not in native["plans_configuration"]

    thin = copy.deepcopy(fp)
    for c in thin["classes"].values():
        c["thickness_mm"] = {"median": 5.0}  # 2x spacing would leave it 2.5 voxels thick
    assert scaled.derive_network(plans, "2d", "tiny", thin, 1, 2, CASES)["spacing_factor"] == 1


def test_derived_once_stored_network_reused_and_words_name_it(generated):
    prepared, fp = generated
    first = scaled.network_for(prepared, "auto", "cpu", fp)
    assert first["size"] == "small" and first == scaled.network_for(prepared, "small", "cpu", fp)
    assert scaled.network_for(prepared, "auto", "cuda", fp)["size"] == "full"
    stored = first | {"batch_size": 3, "why": "derived by an earlier autoloss"}
    assert scaled.network_for(prepared, "auto", "cuda", fp, stored) is stored  # resume: the study's own network
    assert scaled.network_for(prepared, "tiny", "cpu", fp, stored)["size"] == "tiny"
    tiny = scaled.network_for(prepared, "tiny", "cpu", fp)
    text = scaled.describe(tiny)
    assert text.startswith("judged with a scaled 2d network (tiny): features 8-64, patch ")
    assert f"{tiny['spacing_factor']}x native spacing" in text and tiny["spacing_factor"] > 1
    assert "the exported trainer trains nnU-Net's own 2d configuration" in text
    assert scaled.label(tiny) == tiny["label"] == f"tiny 2d 8-64 {tiny['spacing_factor']}x"
    assert scaled.label(first) == "small 2d 16-128"  # native spacing: no factor in the label
    with pytest.raises(AutolossError, match="unknown network 'huge'"):
        scaled.network_for(prepared, "huge", "cpu", fp)


def test_scaled_plans_live_beside_nnunets_which_stay_untouched(generated, tmp_path):
    prepared, fp = generated
    folder = tmp_path / "pre"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(prepared.plans_file.read_text())
    before = hashlib.sha256((folder / "nnUNetPlans.json").read_bytes()).hexdigest()
    net = scaled.derive_network(prepared.load_plans(), "2d", "small", fp, 1, 2, CASES)
    path = scaled.write_plans(folder, net)
    assert path.name == "nnUNetPlans_autoloss_small.json"
    assert hashlib.sha256((folder / "nnUNetPlans.json").read_bytes()).hexdigest() == before
    written = json.loads(path.read_text())
    assert written["plans_name"] == "nnUNetPlans_autoloss_small" and "2d" in written["configurations"]
    assert scaled.write_plans(folder, net) == path  # the same configuration again: nothing to do
    with pytest.raises(AutolossError, match="exists with another 2d_autoloss_small configuration"):
        scaled.write_plans(folder, net | {"plans_configuration": net["plans_configuration"] | {"batch_size": 7}})


@pytest.mark.slow
def test_dice_ce_learns_with_the_scaled_network(generated, tmp_path):
    """The bar every CPU result rests on: Dice+CE at this fidelity reaches Dice >= 0.7 on full-resolution
    validation. A training that learns nothing (all background, or a broken spacing round trip) fails here."""
    from autoloss.losses import baseline_spec
    from autoloss.nnunet.run import Fidelity, run_trial

    prepared, fp = generated
    _use(prepared)
    net = scaled.network_for(prepared, "tiny", "cpu", fp)
    trained = scaled.apply(prepared, net, num_processes=2, log=lambda s: None)
    assert (trained.preprocessed_dir / net["data_identifier"]).is_dir()  # nnU-Net preprocessed the coarse spacing
    fidelity = Fidelity(configuration="2d", **LEARN)
    result = run_trial(baseline_spec(), trained, fidelity, tmp_path / "trial", seed=0)
    dice = result["metrics"]["mean"]["dice"]
    assert dice >= 0.7, f"Dice+CE reached only {dice:.3f} after {LEARN} with {net['label']}"


LEARN = dict(epochs=4, iterations_per_epoch=10, val_iterations_per_epoch=1)


@pytest.mark.slow
def test_nnunetv2_train_trains_the_scaled_plans(generated, tmp_path):
    """`nnUNetv2_train DATASET 2d_autoloss_tiny 0 -p nnUNetPlans_autoloss_tiny` (the fine-tune bases are built so)."""
    import torch

    from autoloss.exporting import export_trainer
    from autoloss.losses import baseline_spec

    prepared, fp = generated
    _use(prepared)
    net = scaled.network_for(prepared, "tiny", "cpu", fp)
    scaled.apply(prepared, net, num_processes=2, log=lambda s: None)
    trainers = tmp_path / "trainers"
    export_trainer(baseline_spec(), trainers, name="ScaledBase", epochs=1, iterations_per_epoch=3)
    env = dict(os.environ, nnUNet_results=str(tmp_path / "results"), nnUNet_extTrainer=str(trainers),
               nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1")
    train = subprocess.run([str(Path(sys.executable).with_name("nnUNetv2_train")), "971", net["configuration"], "0",
                            "-p", net["plans_identifier"], "-tr", "nnUNetTrainer_autoloss_ScaledBase", "-device",
                            "cpu"], env=env, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    fold = (tmp_path / "results" / prepared.dataset_name /
            f"nnUNetTrainer_autoloss_ScaledBase__{net['plans_identifier']}__{net['configuration']}" / "fold_0")
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    first_conv = next(v for k, v in weights.items() if k.endswith("conv.weight") and v.ndim == 4)
    assert first_conv.shape[0] == net["features"][0]  # the scaled network, not nnU-Net's 32 features
    assert (fold / "validation" / "summary.json").exists()  # nnU-Net's own validation on full-resolution labels
