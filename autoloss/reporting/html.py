"""``autoloss report WORK_DIR``: a search's results as one self-contained HTML page and its figures as PNG files.

``WORK_DIR/report.html`` embeds every figure as a base64 PNG and its style inline: it opens offline, can be mailed
or attached to a ticket, and loads nothing from the network. The figures are also written to
``WORK_DIR/figures/*.png`` (see ``autoloss.reporting.figures`` for what each shows). A search writes the report at its end;
the command rewrites it at any time (also while a search runs, from what is finished so far).
"""
from __future__ import annotations

import base64
import html
import os
import shlex
import time
from pathlib import Path

from autoloss.errors import check_writable

FIGURES_DIR = "figures"
REPORT_NAME = "report.html"

CAPTIONS = {
    "ranking": "Left: every finished screening trial, ranked by the objective on the screening fold(s); Dice+CE in "
               "red. The screening only selects: the best of many noisy trials beats one Dice+CE run by chance. "
               "Right: the confirmation, the only evidence the verdict uses: each candidate re-trained with Dice+CE "
               "on folds the screening never saw, as the mean paired per-case gain with its 95 % bootstrap "
               "interval, Wilcoxon p-value and number of cases.",
    "per_class": "Dice and NSD (normalised surface Dice, boundary agreement within the tolerance) per class, for the "
                 "best screening trial of each loss. A loss can lift the mean while losing a class.",
    "curves": "Pseudo-Dice per epoch (nnU-Net's online validation on a few patches) of every training; pruned "
              "trials stop early. Dashed: confirmation trainings. A fine-tune search draws its Dice+CE base(s) first "
              "(black) and every continuation from the base's last epoch on.",
    "paired": "Per confirmation case: the verdict's candidate (y) against Dice+CE (x) on the same case and fold. "
              "Points above the diagonal are cases the candidate segments better.",
    "history": "Optimisation history: the screening objective of each trial in the order it ran (squares: the "
               "prior's picks, enqueued first; circles: TPE's samples) and the best so far.",
}
TITLES = {"ranking": "Ranking against Dice+CE", "per_class": "Per-class Dice and NSD per loss",
          "curves": "Pseudo-Dice per epoch", "paired": "Paired per-case comparison (verdict's candidate)",
          "history": "Optimisation history"}
TABLE_COLUMNS = ("rank", "phase", "trial", "fold", "state", "loss", "source", "objective", "dice", "nsd", "gain",
                 "ci_low", "ci_high", "p_value", "cases", "epochs", "seconds", "reason")
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}.verdict{border-left:6px solid #888;background:#f6f6f6;padding:.6em 1em}
.verdict.switch{border-color:#2ca02c}.verdict.keep{border-color:#7f7f7f}.verdict.inconclusive{border-color:#ff7f0e}
.verdict pre{white-space:pre-wrap;margin:.3em 0;font-size:.95em}
figure{margin:0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.8em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:nth-child(6),th:nth-child(6){text-align:left}tr:nth-child(even){background:#fafafa}
code{background:#f2f2f2;padding:0 .2em}
"""


def write_report(work_dir: Path, study_name: str | None = None) -> Path:
    """Write ``report.html`` and ``figures/*.png`` for the search in ``work_dir``; returns the HTML's path."""
    from autoloss.reporting.figures import save_figures
    from autoloss.searching.results import summary_text, trials_frame
    from autoloss.searching.study import open_work_dir_study
    from autoloss.searching.verdict import compute_verdict

    work = Path(work_dir).resolve()
    study = open_work_dir_study(work, study_name)  # refuses a study that does not read back whole
    check_writable(work / FIGURES_DIR, "the report")
    verdict = compute_verdict(study)
    figures = save_figures(study, verdict, work / FIGURES_DIR, class_names=_class_names(work))
    df = trials_frame(study, verdict)
    page = _page(study, verdict, summary_text(study, verdict), figures, df, work)
    out = work / REPORT_NAME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)  # a browser reloading the page never sees half a file
    return out


def _page(study, verdict, summary: str, figures: dict[str, Path], df, work: Path) -> str:
    from autoloss import __version__
    from autoloss.searching import records as rec

    settings = study.user_attrs.get(rec.SETTINGS) or {}
    fid = settings.get("fidelity") or {}
    dataset = settings.get("dataset", "?")
    meta = (f"study <code>{_e(study.study_name)}</code> &middot; {_e(fid.get('configuration', '?'))}, "
            f"{_e(fid.get('epochs', '?'))} epochs x {_e(fid.get('iterations_per_epoch', '?'))} iterations, "
            f"screening fold(s) {_e(', '.join(map(str, fid.get('folds', []))))} &middot; objective "
            f"{_e(settings.get('objective', '?'))} &middot; {len(settings.get('cases', []))} cases &middot; "
            f"{_e(_fidelity_mode(settings))} &middot; "
            f"written {time.strftime('%Y-%m-%d %H:%M')} by autoloss {_e(__version__)}")
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'>"
             f"<title>autoloss report: {_e(dataset)}</title><style>{STYLE}</style></head><body>",
             f"<h1>autoloss search report: {_e(dataset)}</h1><p class=meta>{meta}</p>",
             f"<section class='verdict {_e(verdict.decision)}'><h2>Verdict: {_e(verdict.decision.upper())}</h2>"
             f"<pre>{_e(summary.split(chr(10), 1)[-1])}</pre></section>"]  # line 1 repeats the heading
    for name, path in figures.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h2>{_e(TITLES[name])}</h2><figure><img alt='{_e(TITLES[name])}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{_e(CAPTIONS[name])} "
                     f"(<code>{_e(path.relative_to(work))}</code>)</figcaption></figure>")
    parts.append("<h2>All trainings</h2>")
    if len(df):
        cols = [c for c in TABLE_COLUMNS if c in df.columns and df[c].notna().any()]
        import pandas as pd

        # cell by cell: integer columns with gaps (pandas' Int64) would otherwise print "<NA>"
        cells = df[cols].astype(object).map(lambda v: "" if v is None or pd.isna(v) else
                                            f"{v:.4f}" if isinstance(v, float) else v)
        parts.append(cells.to_html(index=False, border=0))
    else:
        parts.append("<p>no finished training yet</p>")
    files = [f for f in ("summary.txt", "verdict.json", "best_loss.json", "results.csv", "results.md",
                         "study.journal", "fingerprint.json") if (work / f).exists()]
    parts.append("<h2>Files in the work directory</h2><p>" + " &middot; ".join(f"<code>{_e(f)}</code>" for f in files)
                 + "</p><p class=meta>export the verdict's loss: <code>autoloss export "
                   f"{_e(shlex.quote(str(work)))} -o DIR</code> "
                   "(only a SWITCH verdict exports)</p></body></html>")
    return "\n".join(parts)


def _fidelity_mode(settings: dict) -> str:
    mode = settings.get("fidelity_mode") or {}
    if mode.get("mode") != "finetune":
        return "trained from scratch"
    base = mode.get("base") or {}
    return (f"fine-tuned {mode.get('finetune_epochs')} epochs from {'your' if base.get('source') == 'user' else 'its'} "
            f"Dice+CE base of {base.get('epochs')} epochs (initial LR {mode['lr']['initial_lr']:.3g})")


def _class_names(work: Path) -> dict[str, str]:
    """Label value -> class name, from the fingerprint the search saved (none: the figures show label values)."""
    import json

    try:
        classes = json.loads((work / "fingerprint.json").read_text())["classes"]
        return {str(k): str(v.get("name") or k) for k, v in classes.items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def _e(value) -> str:
    return html.escape(str(value), quote=True)
