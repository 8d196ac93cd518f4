"""A smoke search on a dataset whose fingerprint has tubular and many-instance classes: --metric auto judges by
Dice + clDice / lesion F1, the prior enqueues the topology and instance compounds, and they train end to end."""
from __future__ import annotations

import json

import pytest

from autoloss.fingerprinting import compute_fingerprint
from autoloss.dataset import read_dataset
from autoloss.nnunet.run import Fidelity
from autoloss.searching import records as rec
from autoloss.searching.confirm import ConfirmSettings
from autoloss.searching.runner import SearchConfig, _spaces_for, run_search
from autoloss.searching.verdict import compute_verdict
from conftest import HIPPO, MAX_CASES, TINY


@pytest.mark.slow
def test_smoke_search_with_regimes_trains_the_new_losses(search_work_dir):
    fp = compute_fingerprint(read_dataset(HIPPO, max_cases=MAX_CASES), num_workers=1)
    labels = sorted(fp["classes"])
    fp["classes"][labels[0]]["regime"] = "tubular"  # as the fingerprint's regime field will say
    fp["classes"][labels[1]]["regime"] = "many-instances"
    search_work_dir.mkdir(parents=True, exist_ok=True)
    (search_work_dir / "fingerprint.json").write_text(json.dumps(fp))
    cfg = SearchConfig(dataset=str(HIPPO), budget=3, fidelity=Fidelity(**(TINY | {"epochs": 1})),
                       work_dir=search_work_dir, device="cpu", max_cases=MAX_CASES, prior_top=3, pruner="none",
                       spaces=("topology",), confirm=ConfirmSettings(enabled=False))
    study = run_search(cfg, log=lambda s: None)
    settings = study.user_attrs[rec.SETTINGS]
    assert settings["objective"] == f"classwise:{labels[0]}=dice+cldice,{labels[1]}=dice+lesion_f1"
    done = rec.screening_trials(study)
    names = sorted(rec.spec_of(t).name for t in done)
    assert names == ["DiceCE", "DiceCE+Blob", "DiceCE+SkelRecall"], names
    for t in done:
        m = t.user_attrs[rec.METRICS]
        assert {"cldice", "lesion_f1", "dice"} <= set(m["mean"])
    assert compute_verdict(study).decision in ("keep", "inconclusive")
    results = (search_work_dir / "results.csv").read_text().splitlines()[0]
    assert "cldice_" in results and "lesion_f1_" in results
    assert "| cldice | lesion_f1 |" in (search_work_dir / "results.md").read_text()


def test_default_space_gains_the_topology_space_for_tubular_or_many_instance_classes():
    logs = []
    plain = {"classes": {"1": {"name": "a"}}}
    tubular = {"classes": {"1": {"name": "a", "regime": "tubular"}}}
    assert _spaces_for(("compound",), plain, logs.append) == ("compound",)
    assert _spaces_for(("compound",), tubular, logs.append) == ("compound", "topology") and logs
    assert _spaces_for(("single",), tubular, logs.append) == ("single",)  # an explicit choice is kept
