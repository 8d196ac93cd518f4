"""The embedded demo: the whole job on a dataset autoloss generates itself (no download, no GPU).

generate a small 2D nnU-Net dataset -> fingerprint -> recommend -> a 3-trial search at a CPU smoke fidelity ->
export the winner as an nnU-Net trainer. Every step is the real one; only the sizes are tiny.
"""
from __future__ import annotations

from pathlib import Path


def run_demo(work_dir: Path, budget: int = 3, epochs: int = 3, iterations: int = 12, console=None) -> Path:
    from rich.console import Console

    from autoloss.dataset import read_dataset
    from autoloss.export import export_trainer, resolve_source, usage_lines
    from autoloss.fingerprint import compute_fingerprint, fingerprint_table
    from autoloss.nnunet.run import Fidelity
    from autoloss.prior import recommend_from_fingerprint
    from autoloss.errors import AutolossError
    from autoloss.report import recommendation_table, search_progress
    from autoloss.search.results import summary_text
    from autoloss.search.verdict import compute_verdict
    from autoloss.search.confirm import ConfirmSettings
    from autoloss.search.records import screening_trials
    from autoloss.search.runner import SearchConfig, run_search
    from autoloss.synthetic import make_synthetic_dataset

    console = console or Console()
    work_dir = Path(work_dir).resolve()
    data_dir = work_dir / "data"
    folder = data_dir / "Dataset990_AutolossDemo"
    if not folder.exists():
        console.rule("1. a synthetic nnU-Net dataset: two classes, one large, one small and rare")
        folder = make_synthetic_dataset(data_dir, dim=2, num_cases=8, shape=(64, 64), num_classes=2,
                                        foreground_ratio=(0.10, 0.004), objects_per_case=(1, 3),
                                        absent_fraction=(0.0, 0.25), seed=0, dataset_id=990,
                                        name="AutolossDemo")
    console.print(f"dataset: {folder}")
    console.rule("2. autoloss fingerprint")
    fp = compute_fingerprint(read_dataset(folder), num_workers=2)
    console.print(fingerprint_table(fp))
    console.rule("3. autoloss recommend")
    console.print(recommendation_table(recommend_from_fingerprint(fp, top=5), fp))
    console.rule(f"4. autoloss search --budget {budget} (CPU smoke fidelity: {epochs} epochs x {iterations} iterations)")
    cfg = SearchConfig(dataset=str(folder), budget=budget, work_dir=work_dir / "search", device="cpu",
                       fidelity=Fidelity(configuration="2d", epochs=epochs, iterations_per_epoch=iterations,
                                         val_iterations_per_epoch=2),
                       pruner="none", prior_top=max(1, budget - 1), confirm=ConfirmSettings(top=1))
    with search_progress(console, budget) as progress:
        study = run_search(cfg, progress=progress, log=console.print)
    verdict = compute_verdict(study)
    console.print(summary_text(study, verdict), markup=False)
    console.rule("5. autoloss export")
    try:
        src = resolve_source(str(work_dir / "search"))
    except AutolossError as exc:
        # The expected outcome at a demo's fidelity: export refuses what the evidence does not support. Show the
        # explicit override, which the trainer file records as not the verdict's choice.
        console.print(f"autoloss export {work_dir / 'search'}: {exc}", markup=False)
        best = max(screening_trials(study), key=lambda t: (t.value, -t.number))
        console.print(f"exporting screening trial {best.number} anyway with --trial {best.number} (for the demo)")
        src = resolve_source(str(work_dir / "search"), trial=best.number)
    path = export_trainer(src.spec, work_dir / "trainers", provenance=src.provenance, force=True)
    console.print(f"wrote {path}")
    for line in usage_lines(path, "990"):
        console.print(f"  {line}")
    return path
