"""Memory: records, the store (export/import, bad lines, concurrent writers), the learned ranking, warm start."""
from __future__ import annotations

import copy
import json
import multiprocessing as mp

import optuna
import pytest

from autoloss.cli import main
from autoloss.knowledge import ranking
from autoloss.knowledge.features import FEATURES, feature_dict
from autoloss.searching.memory import enqueue_warm_start
from autoloss.knowledge.schema import SCHEMA_VERSION, build_record
from autoloss.knowledge.seeds import seed_text
from autoloss.knowledge.store import SEED_FILE, KnowledgeStore
from autoloss.prior import recommend_from_fingerprint
from autoloss.searching import records as rec
from autoloss.searching.space import SearchSpace
from autoloss.spec import LossSpec


def fingerprint(name="F", fraction=0.03, object_voxels=3e5, objects=1, absent=0.0, boundary=0.05, dim=3):
    shape = [200, 256, 256] if dim == 3 else [512, 512]
    return {"autoloss_fingerprint_version": 1,
            "dataset": {"name": name, "dim": dim, "num_cases": 40, "shape_median": shape,
                        "spacing_median": [1.0] * dim, "path": "/secret/lab/path"},
            "classes": {"1": {"name": "organ", "label": 1, "voxel_fraction": {"mean": fraction, "median": fraction},
                              "objects_per_case": {"median": objects}, "object_size_voxels": {"median": object_voxels},
                              "absent_fraction": absent, "boundary_to_volume": {"median": boundary}}}}


def comparison(loss: str, gain: float, half_width: float = 0.02, params=None) -> dict:
    spec = LossSpec(loss, params or {})
    return {"spec": spec.to_dict(), "gain": gain, "ci": [gain - half_width, gain + half_width], "p_value": 0.01,
            "cases": 30, "per_case": {"1/case_007": {"candidate": 0.9, "baseline": 0.88}},
            "per_class": {"1": {"gain": gain, "ci": [gain - half_width, gain + half_width], "p_value": 0.01,
                                "cases": 30}}}


def record(name: str, fp: dict, wins: str = "DiceBD", gain: float = 0.05, params=None) -> dict:
    comps = [comparison(wins, gain, params=params), comparison("DiceFocal", -0.004)]
    verdict = {"decision": "switch", "loss": LossSpec(wins, params or {}).to_dict()}
    return build_record(fp | {"dataset": fp["dataset"] | {"name": name}},
                        {"configuration": "3d_fullres", "objective": "dice"}, comps, verdict)


def ranking_of(fp) -> list[tuple[str, float]]:
    return [(r.spec.name, round(r.score, 9)) for r in ranking.recommend_with_memory(fp)]


NEAR = [fingerprint(fraction=f, object_voxels=v) for f, v in ((0.028, 3.2e5), (0.033, 2.8e5), (0.03, 3.0e5))]
FAR = fingerprint("G", fraction=0.35, object_voxels=900, objects=300, boundary=0.9, dim=2)


def test_a_fresh_home_gives_exactly_the_rules(monkeypatch):
    assert KnowledgeStore().user_records() == []
    fresh = [r.to_dict() for r in ranking.recommend_with_memory(NEAR[2])]
    assert fresh == [r.to_dict() for r in recommend_from_fingerprint(NEAR[2])]  # the rules alone
    assert not any("memory" in r["reason"] for r in fresh)


def test_records_near_a_dataset_move_the_winner_up_and_are_named():
    target = fingerprint(fraction=0.031, object_voxels=2.9e5)
    rules = ranking_of(target)
    rules_far = ranking_of(FAR)
    KnowledgeStore().add([record(f"Dataset90{i}_Near", fp) for i, fp in enumerate(NEAR)])
    recs = ranking.recommend_with_memory(target)
    names = [r.spec.name for r in recs]
    before = [n for n, _ in rules]
    assert names.index("DiceBD") < before.index("DiceBD"), (before, names)
    bd = next(r for r in recs if r.spec.name == "DiceBD")
    assert "like Dataset90" in bd.reason and "DiceBD gained +5.0 Dice [+3.0, +7.0]" in bd.reason
    assert "(distance 0." in bd.reason
    assert any(e.startswith("knowledge record ") for e in bd.evidence)
    focal = next(r for r in recs if r.spec.name == "DiceFocal")
    assert focal.score < dict(rules)["DiceFocal"]  # it lost a little there: it moves down a little
    # a dataset far from all records: exactly the rules
    assert ranking_of(FAR) == rules_far


def test_inconclusive_records_are_kept_but_do_not_move_the_ranking():
    target = fingerprint(fraction=0.031, object_voxels=2.9e5)
    rules = ranking_of(target)
    smoke = []
    for i, fp in enumerate(NEAR):
        r = record(f"Dataset91{i}_Smoke", fp)
        r["verdict"]["decision"] = "inconclusive"  # e.g. a smoke search on a few cases
        smoke.append(r)
    KnowledgeStore().add(smoke)
    assert len(KnowledgeStore().user_records()) == 3
    assert ranking_of(target) == rules


def test_memory_weight_grows_with_records_and_closeness():
    target = fingerprint(fraction=0.031, object_voxels=2.9e5)
    model1 = ranking.MemoryModel([record("A", NEAR[0])])
    model3 = ranking.MemoryModel([record(f"A{i}", fp) for i, fp in enumerate(NEAR)])
    w1 = model1.predict(model1.neighbours(target), "DiceBD")[1]
    w3 = model3.predict(model3.neighbours(target), "DiceBD")[1]
    assert 0 < w1 < w3 < 1
    mid = fingerprint(fraction=0.01, object_voxels=1e5)
    assert model3.predict(model3.neighbours(mid), "DiceBD")[1] < w3
    assert ranking.MemoryModel([]).neighbours(target) == []


def test_features_tolerate_missing_and_new_fingerprint_fields():
    fp = fingerprint()
    f = feature_dict(fp)
    assert set(f) == set(FEATURES) and f["is_3d"] == 1.0 and f["max_absent"] == 0.0
    assert f["min_largest_share"] != f["min_largest_share"]  # v2 field absent -> NaN
    v2 = copy.deepcopy(fp)
    v2["classes"]["1"].update(largest_object_share={"median": 0.9}, thickness_voxels={"median": 4.0},
                              skeleton_ratio={"median": 0.05}, object_size_weighted_voxels={"median": 2e5},
                              regime="large-structure", something_new=[1, 2])
    g = feature_dict(v2)
    assert g["min_largest_share"] == 0.9 and g["max_skeleton_ratio"] == 0.05
    # records with and without v2 fields are comparable (nan-aware distance)
    model = ranking.MemoryModel([record("A", fp), record("B", v2)])
    assert len(model.neighbours(v2)) == 2


def test_records_hold_statistics_only():
    r = record("Dataset901_Near", NEAR[0])
    text = json.dumps(r)
    assert "/secret/lab/path" not in text and "case_007" not in text
    assert r["schema_version"] == SCHEMA_VERSION and r["results"][0]["ci"] == [pytest.approx(0.03),
                                                                               pytest.approx(0.07)]


def test_export_import_round_trip_and_duplicates(tmp_path, monkeypatch, capsys):
    store = KnowledgeStore()
    store.add([record("A", NEAR[0]), record("B", NEAR[1])])
    out = tmp_path / "share.jsonl"
    assert main(["knowledge", "export", str(out)]) == 0
    assert main(["knowledge", "export", str(out)]) == 2  # never overwritten without --force
    assert "--force" in capsys.readouterr().err
    monkeypatch.setenv("AUTOLOSS_HOME", str(tmp_path / "colleague"))
    assert main(["knowledge", "import", str(out)]) == 0
    assert KnowledgeStore().user_records() == store.user_records()
    assert main(["knowledge", "add", str(out)]) == 0
    assert "added 0 record(s), skipped 2" in capsys.readouterr().out
    assert len(KnowledgeStore().user_records()) == 2


@pytest.mark.parametrize("bad,needle", [("{not json", "not a JSON record"),
                                        ("NEWER", "newer than this autoloss reads"),
                                        ('{"schema_version": 1, "id": "x"}', "missing")])
def test_a_bad_line_names_file_and_line_and_loses_nothing(tmp_path, capsys, bad, needle):
    store = KnowledgeStore()
    store.add([record("A", NEAR[0])])
    before = store.file.read_text()
    good = record("B", NEAR[1])
    if bad == "NEWER":
        bad = json.dumps(good | {"schema_version": SCHEMA_VERSION + 1, "id": "abc"})
    path = tmp_path / "colleague.jsonl"
    path.write_text(json.dumps(good) + "\n" + bad + "\n")
    assert main(["knowledge", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:2" in err and needle in err
    assert store.file.read_text() == before  # the good line 1 was not added either: nothing half-imported


def _writer(home: str, tag: int, n: int) -> None:
    import os

    os.environ["AUTOLOSS_HOME"] = home
    store = KnowledgeStore()
    for i in range(n):
        store.add([record(f"W{tag}_{i}", fingerprint(fraction=0.01 + 0.0001 * i))])


def test_concurrent_writers_do_not_corrupt_the_store(tmp_path):
    home = str(tmp_path / "home")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(home, t, 25)) for t in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = KnowledgeStore(home).user_records()  # every line parses and validates
    assert len(records) == 50 and len({r["id"] for r in records}) == 50


def test_remove_and_show(capsys):
    store = KnowledgeStore()
    r = record("A", NEAR[0])
    store.add([r])
    assert main(["knowledge", "show", r["id"][:6]]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == r["id"]
    seed_id = store.seed_records()[0]["id"]
    assert main(["knowledge", "remove", seed_id]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["knowledge", "remove", r["id"]]) == 0
    assert store.user_records() == []
    assert main(["knowledge", "show", r["id"]]) == 2


def test_shipped_seed_file_is_what_seeds_py_builds():
    assert SEED_FILE.read_text() == seed_text()
    seeds = KnowledgeStore().seed_records()
    assert len(seeds) == 7 and all(s["kind"] == "seed" and s["estimated_features"] for s in seeds)
    assert all("Loss odyssey" in s["source"] or "Loss Odyssey" in s["source"] for s in seeds)
    tumour = [s for s in seeds if s["dataset"] == "LossOdyssey-liver_tumor"]
    assert {s["verdict"]["loss"]["name"] for s in tumour} == {"DiceHD", "DiceTopK"}


def test_warm_start_enqueues_the_nearest_winners_once():
    KnowledgeStore().add([record("Near", NEAR[0], wins="DiceFocal", params={"focal.gamma": 3.0}),
                          record("Far", FAR, wins="DiceTopK", params={"topk.k": 5.0})])
    study = optuna.create_study(direction="maximize")
    space = SearchSpace.load(("compound",))
    logs = []
    got = enqueue_warm_start(study, space, NEAR[1], [LossSpec("DiceCE")], 2, logs.append)
    assert got == [LossSpec("DiceFocal", {"focal.gamma": 3.0})]
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs[rec.SOURCE] == "memory"
    assert waiting[0].system_attrs["fixed_params"]["focal.gamma"] == 3.0 and "won on Near" in logs[0]
    assert enqueue_warm_start(study, space, NEAR[1], [], 2, logs.append) == []  # once per study
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1


def test_a_damaged_store_names_every_bad_line_and_serves_the_good_records(tmp_path, capsys):
    store = KnowledgeStore()
    first, second, third = record("A", NEAR[0]), record("B", NEAR[1]), record("C", NEAR[2])
    store.add([first])
    bad = ["{not json", '{"schema_version": 1, "id": "x"}']
    with open(store.file, "a") as fh:  # a hand edit gone wrong, and a record cut by a full disk
        fh.write(f"{bad[0]}\n{json.dumps(second, sort_keys=True)}\n{bad[1]}\n")
    named = [f"{store.file}:2: not a JSON record", f"{store.file}:4: "]
    for argv in (["knowledge", "list", "--json"], ["knowledge", "show", second["id"]],
                 ["knowledge", "export", str(tmp_path / "share.jsonl")]):
        assert main(argv) == 0, argv
        err = capsys.readouterr().err
        assert all(n in err for n in named) or argv[1] != "list", err  # named once per process and file state
    assert [r["id"] for r in store.user_records()] == [first["id"], second["id"]]  # the good records serve
    assert ranking.recommend_with_memory(NEAR[2])[0].spec.name == "DiceBD"  # and move the ranking
    store.add([third])
    assert main(["knowledge", "remove", first["id"]]) == 0
    assert all(b in store.file.read_text() for b in bad)  # removing a record loses no line of the user's
    capsys.readouterr()
    assert main(["knowledge", "check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and f"{store.file}:1: not a JSON record" in err[0] and f"{store.file}:3:" in err[1]
    assert main(["knowledge", "check", "--fix"]) == 0
    assert store.file.with_name("records.jsonl.rejected").read_text() == "".join(b + "\n" for b in bad)
    assert main(["knowledge", "check"]) == 0
    assert [r["id"] for r in store.user_records()] == [second["id"], third["id"]]


def test_gains_are_grouped_by_the_objective_they_were_measured_in():
    """A loss's Dice gain and its Dice+clDice gain are not one quantity: when near records measured it in the new
    dataset's own objective, only those predict; with none in it, every record does."""
    target = fingerprint(fraction=0.031, object_voxels=2.9e5)
    in_dice = record("InDice", NEAR[0], gain=0.05)
    composite = record("InComposite", NEAR[1], gain=-0.05)
    composite["metric"] = "classwise:1=dice+cldice"
    model = ranking.MemoryModel([in_dice, composite])
    near = model.neighbours(target)
    assert model.predict(near, "DiceBD", "dice")[0] == pytest.approx(0.05)
    assert model.predict(near, "DiceBD", "classwise:1=dice+cldice")[0] == pytest.approx(-0.05)
    pooled = model.predict(near, "DiceBD", "classwise:1=dice+nsd")[0]  # measured in neither: both count
    assert -0.05 < pooled < 0.05
    assert ranking._objective_of(target) == "dice"
