"""The replay's run noise: what rerunning a training changes, drawn from the sweep's Dice+CE seed pair.

Used by ``sweep_replay`` to give every (loss, fold) training of a replayed world its own luck.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from sweep_table import BASELINE, Sweep

# metrics where higher is better (the planted winner shifts them); the rest (hd95, betti0) stay at or above 0
HIGHER_IS_BETTER = ("dice", "nsd", "cldice", "lesion_f1", "lesion_recall", "lesion_precision")

class Noise:
    """Run noise drawn from the Dice+CE seed pair, per class and metric. A rerun moves a whole training (every case
    of its fold shifts together: the seed pair's fold means differ by a few tenths of a point) and each case around
    it. ``shifts``: one vector per fold and sign, {(class, metric): fold-mean difference / sqrt 2}, drawn whole for
    a training, so its classes and metrics move together as the seed pair's did; ``draws``: one vector per case,
    {(class, metric): (a_i - b_i - the fold's mean difference) / sqrt 2}, drawn whole for a case (a case's Dice and
    clDice move together). Per class: one class's spread must not be lent to another (AxonMyelin's axons differ by
    several points between seeds, its myelin by tenths; pooled, the myelin noise hid a half-point myelin loss).
    ``training_shift=False``: case noise only, i.i.d. (the model before). ``case_sd``/``shift_sd``: the same
    figures on the objective, for the power model."""

    def __init__(self, sweep: Sweep, arm_a: str = "scratch", arm_b: str = "scratch_seed2",
                 training_shift: bool = True):
        from autoloss.nnunet.run import case_objective

        a, b = sweep.tables[arm_a][BASELINE], sweep.tables[arm_b].get(BASELINE, {})
        self.shifts: list[dict] = []
        self.draws: list[dict] = []
        objective_resid, objective_shifts = [], []
        # sorted: a set of strings iterates in a per-process hash order, and the draws' order must not vary
        for fold in sorted(set(a) & set(b)):
            per_case: dict[str, dict] = {}
            for case in sorted(set(a[fold]) & set(b[fold])):
                diff = {}
                for cls in sorted(set(a[fold][case]) & set(b[fold][case])):
                    for m, va in a[fold][case][cls].items():
                        vb = b[fold][case][cls].get(m)
                        if vb is not None and math.isfinite(va) and math.isfinite(vb):
                            diff[(cls, m)] = va - vb
                per_case[case] = diff
            keys = sorted({k for d in per_case.values() for k in d})
            mean = {k: float(np.mean([d[k] for d in per_case.values() if k in d])) if training_shift else 0.0
                    for k in keys}
            self.shifts += [{k: v / math.sqrt(2) for k, v in mean.items()},
                            {k: -v / math.sqrt(2) for k, v in mean.items()}]
            self.draws += [{k: (x - mean[k]) / math.sqrt(2) for k, x in d.items()} for d in per_case.values() if d]
            obj = [case_objective(a[fold][c], sweep.objective) - case_objective(b[fold][c], sweep.objective)
                   for c in per_case]
            obj = [x for x in obj if math.isfinite(x)]
            if obj:
                m = float(np.mean(obj)) if training_shift else 0.0
                objective_shifts += [m / math.sqrt(2), -m / math.sqrt(2)]
                objective_resid += [(x - m) / math.sqrt(2) for x in obj]
        # a case whose drawn vector lacks one of its (class, metric)s takes that value from the pool of all cases
        self.pools = defaultdict(list)
        for d in self.draws:
            for k, v in d.items():
                self.pools[k].append(v)
        self.case_sd = float(np.std(objective_resid)) if objective_resid else float("nan")
        self.shift_sd = float(np.std(objective_shifts)) if objective_shifts else 0.0

    def sd(self) -> float:
        """The objective's per-case run noise SD (the shift of its training included)."""
        return float(math.sqrt(self.case_sd ** 2 + self.shift_sd ** 2))

    def training(self, rng) -> dict:
        """One training's shift per (class, metric) (the same for every case it validates)."""
        return self.shifts[rng.integers(len(self.shifts))] if self.shifts else {}

    def apply(self, rng, case: dict, shift: dict | None = None) -> dict:
        vector = self.draws[rng.integers(len(self.draws))] if self.draws else {}
        out = {}
        for cls, metrics in case.items():
            noisy = {}
            for m, v in metrics.items():
                r = vector.get((cls, m))
                if r is None and self.pools.get((cls, m)):
                    pool = self.pools[(cls, m)]
                    r = pool[rng.integers(len(pool))]
                if r is None or not math.isfinite(v):
                    noisy[m] = v
                    continue
                x = v + r + (shift or {}).get((cls, m), 0.0)
                # not clamped at 1: near the ceiling a clamp shrinks a better loss's gain more than the
                # baseline's (it clipped the planted winner on Montgomery's 0.97-Dice cases)
                noisy[m] = x if m in HIGHER_IS_BETTER else max(0.0, x)
            out[cls] = noisy
        return out
