"""A search's results, written to its work directory after every trial (so an interrupted search loses nothing):

- ``results.csv`` / ``results.md``: one row per trial, screening (ranked) then confirmation; confirmation rows of a
  candidate carry its paired comparison with Dice+CE (gain, CI, p-value, cases);
- ``verdict.json``: the verdict and every comparison, with the paired per-case values;
- ``best_loss.json``: the LossSpec the verdict recommends (the switch loss, else Dice+CE) with the verdict and
  provenance; ``summary.txt``: the verdict in words.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import optuna

from autoloss import schema
from autoloss.searching import records as rec
from autoloss.searching.base import base_summary, finetune_rows
from autoloss.searching.verdict import Verdict, compute_verdict
from autoloss.spec import LossSpec


def trials_frame(study: optuna.Study, verdict: Verdict | None = None):
    """One row per trial: screening trials ranked by objective, then confirmation trainings."""
    import pandas as pd

    comparisons = {c.spec.key(): c for c in (verdict.comparisons if verdict else [])}
    identity = study.user_attrs.get(rec.SETTINGS) or {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if rec.replaced(t) or t.state == optuna.trial.TrialState.WAITING or rec.phase(t) == "repeat":
            continue  # a repeat was not trained: its value is its earlier trial's (summary.txt counts them)
        spec = rec.spec_of(t)
        m = t.user_attrs.get(rec.METRICS) or {}
        confirm = rec.phase(t) == "confirm"
        row = {"phase": rec.phase(t), "trial": t.number, "fold": t.user_attrs.get(rec.FOLD) if confirm else None,
               "state": t.state.name.lower(), "loss": spec.describe() if spec else "?",
               "source": t.user_attrs.get(rec.SOURCE, "sampler"),
               "objective": t.value if t.state == rec.COMPLETE else None,
               "dice": (m.get("mean") or {}).get("dice"), "nsd": (m.get("mean") or {}).get("nsd"),
               # the regime metrics of --metric auto (absent from trials made before they existed)
               "cldice": (m.get("mean") or {}).get("cldice"), "lesion_f1": (m.get("mean") or {}).get("lesion_f1")}
        if confirm and t.user_attrs.get(rec.REPLICATE):  # Dice+CE trained again: the verdict's second control
            row["loss"] += f" (second control, seed +{t.user_attrs[rec.REPLICATE]})"
        cmp = comparisons.get(spec.key()) if (confirm and spec) else None
        o = cmp.overall if cmp else None
        row.update(gain=o.mean_gain if o else None, ci_low=o.ci[0] if o else None, ci_high=o.ci[1] if o else None,
                   p_value=o.p_value if o else None, cases=o.cases if o else None)
        for cls, vals in m.items():
            if cls != "mean":
                for metric, v in vals.items():
                    row[f"{metric}_{cls}"] = v
        row.update(epochs=t.user_attrs.get("epochs_run") or t.user_attrs.get(rec.EPOCHS),
                   seconds=t.user_attrs.get("seconds"), overhead_s=t.user_attrs.get("overhead_seconds"),
                   reason=t.user_attrs.get(rec.REASON))
        # schema 2 columns (autoloss.schema): from the trial, else the study identity, else the field's default
        row.update({f.name: schema.cell(t.user_attrs.get(f.name, identity.get(f.name, f.default)))
                    for f in schema.RESULT_COLUMNS})
        row["schema_version"] = schema.SCHEMA_VERSION
        rows.append(row)
    rows = finetune_rows(study, rows)  # fine-tune fidelity: the bases first, each row's fidelity and base Dice
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["_order"] = df["phase"].map({"base": 0, "screen": 1, "confirm": 2})
    df = df.sort_values(["_order", "objective", "trial"], ascending=[True, False, True], na_position="last")
    df = df.drop(columns="_order").reset_index(drop=True)
    screen = df["phase"] == "screen"
    df.insert(0, "rank", [int(screen[: i + 1].sum()) if s else None for i, s in enumerate(screen)])
    for col in ("rank", "trial", "fold", "cases", "epochs"):
        if col in df:  # a fine-tune study with only its bases so far has no trial columns
            df[col] = df[col].astype("Int64")  # integers with gaps, not floats
    return df


def recommended_spec(study: optuna.Study, verdict: Verdict) -> tuple[LossSpec, optuna.trial.FrozenTrial | None]:
    """The loss the verdict recommends (the switch loss, else Dice+CE) and its best screening trial."""
    from autoloss.losses import baseline_spec

    spec = verdict.loss if verdict.decision == "switch" else baseline_spec()
    trials = [t for t in rec.screening_trials(study) if rec.spec_of(t) == spec]
    return spec, max(trials, key=lambda t: t.value) if trials else None


def summary_text(study: optuna.Study, verdict: Verdict) -> str:
    from autoloss.nnunet.scaled import describe

    screened = rec.screening_trials(study)
    network = (study.user_attrs.get(rec.SETTINGS) or {}).get("network")
    lines = [f"verdict: {verdict.decision.upper()}", verdict.message, describe(network)]
    lines += [line for line in [base_summary(study)] if line]
    if screened:
        best = max(screened, key=lambda t: (t.value, -t.number))
        base = rec.baseline_trial(screened)
        lines.append(f"screening (selection only, not evidence): best {rec.spec_of(best).describe()} "
                     f"{best.value:.4f}" + (f", Dice+CE {base.value:.4f}" if base else ", Dice+CE not finished"))
    if repeats := [t for t in study.get_trials(deepcopy=False) if rec.phase(t) == "repeat"]:
        lines.append(f"{len(repeats)} proposal(s) repeated a loss already screened: told its value, not trained, "
                     "not counted")
    if (learned := baseline_confirmation_dice(study)) is not None:
        lines.append(f"Dice+CE on the confirmation: mean Dice {learned:.3f} (what the trainings learned at this "
                     "fidelity; the verdict rests on these trainings)")
    for c in verdict.comparisons:
        o = c.overall
        if o.cases:
            lines.append(f"confirmation: {c.spec.describe()} vs {verdict.control}: {100 * o.mean_gain:+.2f} points on "
                         f"{o.cases} paired cases, CI [{100 * o.ci[0]:+.2f}, {100 * o.ci[1]:+.2f}], p={o.p_value:.3g}"
                         + (f"; retraining noise: a gain must exceed {100 * c.retraining_margin:.2f}"
                            if c.retraining_margin else "")
                         + (f"; loses Dice on class(es) {', '.join(c.dice_losses)}" if c.dice_losses else ""))
    return "\n".join(lines)


def baseline_confirmation_dice(study: optuna.Study) -> float | None:
    """Dice+CE's mean Dice over its finished confirmation trainings (None before the first)."""
    values = [(t.user_attrs.get(rec.METRICS) or {}).get("mean", {}).get("dice") for t in rec.confirmation_trials(study)
              if t.state == rec.COMPLETE and rec.is_baseline(rec.spec_of(t))]
    values = [v for v in values if v is not None and v == v]
    return sum(values) / len(values) if values else None


def save_results(study: optuna.Study, work_dir: str | Path) -> Verdict | None:
    """Write every results file; returns the verdict (None before any trial finished)."""
    work_dir = Path(work_dir)
    verdict = compute_verdict(study)
    df = trials_frame(study, verdict)
    if df.empty:
        return None
    _write(work_dir / "results.csv", df.to_csv(index=False))
    cols = [c for c in ("rank", "phase", "trial", "fold", "state", "loss", "objective", "dice", "nsd", "cldice",
                        "lesion_f1", "gain", "ci_low", "ci_high", "p_value", "cases", "seconds", "reason")
            if c in df.columns and (c not in ("cldice", "lesion_f1") or df[c].notna().any())]
    _write(work_dir / "results.md", _markdown(df[cols]))
    _write(work_dir / "verdict.json", _dumps({"verdict": verdict.to_dict(),
                                             "comparisons": [c.to_dict() for c in verdict.comparisons]}))
    spec, trial = recommended_spec(study, verdict)
    payload = spec.to_dict()
    payload["verdict"] = verdict.to_dict()
    payload["provenance"] = {"study": study.study_name, "trial": trial.number if trial else None,
                             "objective": trial.value if trial else None,
                             "metrics": trial.user_attrs.get(rec.METRICS) if trial else None,
                             "settings": study.user_attrs.get(rec.SETTINGS)}
    _write(work_dir / "best_loss.json", _dumps(payload))
    _write(work_dir / "summary.txt", summary_text(study, verdict) + "\n")
    return verdict


def _markdown(df) -> str:
    """A markdown table (pandas needs the optional `tabulate` for to_markdown; written by hand here)."""
    import pandas as pd

    def cell(v) -> str:
        if v is None or pd.isna(v):
            return ""
        return f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "/")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.astype(object).itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _dumps(obj) -> str:
    # NaN is not JSON: write null so every reader (browsers, jq) can load the files.
    return json.dumps(_clean(obj), indent=2)


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _write(path: Path, text: str) -> None:
    # Write-then-rename: a reader (or a kill) never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
