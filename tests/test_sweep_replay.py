"""The sweep replay (benchmarks/sweep_replay.py) on generated per-case tables with a known truth: it must call a
real winner a winner, find it, and never switch where nothing wins."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from autoloss.spec import LossSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sweep_replay as sr  # noqa: E402

GRID = [("DiceCE", {"name": "DiceCE", "params": {}}),
        ("DiceFocal", {"name": "DiceFocal", "params": {}}),
        ("DiceTopK10", {"name": "DiceTopK", "params": {"topk.k": 10.0}}),
        ("DiceTopK90", {"name": "DiceTopK", "params": {"topk.k": 90.0}})]


def write_sweep(folder: Path, gains: dict[str, float], cases_per_fold: int = 12, noise: float = 0.02) -> Path:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    meta = {"dataset": folder.name, "objective": "dice", "grid": [{"label": k, "spec": s} for k, s in GRID],
            "confirm_folds": [1, 2], "screen_fold": 0}
    (folder / "meta.json").write_text(json.dumps(meta))
    with open(folder / "cases.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arm", "loss", "fold", "seed", "case", "class", "dice"])
        for fold in range(5):
            for c in range(cases_per_fold):
                effect = rng.uniform(0.5, 0.85)
                for label, gain in gains.items():
                    w.writerow(["scratch", label, fold, 0, f"c{fold}_{c}", "1",
                                round(min(1, effect + gain + rng.normal(0, noise)), 5)])
                w.writerow(["scratch_seed2", "DiceCE", fold, 1, f"c{fold}_{c}", "1",
                            round(min(1, effect + rng.normal(0, noise)), 5)])
    return folder


def noisy_seed_pair(folder: Path, by: float = 0.04) -> Path:
    """Seed b's Dice+CE trainings moved by +-``by`` a fold (odd folds up, even down): large training noise."""
    rows = list(csv.reader(open(folder / "cases.csv")))
    with open(folder / "cases.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [r[:6] + [round(float(r[6]) + (by if int(r[2]) % 2 else -by), 5)]
                                              if r[0] == "scratch_seed2" else r for r in rows[1:]])
    return folder


def test_a_clear_winner_is_called_and_found(tmp_path):
    sweep = sr.load_sweep(write_sweep(tmp_path / "win", {"DiceCE": 0, "DiceFocal": 0.06, "DiceTopK10": -0.05,
                                                         "DiceTopK90": 0.0}))
    t = sr.truth(sweep)
    assert t["DiceFocal"]["call"] == "beats" and t["DiceTopK10"]["call"] == "loses"
    assert t["DiceTopK90"]["call"] == "ties"
    s = sr.summarise(sr.replay(sweep, seeds=12, budget=4), t)
    assert s["switched_to"].get("DiceFocal", 0) >= 0.8, s
    assert s["false_switch"] == 0 and s["regret_median"] == 0.0
    assert sr.real_aa(sweep) != "switch"


def test_nothing_wins_means_no_switch_and_no_regret(tmp_path):
    sweep = sr.load_sweep(write_sweep(tmp_path / "flat", {k: 0.0 for k, _ in GRID}))
    t = sr.truth(sweep)
    assert sr.best_true_gain(t) == (None, 0.0)
    s = sr.summarise(sr.replay(sweep, seeds=12, budget=4), t)
    assert s["switch"] <= 1 / 12 and s["regret_median"] == 0.0, s
    assert s["missed"] != s["missed"]  # nothing to miss: NaN


@pytest.mark.parametrize("always", ["keep", "switch-wrong"])
def test_the_summary_fails_a_product_that_always_keeps_or_switches_wrong(tmp_path, always):
    sweep = sr.load_sweep(write_sweep(tmp_path / "w", {"DiceCE": 0, "DiceFocal": 0.06, "DiceTopK10": -0.05,
                                                       "DiceTopK90": 0.0}))
    t = sr.truth(sweep)
    outcomes = [("keep", None)] * 10 if always == "keep" else [("switch", "DiceTopK10")] * 10
    s = sr.summarise(outcomes, t)
    if always == "keep":
        assert s["missed"] == 1.0 and s["regret_median"] == pytest.approx(t["DiceFocal"]["gain"])
    else:
        assert s["false_switch"] == 1.0 and s["regret_median"] > 0.09


def test_the_replay_extends_a_split_confirmation_as_the_product_does(tmp_path):
    # Folds 1-2: the first Dice+CE training is 3 points low, so DiceFocal (no real gain) beats it and not the
    # second Dice+CE training: a split. The product then confirms on folds 3-4 too, where nothing separates them,
    # and keeps; without the extension (the rule before) the split alone also keeps, on folds 1-2 only.
    sweep = sr.load_sweep(write_sweep(tmp_path / "split", {k: 0.0 for k, _ in GRID}, noise=0.002))
    base = sweep.tables["scratch"][sr.BASELINE]
    world = {sr.BASELINE: {f: {c: {"1": {"dice": v["1"]["dice"] - (0.03 if f in (1, 2) else 0.0)}}
                               for c, v in base[f].items()} for f in base},
             sr.BASELINE_B: base, "DiceFocal": sweep.tables["scratch"]["DiceFocal"]}
    specs = {g["label"]: g["spec"] for g in sweep.grid}
    sweep.confirm_folds = [1, 2]
    v = sr.confirm_and_decide(world, ["DiceFocal"], sweep, specs)
    assert v.extended_from == [1, 2] and v.confirm_folds == [1, 2, 3, 4] and v.decision == "keep", v.message
    sweep.extend = False
    v = sr.confirm_and_decide(world, ["DiceFocal"], sweep, specs)
    assert not v.extended_from and v.confirm_folds == [1, 2] and v.split == [LossSpec.from_dict(specs["DiceFocal"]).key()]


def test_planted_winner_is_dice_ce_shifted_by_two_points():
    base = {0: {"a": {"1": {"dice": 0.5, "hd95": 3.0}}, "b": {"1": {"dice": 0.995}}}}
    planted = sr.planted_table(base, "dice")
    assert planted[0]["a"]["1"] == {"dice": pytest.approx(0.52), "hd95": 3.0}
    assert planted[0]["b"]["1"]["dice"] == pytest.approx(1.015)  # no ceiling: exactly +2 points


def test_the_replay_screens_every_grid_loss_once_before_repeating(tmp_path):
    """The product's repeat rule in the replay: with a budget above the grid's size every grid loss (the planted
    one too, which the prior does not know) is screened, none twice; before the rule TPE spent the budget on
    repeats and left losses unscreened in some seeds."""
    sweep = sr.load_sweep(write_sweep(tmp_path / "flat", {k: 0.0 for k, _ in GRID}))
    tables = {k: dict(v) for k, v in sweep.tables["scratch"].items()}
    tables[sr.PLANTED] = sr.planted_table(tables[sr.BASELINE], sweep.objective)
    order = [k for k, _ in GRID] + [sr.PLANTED]
    never_screened_before = 0
    for seed in range(15):
        screened = [k for k, _ in sr.screen(tables, order, sweep, budget=8, seed=seed)]
        assert sorted(screened) == sorted(order), screened  # every loss once: the grid is exhausted
        old = [k for k, _ in sr.screen(tables, order, sweep, budget=8, seed=seed, train_repeats=True)]
        assert len(old) == 8
        never_screened_before += sr.PLANTED not in old
    assert never_screened_before > 0  # the rule changes what is screened (else this test proves nothing)


def test_a_sweep_in_progress_is_read_on_the_folds_every_loss_finished(tmp_path):
    folder = write_sweep(tmp_path / "partial", {k: 0.0 for k, _ in GRID})
    rows = list(csv.reader(open(folder / "cases.csv")))
    keep = [rows[0]] + [r for r in rows[1:] if not (r[1] == "DiceFocal" and r[2] in ("3", "4"))]
    with open(folder / "cases.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(keep)
    sweep = sr.load_sweep(folder)
    assert sr.common_folds(sweep) == [0, 1, 2]
    sr.restrict(sweep, sr.common_folds(sweep))
    assert all(t["cases"] == 36 for t in sr.truth(sweep).values())


def test_a_sweep_with_only_its_screening_fold_done_is_skipped_not_replayed(tmp_path, monkeypatch, capsys):
    folder = write_sweep(tmp_path / "sweeps" / "early", {k: 0.0 for k, _ in GRID})
    rows = list(csv.reader(open(folder / "cases.csv")))
    with open(folder / "cases.csv", "w", newline="") as fh:  # DiceFocal finished fold 0 only
        csv.writer(fh).writerows([rows[0]] + [r for r in rows[1:] if not (r[1] == "DiceFocal" and r[2] != "0")])
    monkeypatch.setattr(sys, "argv", ["sweep_replay.py", str(tmp_path / "sweeps"), "--seeds", "2"])
    sr.main()
    out = capsys.readouterr().out
    assert "early: sweep in progress (every grid loss on fold(s) [0]" in out and "skipped" in out
    assert "replay (" not in out


def test_a_finished_sweep_writes_a_valid_measured_knowledge_record(tmp_path, monkeypatch):
    import sweep_records

    from autoloss.searching import verdict

    from autoloss.knowledge.schema import best_loss, validate_record

    montgomery = Path(sr.DEFAULT_DIR) / "MontgomeryLungs"
    folder = write_sweep(tmp_path / "win", {"DiceCE": 0, "DiceFocal": 0.06, "DiceTopK10": -0.05, "DiceTopK90": 0.0})
    meta = json.loads((folder / "meta.json").read_text())
    meta |= {k: json.loads((montgomery / "meta.json").read_text())[k] for k in ("fidelity", "network_config")}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "fingerprint.json").write_text((montgomery / "fingerprint.json").read_text())
    record = validate_record(sweep_records.sweep_record(folder), "test")
    assert record["verdict"]["decision"] == "switch" and record["verdict"]["loss"]["name"] == "DiceFocal"
    assert best_loss(record) == "DiceFocal"
    assert {r["spec"]["name"] for r in record["results"]} == {"DiceFocal", "DiceTopK"}
    assert all(r["cases"] == 60 for r in record["results"])  # every case of the 5 folds
    # the product's rule: a 6-point gain clears trainings that move by 4 points; a 1.5-point one does not
    noisy = noisy_seed_pair(folder)
    assert sweep_records.sweep_record(noisy)["verdict"]["decision"] == "switch"
    small = noisy_seed_pair(write_sweep(tmp_path / "small", {"DiceCE": 0, "DiceTopK10": 0.015, "DiceTopK90": 0.0,
                                                             "DiceFocal": 0.0}, noise=0.005))
    (small / "meta.json").write_text(json.dumps(meta | {"dataset": "small"}))
    (small / "fingerprint.json").write_text((montgomery / "fingerprint.json").read_text())
    assert sweep_records.sweep_record(small)["verdict"]["decision"] == "keep"
    monkeypatch.setattr(verdict, "RETRAINING_CHECK", False)  # the rule before: a per-case test alone switches
    assert sweep_records.sweep_record(small)["verdict"]["decision"] == "switch"

    rows = list(csv.reader(open(folder / "cases.csv")))
    with open(folder / "cases.csv", "w", newline="") as fh:  # a fold missing: no record yet
        csv.writer(fh).writerows([rows[0]] + [r for r in rows[1:] if not (r[1] == "DiceFocal" and r[2] == "4")])
    assert sweep_records.sweep_record(folder) is None


def test_a_tie_is_not_a_records_best_loss():
    from autoloss.knowledge.schema import best_loss

    tie = {"results": [{"spec": {"name": "DiceTopK"}, "gain": 0.002, "ci": [-0.001, 0.005]}]}
    win = {"results": [{"spec": {"name": "DiceTopK"}, "gain": 0.002, "ci": [0.001, 0.004]}]}
    published = {"results": [{"spec": {"name": "DiceTopK"}, "gain": 0.002, "ci": None}]}
    assert (best_loss(tie), best_loss(win), best_loss(published)) == ("DiceCE", "DiceTopK", "DiceTopK")
    # a measured record that decided says its best itself: a larger gain that cost a class's Dice lost the verdict
    trades = {"results": [{"spec": {"name": "DiceCE+Blob"}, "gain": 0.039, "ci": [0.033, 0.045]},
                          {"spec": {"name": "DiceCE+SkelRecall"}, "gain": 0.017, "ci": [0.012, 0.021]}],
              "verdict": {"decision": "switch", "loss": {"name": "DiceCE+SkelRecall", "params": {}}}}
    assert best_loss(trades) == "DiceCE+SkelRecall"
    assert best_loss(trades | {"verdict": {"decision": "keep", "loss": None}}) == "DiceCE"


def test_run_noise_moves_a_whole_training_as_the_seed_pair_did(tmp_path):
    """The seed pair's fold means differ (a training-level shift); the replay's noise carries it, shared by every
    case of a training, and the per-case residuals have it taken out."""
    folder = write_sweep(tmp_path / "shift", {k: 0.0 for k, _ in GRID})
    rows = list(csv.reader(open(folder / "cases.csv")))
    with open(folder / "cases.csv", "w", newline="") as fh:  # seed b's fold 1 a whole 3 points lower
        csv.writer(fh).writerows([rows[0]] + [r[:6] + [round(float(r[6]) - 0.03, 5)] if r[0] == "scratch_seed2"
                                              and r[2] == "1" else r for r in rows[1:]])
    sweep = sr.load_sweep(folder)
    noise, iid = sr.Noise(sweep), sr.Noise(sweep, training_shift=False)
    shifts = [s[("1", "dice")] for s in noise.shifts]
    assert max(map(abs, shifts)) == pytest.approx(0.03 / np.sqrt(2), abs=0.01)
    assert abs(np.mean([d[("1", "dice")] for d in noise.draws])) < 1e-9
    assert not any(s[("1", "dice")] for s in iid.shifts)
    assert noise.shift_sd > iid.shift_sd == 0.0
    shift = {("1", "dice"): 0.05}
    case = {"1": {"dice": 0.5}}
    rng = np.random.default_rng(0)
    moved = [noise.apply(rng, case, shift)["1"]["dice"] - 0.5 for _ in range(400)]
    assert np.mean(moved) == pytest.approx(0.05, abs=0.005)


def test_the_truth_says_whether_a_gain_clears_the_seed_pairs_training_noise(tmp_path):
    """A 6-point winner clears the retraining noise the Dice+CE seed pair measures; a 1.5-point one does not when
    the seed pair's trainings differ by 4 points a fold (both still "beat" case by case)."""
    gains = {"DiceCE": 0, "DiceFocal": 0.06, "DiceTopK10": 0.015, "DiceTopK90": 0.0}
    folder = noisy_seed_pair(write_sweep(tmp_path / "noisy", gains, noise=0.005))
    t = sr.truth(sr.load_sweep(folder))
    assert t["DiceFocal"]["call"] == t["DiceTopK10"]["call"] == "beats"
    assert t["DiceFocal"]["clears_retraining"] and not t["DiceTopK10"]["clears_retraining"]
    assert t["DiceTopK10"]["retraining_margin"] > 0.015


def test_a_loss_trained_twice_is_judged_on_the_mean_of_its_two_trainings(tmp_path, monkeypatch):
    """A 3-point gain from one training is within 4-point training noise; trained again (``--seed2-losses``) it
    replicates and the two trainings' mean clears the halved noise, while a gain that does not replicate ties."""
    gains = {"DiceCE": 0, "DiceFocal": 0.03, "DiceTopK10": 0.03, "DiceTopK90": 0.0}
    folder = noisy_seed_pair(write_sweep(tmp_path / "twice", gains, noise=0.005))
    rows = list(csv.reader(open(folder / "cases.csv")))
    with open(folder / "cases.csv", "a", newline="") as fh:  # seed 1: Dice+CE's seed 1 + 3 points, + nothing
        for r in rows[1:]:
            if r[0] == "scratch_seed2":
                csv.writer(fh).writerows([["scratch_seed2", "DiceFocal", *r[2:6], round(float(r[6]) + 0.03, 5)],
                                          ["scratch_seed2", "DiceTopK10", *r[2:6], r[6]]])
    t = sr.truth(sr.load_sweep(folder))
    focal, topk = t["DiceFocal"], t["DiceTopK10"]
    assert focal["call"] == topk["call"] == "beats" and not focal["clears_retraining"]
    assert focal["replication"]["gain"] == pytest.approx(0.03, abs=1e-3) and focal["trained_call"] == "beats"
    assert focal["two_trainings"]["retraining_margin"] < 0.03 < focal["retraining_margin"]
    assert topk["replication"]["gain"] == pytest.approx(0.0, abs=1e-3) and topk["trained_call"] == "ties"
    assert topk["trained_gain"] == pytest.approx(0.015, abs=1e-3)
    assert "replication" not in t["DiceTopK90"] and t["DiceTopK90"]["trained_call"] == "ties"
    assert sr.best_true_gain(t, training_aware=True) == ("DiceFocal", pytest.approx(0.03, abs=1e-3))
    wrong = sr.summarise([("switch", "DiceTopK10")] * 4, t, training_aware=True)
    assert wrong["false_switch"] == 1 and wrong["regret_median"] == pytest.approx(0.015, abs=2e-3)
    assert sr.summarise([("switch", "DiceTopK10")] * 4, t)["false_switch"] == 0  # case by case it "beats"
    from autoloss.searching import verdict
    monkeypatch.setattr(verdict, "RETRAINING_CHECK", False)  # replaying the rule before: the truth stays the same
    assert sr.truth(sr.load_sweep(folder))["DiceFocal"]["retraining_margin"] == focal["retraining_margin"]


def test_each_class_keeps_its_own_run_noise(tmp_path):
    """A class the seed pair barely moves must not borrow another class's spread (AxonMyelin: axons moved by
    points between seeds, myelin by tenths; pooled, the myelin noise hid a half-point myelin loss)."""
    folder = write_sweep(tmp_path / "classes", {k: 0.0 for k, _ in GRID})
    rows = list(csv.reader(open(folder / "cases.csv")))
    rng = np.random.default_rng(3)
    with open(folder / "cases.csv", "w", newline="") as fh:  # class 2: the same cases, seed b off by +-10 points
        w = csv.writer(fh)
        w.writerows(rows)
        for r in rows[1:]:
            jitter = rng.normal(0, 0.1) if r[0] == "scratch_seed2" else 0.0
            w.writerow(r[:5] + ["2", round(float(r[6]) + jitter, 5)])
    noise = sr.Noise(sr.load_sweep(folder))
    case = {"1": {"dice": 0.5}, "2": {"dice": 0.5}}
    moved = np.array([[noise.apply(rng, case)[c]["dice"] - 0.5 for c in ("1", "2")] for _ in range(2000)])
    assert moved[:, 0].std() < 0.03 < 0.05 < moved[:, 1].std()


def test_the_replay_confirms_on_the_folds_the_product_would_pick(tmp_path):
    # the product's rule: at least two folds, more while they hold under 40 cases (6-case folds: all four free)
    small = sr.load_sweep(write_sweep(tmp_path / "small", {k: 0.0 for k, _ in GRID}, cases_per_fold=6))
    large = sr.load_sweep(write_sweep(tmp_path / "large", {k: 0.0 for k, _ in GRID}, cases_per_fold=25))
    assert sr.product_folds(small) == [1, 2, 3, 4] and sr.product_folds(large) == [1, 2]


def test_a_real_search_off_the_grid_is_judged_against_everything_the_sweep_trained(tmp_path):
    import sweep_search_check

    gains = {"DiceCE": 0, "DiceFocal": 0.02, "DiceTopK10": -0.05, "DiceTopK90": 0.0, "DiceTopK50": 0.06}
    folder = write_sweep(tmp_path / "off", gains)
    meta = json.loads((folder / "meta.json").read_text())
    off_grid = {"name": "DiceTopK", "params": {"topk.k": 50.0}}
    meta["extra"] = [{"label": "DiceTopK50", "spec": off_grid}]
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "search").mkdir()
    (folder / "search" / "verdict.json").write_text(json.dumps({"verdict": {
        "decision": "switch", "describe": "DiceTopK(topk.k=50)"}}))
    (folder / "search" / "results.csv").write_text("phase,fold,state,loss,objective\n"
                                                   "screen,,complete,DiceCE,0.7\n")
    sweep = sr.load_sweep(folder)
    t = sr.truth(sweep)
    outcomes = [("switch", "DiceFocal")] * 4
    r = sweep_search_check.check(sweep, folder, outcomes, sr.fold_objective, sr.BASELINE, t)
    assert r["off_grid"] and r["replay_share"] == 0.0
    assert r["true_call"] == "beats" and r["regret"] == 0.0 and r["true_gain"] == pytest.approx(0.06, abs=0.01)
    # the replay's own regret counts against the grid only: DiceFocal is the grid's best
    grid = {k: v for k, v in t.items() if k in {g["label"] for g in sweep.grid}}
    assert sr.summarise(outcomes, grid)["regret_median"] == 0.0
    assert sr.summarise(outcomes, t)["regret_median"] > 0.03


def test_the_sweep_plans_second_trainings_loss_by_loss_after_the_seed_pair():
    import sweep

    isbi = sweep.DATASETS["ISBIMembrane"]
    jobs = [(arm, label, fold, seed) for arm, label, _, fold, seed in
            sweep.plan(isbi, ["seed2"], seed2=("DiceCE", "DiceCE+clDice", "DiceTopK90"))]
    assert jobs[:5] == [("scratch_seed2", "DiceCE", f, 1) for f in range(5)]
    assert jobs[5:10] == [("scratch_seed2", "DiceCE+clDice", f, 1) for f in range(5)]
    assert [j[1] for j in jobs[10:]] == ["DiceTopK90"] * 5
    assert [j[1] for j in sweep.plan(isbi, ["seed2"])] == ["DiceCE"] * 5  # the A/A pair alone by default
    third = [(arm, label, fold, seed) for arm, label, _, fold, seed in sweep.plan(isbi, ["seed3"], folds=(1, 2))]
    assert third == [("scratch_seed3", "DiceCE", 1, 2), ("scratch_seed3", "DiceCE", 2, 2)]
    with pytest.raises(SystemExit, match="unknown label"):
        sweep.plan(isbi, ["seed2"], seed2=("DiceCE+Nonsense",))


@pytest.mark.parametrize("shift, decision", [(0.0, "keep"), (0.08, "switch")])
def test_the_real_aa_under_the_products_rule_uses_a_third_dice_ce_training(tmp_path, shift, decision):
    """Dice+CE trained a third time (``sweep.py --arms seed3``) against the seed pair: a rerun keeps; a "third
    training" 8 points better on every case is no rerun, and the same code switches to it."""
    folder = write_sweep(tmp_path / "aa3", {k: 0.0 for k, _ in GRID})
    assert sr.real_aa_checked(sr.load_sweep(folder)) is None  # no third training: nothing to say
    rng = np.random.default_rng(3)
    rows = list(csv.reader(open(folder / "cases.csv")))
    with open(folder / "cases.csv", "a", newline="") as fh:
        csv.writer(fh).writerows([["scratch_seed3", "DiceCE", *r[2:3], 2, *r[4:6],
                                   round(float(r[6]) + shift + rng.normal(0, 0.02), 5)]
                                  for r in rows[1:] if r[0] == "scratch_seed2"])
    assert sr.real_aa_checked(sr.load_sweep(folder)).split()[0] == decision
