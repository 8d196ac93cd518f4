"""Schema 2 (autoloss.schema): the network that judged is in the study identity, results.csv, summary.txt and the
knowledge record; older studies migrate (to --network full) or are refused in one line; older records are read."""
from __future__ import annotations

import json

import optuna
import pytest

from autoloss import schema
from autoloss.cli import main
from autoloss.errors import AutolossError
from autoloss.knowledge import ranking
from autoloss.knowledge.schema import build_record, finish_record, network_of, validate_record
from autoloss.knowledge.store import KnowledgeStore
from autoloss.losses import baseline_spec
from autoloss.searching import records as rec
from autoloss.searching import study as studies
from autoloss.searching.results import summary_text, trials_frame
from autoloss.searching.verdict import compute_verdict
from autoloss.spec import LossSpec
from conftest import HIPPO, MAX_CASES, need_shared

SMALL = {"size": "small", "parent": "2d", "plans_identifier": "nnUNetPlans_autoloss_small",
         "configuration": "2d_autoloss_small", "spacing_factor": 4, "data_identifier": "nnUNetPlans_2d_autoloss_4x",
         "features": [16, 32, 64, 128, 128, 128], "patch_size": [128, 128], "batch_size": 6,
         "cost_per_iteration": 3.9, "cost_vs_full": 0.0104, "why": "typical object", "plans_configuration": {},
         "label": "small 2d 16-128 4x"}
FULL = {"size": "full", "parent": "2d", "plans_identifier": "nnUNetPlans", "configuration": "2d", "spacing_factor": 1,
        "data_identifier": "nnUNetPlans_2d", "features": [32, 64, 128, 256, 512, 512, 512, 512],
        "patch_size": [512, 512], "batch_size": 6, "cost_per_iteration": 377.0, "cost_vs_full": 1.0,
        "why": "nnU-Net's own plan", "plans_configuration": None, "label": "full 2d 32-512"}
V1_SETTINGS = {"dataset": "Dataset103_Hippocampus", "cases": ["a", "b"], "fidelity": {"epochs": 2},
               "objective": "dice", "losses": ["DiceCE"], "spaces": ["compound.yaml"]}


def v2(settings: dict, network: dict) -> dict:
    return settings | {"schema_version": schema.SCHEMA_VERSION, "network": network, "fidelity_mode": {"mode": "scratch"}}


def test_one_schema_version_and_a_field_is_one_line():
    assert schema.SCHEMA_VERSION == 2
    assert [f.name for f in schema.STUDY_FIELDS] == ["network", "fidelity_mode"]
    assert [f.name for f in schema.RESULT_COLUMNS] == ["network", "node"]
    assert schema.version_of(V1_SETTINGS) == 1 and schema.version_of(v2(V1_SETTINGS, SMALL)) == 2
    assert schema.with_defaults(V1_SETTINGS)["network"] is None
    assert schema.with_defaults(V1_SETTINGS)["fidelity_mode"] == {"mode": "scratch"}  # v1 trained from scratch
    assert schema.cell(SMALL) == "small 2d 16-128 4x" and schema.cell(3) == 3


def test_an_older_study_migrates_to_network_full_or_is_refused_in_one_line():
    storage = optuna.storages.InMemoryStorage()
    studies.open_study(storage, "s", V1_SETTINGS, 0, 3, 1)  # what an autoloss before schema 2 stored
    with pytest.raises(AutolossError) as err:
        studies.open_study(storage, "s", v2(V1_SETTINGS, SMALL), 0, 3, 1)
    assert "older autoloss (schema 1" in str(err.value) and "--network full" in str(err.value)
    assert "\n" not in str(err.value)
    study = studies.open_study(storage, "s", v2(V1_SETTINGS, FULL), 0, 3, 1)  # truthful: v1 trained the full net
    assert study.user_attrs[rec.SETTINGS] == v2(V1_SETTINGS, FULL)
    assert studies.saved_settings(storage, "s")["network"] == FULL
    assert studies.saved_settings(storage, "nothing") is None
    with pytest.raises(AutolossError, match="network differ"):
        studies.open_study(storage, "s", v2(V1_SETTINGS, SMALL), 0, 3, 1)
    newer = optuna.storages.InMemoryStorage()
    studies.open_study(newer, "s", V1_SETTINGS | {"schema_version": 3}, 0, 3, 1)
    with pytest.raises(AutolossError, match="newer autoloss"):
        studies.open_study(newer, "s", v2(V1_SETTINGS, FULL), 0, 3, 1)


def test_results_and_summary_name_the_network():
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(rec.SETTINGS, v2(V1_SETTINGS, SMALL))
    metrics = {"1": {"dice": 0.8, "nsd": 0.7}, "mean": {"dice": 0.8, "nsd": 0.7}}
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs={
        rec.SPEC: baseline_spec().to_dict(), rec.METRICS: metrics, rec.SOURCE: "prior"}))
    df = trials_frame(study)
    assert df["network"].tolist() == ["small 2d 16-128 4x"] and df["schema_version"].tolist() == [2]
    text = summary_text(study, compute_verdict(study))
    assert "judged with a scaled 2d network (small): features 16-128, patch 128x128, batch 6, 4x native " \
           "spacing" in text
    assert "the exported trainer trains nnU-Net's own 2d configuration" in text
    old = optuna.create_study(direction="maximize")  # a study from before schema 2 still reads
    old.set_user_attr(rec.SETTINGS, V1_SETTINGS)
    old.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={rec.SPEC: baseline_spec().to_dict(),
                                                                    rec.METRICS: metrics}))
    assert trials_frame(old)["network"].isna().all()
    assert "network not recorded" in summary_text(old, compute_verdict(old))


def _record(name: str, network: dict | None, version: int = schema.SCHEMA_VERSION) -> dict:
    fp = {"dataset": {"name": name, "dim": 3, "num_cases": 40, "shape_median": [200, 256, 256],
                      "spacing_median": [1.0] * 3},
          "classes": {"1": {"name": "organ", "label": 1, "voxel_fraction": {"median": 0.03},
                            "objects_per_case": {"median": 1}, "object_size_voxels": {"median": 3e5},
                            "absent_fraction": 0.0, "boundary_to_volume": {"median": 0.05}}}}
    spec = LossSpec("DiceBD")
    cmp = {"spec": spec.to_dict(), "gain": 0.05, "ci": [0.03, 0.07], "p_value": 0.01, "cases": 30,
           "per_case": {}, "per_class": {}}
    settings = {"configuration": "3d_fullres", "objective": "dice"} | ({"network": network} if network else {})
    record = build_record(fp, settings, [cmp], {"decision": "switch", "loss": spec.to_dict()})
    if version != schema.SCHEMA_VERSION:
        record = finish_record({k: v for k, v in record.items() if k != "id"} | {"schema_version": version})
    return record


def test_knowledge_records_carry_the_network_and_old_ones_read_without_it(capsys):
    new, old = _record("Dataset801_New", SMALL), _record("Dataset802_Old", None, version=1)
    assert new["schema_version"] == 2 and network_of(new)["label"] == "small 2d 16-128 4x"
    assert validate_record(json.loads(json.dumps(old)), "old.jsonl:1")["schema_version"] == 1
    assert network_of(old) is None
    KnowledgeStore().add([new, old])
    target = json.loads(json.dumps(new["fingerprint"]))
    reasons = " ".join(r for rec_ in ranking.recommend_with_memory(target) for r in rec_.reasons
                       if r.startswith("memory:"))
    # the memory never mixes networks without saying so: each named record says what judged it
    assert "Dataset801_New (distance 0.0, small 2d 16-128 4x network)" in reasons
    assert "Dataset802_Old (distance 0.0, network not recorded)" in reasons
    capsys.readouterr()
    assert main(["knowledge", "list", "--json", "--no-seeds"]) == 0
    rows = {r["dataset"]: r["network"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {"Dataset801_New": "small 2d 16-128 4x", "Dataset802_Old": None}


def test_cli_refuses_an_old_work_dir_in_one_line(search_work_dir, capsys):
    need_shared(HIPPO)
    storage = studies.make_storage(None, search_work_dir)
    studies.open_study(storage, "autoloss_Dataset103_Hippocampus_2d", V1_SETTINGS, 0, 3, 1)
    code = main(["search", str(HIPPO), "--work-dir", str(search_work_dir), "--config", "2d", "--device", "cpu",
                 "--max-cases", str(MAX_CASES), "--budget", "1", "--network", "small", "--no-report"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "older autoloss (schema 1" in err, err
