"""Does the search choose right? The product's procedure replayed over an exhaustive sweep's per-case table.

    python benchmarks/sweep_replay.py [benchmarks/results/sweep] [--seeds 500] [--budget 8]
                                      [--train-repeats] [--iid-noise] [--confirm-folds 1 2 3 4] [--control-seeds 1]
                                      [--datasets ...]

Input: one folder per dataset written by ``benchmarks/sweep.py`` (``cases.csv``: one row per training, validation
case and class with its metrics; ``meta.json``: the objective, the grid of LossSpecs in the prior's order, the
confirmation folds; each grid entry is ``{"label": ..., "spec": LossSpec dict}``, Dice+CE labelled ``DiceCE``).
Per dataset it prints:

- the truth: each loss's paired per-case gain over Dice+CE on every case of the 5-fold split (from-scratch arm), on
  the objective and on Dice, with the 95 % interval and the Wilcoxon p-value, and whether it beats, ties or loses
  (by the product's switch rule: "beats" also needs no class losing Dice significantly, else it "trades");
- the real A/A: Dice+CE seed b against seed a through the verdict (any `switch` is false), and where Dice+CE was
  trained a third time (`sweep.py train --arms seed3`) that training against the seed pair under the product's rule;
- the replay (``--seeds`` times): the validated cases dealt at random into folds of the original sizes (a rerun on
  another split) and every (loss, fold) training given run noise drawn from the Dice+CE seed pair (a shift shared
  by all its cases, from the pair's fold-mean differences, plus each case's residual, all / sqrt 2; ``--iid-noise``:
  per-case noise only), then the product's own procedure: Dice+CE
  and the prior's picks enqueued, TPE over the rest of the grid up to ``--budget`` screening trials on fold 0, the
  top 2 confirmed against Dice+CE on the confirmation folds the product picks for these fold sizes
  (``--confirm-folds`` to choose), Dice+CE trained twice there unless ``--control-seeds 1`` (the rule before),
  ``autoloss.searching.verdict.decide``. Reported: the
  verdict distribution, regret (the true gain of the best significantly-better loss, or 0, minus the true gain of
  the chosen one; keep and inconclusive choose Dice+CE), the false-switch rate (a switch to a loss the truth does
  not say beats Dice+CE) and the missed-win rate (no switch where the truth has a winner);
- power: a loss planted into the table (Dice+CE's cases shifted by +2 points on the objective's metrics), how often
  the replay switches to it (or to a real loss whose true gain is at least as large), next to what
  ``bench_verdict_power.py``'s model predicts at the same case count.
Where ``benchmarks/sweep.py search DATASET`` ran, the real search against the replay and the sweep
(``sweep_search_check``). Last line: the headline over the datasets.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

import sweep_search_check
from sweep_noise import HIGHER_IS_BETTER, Noise
from sweep_table import (BASELINE, DEFAULT_DIR, Sweep, common_folds, fold_objective, labels_by_key, load_sweep,
                         product_folds, restrict, truth, truth_fields, best_true_gain)

PLANTED = "Planted+2"
PLANTED_GAIN = 0.02
AA_SPEC = {"name": "DiceCE", "params": {"ce.weight": 1.0}}  # Dice+CE under another key: a candidate for A/A tests


# ---------------------------------------------------------------- the replay


def planted_table(base_by_fold: dict, objective: str) -> dict:
    """Dice+CE's cases with every higher-is-better metric the objective reads shifted by +2 points, also above 1: a
    winner by exactly 2 points on every case, as bench_verdict_power's model (no ceiling) plants it."""
    from autoloss import objectives

    wanted = {"dice"} | ({m for ms in objectives.parse(objective).values() for m in ms}
                         if objectives.is_classwise(objective) else {objective})
    return {f: {c: {cls: {m: (v + PLANTED_GAIN if m in wanted and m in HIGHER_IS_BETTER else v)
                          for m, v in ms.items()} for cls, ms in case.items()} for c, case in by_case.items()}
            for f, by_case in base_by_fold.items()}


def resample(rng, sweep: Sweep, tables: dict[str, dict], noise: Noise) -> dict[str, dict]:
    """One replay world, as a rerun on another split would be: every validated case is dealt at random into folds of
    the original sizes (without replacement: a case drawn twice would count twice in a paired test and make it
    anti-conservative), the same deal for every loss so pairs stay paired, and each (loss, fold) training its own
    run noise: one shift for all its cases, and each case's own.
    A case keeps the value its own training gave it."""
    base = tables[BASELINE]
    pool = [(f, c) for f in sorted(base) for c in sorted(base[f])]
    sizes = [(f, len(base[f])) for f in sorted(base)]
    order = [pool[i] for i in rng.permutation(len(pool))]
    out: dict[str, dict] = {k: {} for k in tables}
    start = 0
    for fold, size in sizes:
        dealt = order[start:start + size]
        start += size
        for key, t in tables.items():
            shift = noise.training(rng)  # this loss's training on this fold
            out[key][fold] = {f"{f}/{c}": noise.apply(rng, t[f][c], shift) for f, c in dealt if c in t.get(f, {})}
    return out


def screen(world: dict[str, dict], order: list[str], sweep: Sweep, budget: int, seed: int,
           prior_top: int = 4, train_repeats: bool = False) -> list[tuple[str, float]]:
    """The product's screening restricted to the grid: Dice+CE and the prior's picks first, then TPE (seeded,
    the product's startup count) over the grid's losses; each pick's value is its fold-0 objective in this world.
    A pick already screened is told its value and not counted, and a grid loss never screened comes next (the
    product's rule, ``autoloss.searching.repeats``); ``train_repeats``: the procedure before that rule."""
    import optuna

    from autoloss.searching.repeats import Repeats

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    keys = [k for k in order if k in world]
    prior = keys[:prior_top]
    startup = max(2, min(5, budget // 4))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(prior) + startup)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for k in prior:
        study.enqueue_trial({"loss": k})
    values: list[tuple[str, float]] = []
    repeats = Repeats()
    while len(values) < budget and not repeats.exhausted:
        trial = study.ask({"loss": optuna.distributions.CategoricalDistribution(keys)})
        key = trial.params["loss"]
        v = fold_objective(world[key], sweep.screen_fold, sweep.objective)
        study.tell(trial, v if v == v else 0.0)
        if not train_repeats and repeats.earlier(key) is not None:
            repeats.propose_untried(study, keys, seed * 10_007 + trial.number)
            continue
        repeats.add(key, trial.number, key)
        values.append((key, v))
    return values


BASELINE_B = "DiceCE#b"  # Dice+CE trained again on each confirmation fold (the product's second control)


def confirm_and_decide(world: dict[str, dict], candidates: list[str], sweep: Sweep, specs: dict[str, dict]):
    """The product's verdict (``autoloss.searching.verdict.decide``) on the confirmation folds; with a second
    Dice+CE training in the world (``--control-seeds 2``, the product's default) a switch must hold against both."""
    from autoloss.searching.confirm import ConfirmSettings, extension_folds
    from autoloss.searching.verdict import verdict_from_folds
    from autoloss.spec import LossSpec

    def verdict(folds: list[int]):
        return verdict_from_folds([(LossSpec.from_dict(specs[k]), world[k]) for k in candidates], world[BASELINE],
                                  folds, sweep.objective, world.get(BASELINE_B), quote_gap=False)

    v = verdict(sweep.confirm_folds)
    more = extension_folds(5, (sweep.screen_fold,), sweep.confirm_folds, ConfirmSettings(extend=sweep.extend))
    if v.split and more:  # the product's rule: a split verdict confirms on the free folds left
        v = verdict(sorted(sweep.confirm_folds + more))
        v.extended_from = list(sweep.confirm_folds)
    return v


def replay_once(rng, sweep: Sweep, tables: dict[str, dict], order: list[str], specs: dict[str, dict],
                noise: Noise, budget: int, seed: int, top: int = 2,
                train_repeats: bool = False) -> tuple[str, str | None, bool]:
    world = resample(rng, sweep, tables, noise)
    screened = screen(world, order, sweep, budget, seed, train_repeats=train_repeats)
    from autoloss.searching.confirm import pick_candidates
    from autoloss.spec import LossSpec

    ranked = [key for key, _ in sorted(screened, key=lambda kv: -(kv[1] if kv[1] == kv[1] else -1))]
    key_of = {LossSpec.from_dict(specs[k]): k for k in reversed(ranked)}  # the product's rule over the labels
    chosen = [key_of[s] for s in pick_candidates([LossSpec.from_dict(specs[k]) for k in ranked], top)]
    if not chosen:
        return "keep", None, False
    v = confirm_and_decide(world, chosen, sweep, specs)
    return v.decision, (labels_by_key(specs).get(v.loss.key()) if v.loss else None), bool(v.extended_from)


def replay(sweep: Sweep, seeds: int, budget: int, planted: bool = False, train_repeats: bool = False,
           training_shift: bool = True, control_seeds: int = 2) -> list[tuple[str, str | None, bool]]:
    grid = {g["label"] for g in sweep.grid}  # not the losses trained beside it (--extra): the search's choices
    tables = {k: dict(v) for k, v in sweep.tables["scratch"].items() if k in grid}
    if control_seeds > 1:
        tables[BASELINE_B] = tables[BASELINE]  # the same loss, trained again: its own noise in each world
    specs = {g["label"]: g["spec"] for g in sweep.grid}
    order = [g["label"] for g in sweep.grid]
    if planted:
        tables[PLANTED] = planted_table(tables[BASELINE], sweep.objective)
        specs[PLANTED] = AA_SPEC  # a distinct spec with Dice+CE's terms
        order = order + [PLANTED]  # the prior knows nothing of it: TPE must find it
    noise = Noise(sweep, training_shift=training_shift)
    rng = np.random.default_rng(0)
    return [replay_once(rng, sweep, tables, order, specs, noise, budget, seed=s, train_repeats=train_repeats)
            for s in range(seeds)]


def summarise(outcomes, t: dict[str, dict], training_aware: bool = False) -> dict:
    """Verdict shares, regret, false switches and missed wins against the truth's case-level calls, or against its
    training-aware ones (a winner's gain must clear the retraining noise; two trainings' mean where there are)."""
    best_key, best_gain = best_true_gain(t, training_aware)
    field, gain = truth_fields(training_aware)
    n = len(outcomes)
    regrets, false_switch, missed = [], 0, 0
    dist = defaultdict(int)
    for decision, loss, *_ in outcomes:
        dist[decision] += 1
        chosen_gain = t[loss][gain] if decision == "switch" and loss in t else 0.0
        regrets.append(max(0.0, best_gain - chosen_gain))
        if decision == "switch" and (loss not in t or t[loss][field] != "beats"):
            false_switch += 1
        if decision != "switch" and best_key is not None:
            missed += 1
    return {"n": n, "switch": dist["switch"] / n, "keep": dist["keep"] / n, "inconclusive": dist["inconclusive"] / n,
            "regret_median": float(np.median(regrets)), "regret_mean": float(np.mean(regrets)),
            "false_switch": false_switch / n, "missed": missed / n if best_key else float("nan"),
            "extended": sum(1 for o in outcomes if o[2:] and o[2]) / n,
            "switched_to": {k: sum(1 for d, l, *_ in outcomes if d == "switch" and l == k) / n
                            for k in {l for d, l, *_ in outcomes if d == "switch"}}}


def predicted_power(cases: int, noise_sd: float, runs: int = 400, training_sd: float = 0.0, folds: int = 2,
                    control_seeds: int = 1) -> float:
    """``bench_verdict_power.py``'s model (case effects + run noise, two candidates) at this case count; with
    ``training_sd`` a shift shared by each training's cases, over ``folds`` folds and ``control_seeds`` controls."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_verdict_power import switch_rate

    return switch_rate(np.random.default_rng(1), cases, PLANTED_GAIN, noise_sd, runs, training_sd, folds,
                       control_seeds)


def real_aa(sweep: Sweep) -> str | None:
    """Dice+CE seed b as a candidate against seed a, through the verdict, on every fold both have."""
    from autoloss.searching.verdict import verdict_from_folds
    from autoloss.spec import LossSpec

    a, b = sweep.tables["scratch"].get(BASELINE, {}), sweep.tables["scratch_seed2"].get(BASELINE, {})
    folds = sorted(set(a) & set(b))
    if not folds:
        return None
    return verdict_from_folds([(LossSpec.from_dict(AA_SPEC), b)], a, folds, sweep.objective, quote_gap=False).decision


def real_aa_checked(sweep: Sweep) -> str | None:
    """The real A/A under the product's rule: a third Dice+CE training (``sweep.py train --arms seed3``) as the
    candidate against the seed pair as the two controls, on the product's confirmation folds and, where the verdict
    splits, the free folds left (``confirm_and_decide``). None where the third training lacks a fold it needs."""
    from autoloss.searching.confirm import ConfirmSettings, extension_folds

    third = sweep.tables["scratch_seed3"].get(BASELINE, {})
    if not set(sweep.confirm_folds) <= set(third):
        return None
    world = {BASELINE: sweep.tables["scratch"].get(BASELINE, {}),
             BASELINE_B: sweep.tables["scratch_seed2"].get(BASELINE, {}), "DiceCE#3": third}
    v = confirm_and_decide(world, ["DiceCE#3"], sweep, {"DiceCE#3": AA_SPEC})
    more = extension_folds(5, (sweep.screen_fold,), sweep.confirm_folds, ConfirmSettings(extend=sweep.extend))
    if v.extended_from and not set(more) <= set(third):
        return None
    return v.decision + (f" (extended to folds {','.join(map(str, v.confirm_folds))})" if v.extended_from else "")


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}%"


def _winners(t: dict[str, dict]) -> str:
    return ", ".join(k for k, v in t.items() if v["trained_call"] == "beats") or "none: keep is right"


def _two_trainings(r: dict) -> str:
    """The truth row's training-aware part: the call, and where the loss was trained twice its replication."""
    if "two_trainings" not in r:
        return f" | trained: {r['trained_call']}"
    two, rep = r["two_trainings"], r["replication"]
    return (f" | seed 1 vs seed 1 {100 * rep['gain']:+.2f} (p {rep['p']:.2g}); two trainings each "
            f"{100 * two['gain']:+.2f} (margin {100 * two['retraining_margin']:.2f}): {r['trained_call']}")


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])) or "nothing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_DIR))
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--train-repeats", action="store_true",
                        help="the procedure before the repeat rule: a loss proposed again is trained again")
    parser.add_argument("--iid-noise", action="store_true",
                        help="run noise per case only (the model before): no shift shared by a training's cases")
    parser.add_argument("--confirm-folds", type=int, nargs="+",
                        help="confirm on these folds (default: the product's choice for these fold sizes)")
    parser.add_argument("--control-seeds", type=int, choices=(1, 2), default=2,
                        help="Dice+CE trainings per confirmation fold, as the product's option (1: the rule before)")
    parser.add_argument("--no-extend", action="store_true",
                        help="never extend a split confirmation to the free folds left (the rule before)")
    parser.add_argument("--harm-alpha", type=float,
                        help="the level of the verdict's per-class Dice-loss check (verdict.DICE_HARM_ALPHA)")
    parser.add_argument("--no-retraining-check", action="store_true",
                        help="the verdict without its retraining-noise check (verdict.RETRAINING_CHECK): the rule "
                             "before")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (folder names)")
    args = parser.parse_args()
    if args.no_retraining_check:
        from autoloss.searching import verdict

        verdict.RETRAINING_CHECK = False
    if args.harm_alpha:
        from autoloss.searching import verdict

        verdict.DICE_HARM_ALPHA = args.harm_alpha
    folders = sorted(p.parent for p in Path(args.folder).glob("*/meta.json")
                     if not args.datasets or p.parent.name in args.datasets)
    if not folders:
        raise SystemExit(f"no sweep under {args.folder} (run benchmarks/sweep.py first)")
    report = {}
    for folder in folders:
        sweep = load_sweep(folder)
        folds = common_folds(sweep)
        wanted = sorted(args.confirm_folds) if args.confirm_folds else product_folds(sweep)
        sweep.extend = not args.no_extend and not args.confirm_folds and args.control_seeds > 1 and len(folds) == 5
        # a sweep in progress: as many confirmation folds as wanted, from the folds every grid loss finished
        sweep.confirm_folds = wanted if set(wanted) <= set(folds) else \
            [f for f in folds if f != sweep.screen_fold][:len(wanted)]
        if sweep.screen_fold not in folds or len(sweep.confirm_folds) < len(wanted):
            print(f"\n{sweep.name}: sweep in progress (every grid loss on fold(s) {folds or 'none'}; the replay needs "
                  f"the screening fold {sweep.screen_fold} and {len(wanted)} confirmation folds), skipped")
            continue
        restrict(sweep, folds)
        partial = "" if len(folds) == 5 else f"; PARTIAL: folds {folds} of 5 only"
        t = truth(sweep)
        print(f"\n{sweep.name}: objective {sweep.objective}; truth = paired gain over Dice+CE on every case "
              f"(from scratch, scaled network){partial}")
        print(f"{'loss':<34} {'gain':>6} {'95% CI':>16} {'p':>7} {'Dice gain':>9} {'cases':>5} {'folds won':>9} "
              f"{'retrain.':>8} call")
        for key, r in sorted(t.items(), key=lambda kv: -kv[1]["gain"]):
            print(f"{key[:34]:<34} {100 * r['gain']:+6.2f} [{100 * r['ci'][0]:+6.2f},{100 * r['ci'][1]:+6.2f}] "
                  f"{r['p']:7.3g} {100 * r['dice_gain']:+9.2f} {r['cases']:5d} {r['folds_won']:>4}/{len(r['folds'])}"
                  f"     {100 * r['retraining_margin']:5.2f}{'' if r['clears_retraining'] else '!'} {r['call']}"
                  + "".join(f" (class {c} Dice {100 * g:+.2f})" for c, g in r.get("dice_losses", {}).items())
                  + _two_trainings(r))
        noise = Noise(sweep, training_shift=not args.iid_noise)
        aa = real_aa(sweep)
        aa3 = real_aa_checked(sweep)
        outcomes = replay(sweep, args.seeds, args.budget, train_repeats=args.train_repeats,
                          training_shift=not args.iid_noise, control_seeds=args.control_seeds)
        # regret and missed wins against what the replay can choose: the grid (a loss trained beside it with
        # --extra, e.g. a real search's off-grid choice, is in the truth table but out of the replay's reach)
        on_grid = {k: v for k, v in t.items() if k in {g["label"] for g in sweep.grid}}
        s = summarise(outcomes, on_grid)
        s_trained = summarise(outcomes, on_grid, training_aware=True)
        planted = replay(sweep, args.seeds, args.budget, planted=True, train_repeats=args.train_repeats,
                         training_shift=not args.iid_noise, control_seeds=args.control_seeds)
        found = sum(1 for d, l, *_ in planted if d == "switch" and (l == PLANTED or (l in t and t[l]["call"] == "beats"
                                                                                and t[l]["gain"] >= PLANTED_GAIN))) / len(planted)
        # what the planted replays chose instead when they missed it: another true winner, or keep
        planted_to = {k: sum(1 for d, l, *_ in planted if d == "switch" and l == k) / len(planted)
                      for k in {l for d, l, *_ in planted if d == "switch"}}
        cases = sum(len(sweep.tables["scratch"][BASELINE].get(f, {})) for f in sweep.confirm_folds)
        predicted = predicted_power(cases, noise.sd())  # the model as it was: i.i.d. case noise, one control
        shift_sd, resid_sd = noise.shift_sd, noise.case_sd
        predicted_t = predicted_power(cases, resid_sd, training_sd=shift_sd, folds=len(sweep.confirm_folds),
                                      control_seeds=args.control_seeds)
        second = {BASELINE_B: sweep.tables["scratch"][BASELINE]} if args.control_seeds > 1 else {}
        aa_replay = [confirm_and_decide(resample(np.random.default_rng(i), sweep,
                                                 {BASELINE: sweep.tables["scratch"][BASELINE],
                                                  "DiceCE#2": sweep.tables["scratch_seed2"].get(BASELINE, {})}
                                                 | second, noise),
                                        ["DiceCE#2"], sweep, {"DiceCE#2": AA_SPEC}).decision
                     for i in range(args.seeds)] if sweep.tables["scratch_seed2"] else []
        aa_rate = sum(d == "switch" for d in aa_replay) / len(aa_replay) if aa_replay else float("nan")
        # the model's own null: Dice+CE's table twice, each with its own rerun noise (the seed-b table above
        # carries its real fold-mean differences from seed a on top of the noise drawn from them)
        base_table = sweep.tables["scratch"][BASELINE]
        null = [confirm_and_decide(resample(np.random.default_rng(i), sweep,
                                            {BASELINE: base_table, "DiceCE#2": base_table} | second, noise),
                                   ["DiceCE#2"], sweep, {"DiceCE#2": AA_SPEC}).decision
                for i in range(args.seeds)]
        null_rate = sum(d == "switch" for d in null) / len(null)
        print(f"run noise SD (objective, per case, from the seed pair): {noise.sd():.4f} (training shift SD "
              f"{noise.shift_sd:.4f}); real A/A: {aa} (one control, per case)"
              + (f", {aa3} (the product's rule: a third Dice+CE training against the seed pair)" if aa3 else "")
              + f"; replay A/A false switches "
              f"{100 * aa_rate:.1f}% (seed b vs seed a), {100 * null_rate:.1f}% (Dice+CE vs itself, two reruns)")
        print(f"replay ({args.seeds} seeds, budget {args.budget}, confirm folds {sweep.confirm_folds}, {cases} "
              f"cases): switch {100 * s['switch']:.1f}% keep {100 * s['keep']:.1f}% inconclusive "
              f"{100 * s['inconclusive']:.1f}%; extended to more folds {100 * s['extended']:.1f}%; regret median {100 * s['regret_median']:.2f} mean "
              f"{100 * s['regret_mean']:.2f} points; false switch {100 * s['false_switch']:.1f}%; missed win "
              f"{_pct(s['missed'])}; switched to "
              f"{ {k: round(v, 3) for k, v in s['switched_to'].items()} }")
        print(f"against the training-aware truth (winners {_winners(on_grid)}): regret median "
              f"{100 * s_trained['regret_median']:.2f} mean {100 * s_trained['regret_mean']:.2f} points; false switch "
              f"{100 * s_trained['false_switch']:.1f}%; missed win {_pct(s_trained['missed'])}")
        print(f"planted +2 points: found {100 * found:.1f}% (bench_verdict_power model at {cases} cases, noise "
              f"{noise.sd():.3f}: {100 * predicted:.1f}%; with the training shifts, {resid_sd:.3f} per case + "
              f"{shift_sd:.3f} per training, {len(sweep.confirm_folds)} folds, {args.control_seeds} control(s): "
              f"{100 * predicted_t:.1f}%); switched to {_shares(planted_to)}")
        real = sweep_search_check.check(sweep, folder, outcomes, fold_objective, BASELINE, t)
        if real is not None:
            print("\n".join(sweep_search_check.describe(real)))
        report[sweep.name] = s | {"training_aware": s_trained, "real_search": real, "truth": t, "aa_real": aa, "aa_real_checked": aa3, "aa_replay": aa_rate,
                                  "aa_null": null_rate, "control_seeds": args.control_seeds,
                                  "confirm_folds": sweep.confirm_folds,
                                  "planted_found": found, "planted_switched_to": planted_to, "planted_predicted": predicted,
                                  "planted_predicted_training": predicted_t, "cases": cases,
                                  "folds": folds}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if report:
        worst_fs = max(r["false_switch"] for r in report.values())
        worst_regret = max(r["regret_median"] for r in report.values())
        worst_trained = max(r["training_aware"]["regret_median"] for r in report.values())
        print(f"\nheadline: {len(report)} dataset(s); worst false-switch rate {100 * worst_fs:.1f}% (bar 5%); worst "
              f"median regret {100 * worst_regret:.2f} points (bar 0.5; {100 * worst_trained:.2f} against the "
              f"training-aware truth); planted winner found "
              + ", ".join(f"{n} {100 * r['planted_found']:.0f}% vs {100 * r['planted_predicted']:.0f}% predicted "
                          f"({100 * r['planted_predicted_training']:.0f}% with training shifts)"
                          for n, r in report.items()))


if __name__ == "__main__":
    main()
