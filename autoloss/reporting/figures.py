"""The figures of a search report, drawn with matplotlib's object API (no pyplot: no global backend is switched,
so a notebook's own plotting is left alone). Each function takes the study (and the verdict) and returns a
``matplotlib.figure.Figure``; :func:`save_figures` writes them all as PNG files.

- ``ranking``: screening objective per trial against Dice+CE, and the confirmation's paired gain of each
  candidate over Dice+CE with its bootstrap confidence interval (the only evidence the verdict uses);
- ``per_class``: Dice (and NSD, the boundary metric) per class for the best trial of each loss;
- ``curves``: pseudo-Dice per epoch of every training (nnU-Net's online validation);
- ``paired``: per case, the verdict's candidate against Dice+CE on the same confirmation cases;
- ``history``: the optimisation history (objective per trial in the order run, best so far).
"""
from __future__ import annotations

import math
from pathlib import Path

import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoloss.searching import records as rec
from autoloss.searching.base import bases

BASELINE_COLOR, CANDIDATE_COLOR, OTHER_COLOR = "#d62728", "#1f77b4", "#7f7f7f"
DECISION_COLORS = {"switch": "#2ca02c", "keep": "#7f7f7f", "inconclusive": "#ff7f0e"}
FIGURES = ("ranking", "per_class", "curves", "paired", "history")


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f")


def _palette(study: optuna.Study) -> dict[str, str]:
    """One colour per loss, the same in every figure: Dice+CE red, the others in the order they were first tried."""
    colors: dict[str, str] = {}
    others = 0
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        spec = rec.spec_of(t)
        if spec is None or spec.key() in colors:
            continue
        if rec.is_baseline(spec):
            colors[spec.key()] = BASELINE_COLOR
        else:
            colors[spec.key()] = PALETTE[others % len(PALETTE)]
            others += 1
    return colors


def _label(trial: optuna.trial.FrozenTrial) -> str:
    spec = rec.spec_of(trial)
    return f"#{trial.number} {spec.describe() if spec else '?'}"


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, color=OTHER_COLOR,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def ranking(study: optuna.Study, verdict) -> Figure:
    screened = sorted(rec.screening_trials(study), key=lambda t: (-t.value, t.number))
    comparisons = verdict.comparisons if verdict else []
    fig = Figure(figsize=(11, max(3.5, 0.9 + 0.38 * max(len(screened), len(comparisons) * 2))), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.2, 1))
    if screened:
        ys = list(range(len(screened)))[::-1]
        palette = _palette(study)
        colors = [palette[rec.spec_of(t).key()] for t in screened]
        left.barh(ys, [t.value for t in screened], color=colors)
        left.set_yticks(ys, [_label(t) for t in screened], fontsize=8)
        base = rec.baseline_trial(screened)
        if base is not None:
            left.axvline(base.value, color=BASELINE_COLOR, ls="--", lw=1, label="Dice+CE")
            left.legend(loc="lower right", fontsize=8)
        left.set_xlabel(f"screening objective ({_objective(study)})")
        lo = min(t.value for t in screened)
        left.set_xlim(max(0.0, lo - 0.1 * (1 - lo) - 0.05), min(1.0, max(t.value for t in screened) + 0.05))
    else:
        _empty(left, "no finished screening trial")
    left.set_title("screening: selection only (one fold, noisy)", fontsize=10)
    if comparisons:
        ys = list(range(len(comparisons)))[::-1]
        for y, c in zip(ys, comparisons):
            o = c.overall
            gain = 100 * o.mean_gain if o.cases else math.nan
            lo, hi = (100 * o.ci[0], 100 * o.ci[1]) if o.cases else (math.nan, math.nan)
            chosen = verdict.decision == "switch" and verdict.loss == c.spec
            color = DECISION_COLORS["switch"] if chosen else CANDIDATE_COLOR
            right.errorbar([gain], [y], xerr=[[gain - lo], [hi - gain]], fmt="o", color=color, capsize=4)
            p = "-" if o.p_value is None or o.p_value != o.p_value else f"{o.p_value:.3g}"
            right.annotate(f"{gain:+.2f} [{lo:+.2f}, {hi:+.2f}] p={p}, n={o.cases}", (gain, y),
                           textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
        right.set_yticks(ys, [c.spec.describe() for c in comparisons], fontsize=8)
        right.set_ylim(-0.8, len(comparisons) - 0.2)
        right.axvline(0, color=BASELINE_COLOR, ls="--", lw=1)
        right.set_xlabel(f"paired gain over Dice+CE, points of {verdict.metric} (95 % CI)")
    else:
        _empty(right, "no confirmation: the verdict can only be keep or inconclusive")
    decision = verdict.decision if verdict else "inconclusive"
    right.set_title(f"confirmation on unseen folds: verdict {decision.upper()}", fontsize=10,
                    color=DECISION_COLORS.get(decision, "black"))
    return fig


def _objective(study: optuna.Study) -> str:
    return (study.user_attrs.get(rec.SETTINGS) or {}).get("objective", "objective")


def _best_per_loss(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for t in rec.screening_trials(study):
        key = rec.spec_of(t).key()
        if key not in best or t.value > best[key].value:
            best[key] = t
    return sorted(best.values(), key=lambda t: -t.value)


def per_class(study: optuna.Study, verdict, class_names: dict[str, str] | None = None) -> Figure:
    """``class_names``: label value -> name (from the fingerprint); the metrics are keyed by label value."""
    trials = [t for t in _best_per_loss(study) if t.user_attrs.get(rec.METRICS)]
    classes = sorted({c for t in trials for c in t.user_attrs[rec.METRICS] if c != "mean"}, key=str)
    metrics = [m for m in ("dice", "nsd") if any(m in v for t in trials
                                                 for c, v in t.user_attrs[rec.METRICS].items() if c != "mean")]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False)[0]
    if not trials or not metrics:
        _empty(axes[0], "no per-class metrics yet")
        return fig
    width = 0.8 / len(trials)
    palette = _palette(study)
    for ax, metric in zip(axes, metrics):
        for i, t in enumerate(trials):
            m = t.user_attrs[rec.METRICS]
            values = [(m.get(c) or {}).get(metric, math.nan) for c in classes]
            color = palette[rec.spec_of(t).key()]
            ax.bar([k + (i - (len(trials) - 1) / 2) * width for k in range(len(classes))], values, width,
                   label=_label(t), color=color)
        ax.set_xticks(range(len(classes)), [f"{c} {class_names[c]}" if c in (class_names or {}) else c
                                            for c in classes])
        ax.set_ylim(0, 1)
        ax.set_ylabel(metric.upper() if metric == "nsd" else "Dice")
        ax.set_title(("per-class Dice" if metric == "dice" else "per-class NSD (boundary agreement)")
                     + ", best screening trial per loss", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(4, len(trials)),
               fontsize=8)
    return fig


def curves(study: optuna.Study, verdict) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.subplots()
    drawn = 0
    palette = _palette(study)
    offset = 0  # fine-tune: the Dice+CE base(s) first, every continuation from the base's last epoch on
    for fold, base in bases(study).items():
        ys = base.get("curves", {}).get("mean_fg_dice") or []
        ax.plot(range(1, len(ys) + 1), ys, color="black", lw=1.5, alpha=0.4 + 0.6 / (1 + fold),
                label=f"Dice+CE base, fold {fold} ({base['epochs']} epochs)")
        offset = max(offset, len(ys))
        drawn += 1
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        ys = rec.pseudo_dice_curve(t)
        if not ys or rec.spec_of(t) is None:
            continue
        confirm = rec.phase(t) == "confirm"
        label = (f"confirm fold {t.user_attrs.get(rec.FOLD)}: {rec.spec_of(t).describe()}" if confirm
                 else f"{_label(t)} ({t.state.name.lower()})")
        color = palette[rec.spec_of(t).key()]
        ax.plot(range(offset + 1, offset + len(ys) + 1), ys, ls="--" if confirm else "-", marker=".", lw=1,
                label=label, color=color)
        drawn += 1
    if not drawn:
        _empty(ax, "no per-epoch values recorded yet")
        return fig
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("pseudo-Dice (nnU-Net online validation)")
    ax.set_title("pseudo-Dice per epoch, every training (dashed: confirmation)" if not offset else
                 "pseudo-Dice per epoch: the Dice+CE base(s), then every continuation (dashed: confirmation)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def paired(study: optuna.Study, verdict) -> Figure:
    fig = Figure(figsize=(6.5, 6), layout="constrained")
    ax = fig.subplots()
    c = verdict.comparison if verdict else None
    pairs = [(v["baseline"], v["candidate"]) for v in (c.per_case.values() if c else [])
             if v.get("baseline") is not None and v.get("candidate") is not None]
    if not pairs:
        _empty(ax, "no paired confirmation cases: the verdict has no candidate to plot")
        return fig
    xs, ys = zip(*pairs)
    better = [y > x for x, y in pairs]
    ax.scatter(xs, ys, c=[DECISION_COLORS["switch"] if b else BASELINE_COLOR for b in better], s=28, alpha=0.8)
    lo, hi = max(0.0, min(min(xs), min(ys)) - 0.05), min(1.0, max(max(xs), max(ys)) + 0.05)
    ax.plot([lo, hi], [lo, hi], color=OTHER_COLOR, lw=1, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    control = "Dice+CE" if getattr(verdict, "control", "Dice+CE") == "Dice+CE" else "control: Dice+CE continued"
    ax.set_xlabel(f"{control} ({c.metric}, per case)")
    ax.set_ylabel(f"{c.spec.describe()} ({c.metric}, per case)")
    o = c.overall
    ax.set_title(f"paired cases (n={o.cases}): {sum(better)} above the diagonal\n"
                 f"gain {100 * o.mean_gain:+.2f} points, CI [{100 * o.ci[0]:+.2f}, {100 * o.ci[1]:+.2f}]",
                 fontsize=10)
    return fig


def history(study: optuna.Study, verdict) -> Figure:
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.subplots()
    trials = sorted(rec.screening_trials(study), key=lambda t: t.number)
    if not trials:
        _empty(ax, "no finished screening trial")
        return fig
    for source, marker in (("prior", "s"), ("sampler", "o"), ("memory", "D"), ("untried", "^")):
        pts = [t for t in trials if t.user_attrs.get(rec.SOURCE, "sampler") == source]
        if pts:
            ax.scatter([t.number for t in pts], [t.value for t in pts], marker=marker, label=source, zorder=3)
    best, run = [], -math.inf
    for t in trials:
        run = max(run, t.value)
        best.append(run)
    ax.step([t.number for t in trials], best, where="post", color="black", lw=1.2, label="best so far")
    base = rec.baseline_trial(trials)
    if base is not None:
        ax.axhline(base.value, color=BASELINE_COLOR, ls="--", lw=1, label="Dice+CE")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"screening objective ({_objective(study)})")
    ax.set_title("optimisation history", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def save_figures(study: optuna.Study, verdict, out_dir: str | Path, dpi: int = 110,
                 class_names: dict[str, str] | None = None) -> dict[str, Path]:
    """Write every figure as ``out_dir/<name>.png``; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in FIGURES:
        fig = per_class(study, verdict, class_names) if name == "per_class" else globals()[name](study, verdict)
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=dpi)
    return paths
