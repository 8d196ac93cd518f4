"""Paired per-case statistics: is a candidate loss better than Dice+CE on the SAME validation cases?

A search's best trial is the maximum of many noisy values on one fold, so comparing two means says little. Here a
comparison uses only cases both losses were validated on, as paired differences d_i = candidate_i - baseline_i:

- mean difference and a 95 % percentile bootstrap interval (resampling cases with replacement, seeded);
- a two-sided Wilcoxon signed-rank p-value (scipy; ``zsplit`` keeps zero differences in the ranks, so a run of
  identical cases does not shrink n);
- the minimum detectable effect at 80 % power, (z_{1-alpha/2} + z_{0.8}) * sd(d) / sqrt(n), and the number of
  cases needed to detect a given gain, n = ((z_{1-alpha/2} + z_{0.8}) * sd(d) / gain)^2 (normal approximation).

Cases where either value is NaN (a class absent from both reference and prediction) are left out and counted.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05
POWER = 0.8
BOOTSTRAPS = 10_000
# Below this many paired cases a difference of a Dice point or two cannot be told from noise (DESIGN.md): the
# verdict is then "inconclusive" whatever the numbers say.
MIN_CASES = 10
# The smallest gain worth switching a default for: one Dice point. Used to say how many cases would be needed.
WORTHWHILE_GAIN = 0.01
# Below this mean objective of Dice+CE on the confirmation cases the trainings learned (almost) nothing: losses then
# differ in how fast they leave all-background, not in where they end (we measured Dice 0.000-0.003 for every loss
# after 2-8 CPU epochs on Hippocampus 2d, with "significant" +0.3-point gaps). The verdict is then inconclusive.
MIN_BASELINE_SCORE = 0.1


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus baseline over the paired cases."""

    cases: int  # paired cases with both values finite
    excluded: int  # cases left out because a value was NaN (or missing on one side)
    mean_gain: float
    ci: tuple[float, float]
    p_value: float
    sd: float  # standard deviation of the paired differences
    mde: float  # minimum detectable effect at 80 % power (NaN below 2 cases)
    alpha: float = ALPHA

    @property
    def significant_gain(self) -> bool:
        return self.cases >= 2 and self.ci[0] > 0 and self.p_value < self.alpha

    @property
    def significant_loss(self) -> bool:
        return self.cases >= 2 and self.ci[1] < 0 and self.p_value < self.alpha

    def needed_cases(self, gain: float = WORTHWHILE_GAIN) -> int:
        """Paired cases needed to detect ``gain`` with this spread (at least MIN_CASES)."""
        if not self.sd or not math.isfinite(self.sd):
            return MIN_CASES
        z = _z(1 - self.alpha / 2) + _z(POWER)
        return max(MIN_CASES, math.ceil((z * self.sd / gain) ** 2))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


def paired_comparison(candidate: dict[str, float], baseline: dict[str, float], *, alpha: float = ALPHA,
                      seed: int = 0, bootstraps: int = BOOTSTRAPS) -> PairedComparison:
    """Compare per-case values (case id -> value) of a candidate and the baseline on their common cases."""
    keys = sorted(set(candidate) | set(baseline))
    pairs = [(candidate.get(k), baseline.get(k)) for k in keys]
    finite = [(a, b) for a, b in pairs if _finite(a) and _finite(b)]
    excluded = len(pairs) - len(finite)
    if not finite:
        nan = float("nan")
        return PairedComparison(0, excluded, nan, (nan, nan), 1.0, nan, nan, alpha)
    d = np.array([a - b for a, b in finite], dtype=np.float64)
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    if n == 1 or np.all(d == d[0]):
        ci = (float(d[0]), float(d[0])) if np.all(d == d[0]) else (mean, mean)
    else:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, n, size=(bootstraps, n))].mean(axis=1)
        ci = (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))
    p = _wilcoxon(d)
    mde = (_z(1 - alpha / 2) + _z(POWER)) * sd / math.sqrt(n) if n > 1 else float("nan")
    return PairedComparison(n, excluded, mean, ci, p, sd, float(mde), alpha)


def _wilcoxon(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1.0 when there is nothing to test (all zero, or one case)."""
    if d.size < 2 or not np.any(d != 0):
        return 1.0
    from scipy.stats import wilcoxon

    try:
        return float(wilcoxon(d, zero_method="zsplit", alternative="two-sided").pvalue)
    except ValueError:  # scipy refuses degenerate inputs it cannot rank
        return 1.0


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
