"""autoloss: the loss is the part of nnU-Net that nnU-Net does not configure. autoloss measures the dataset,
recommends a loss, searches losses with real nnU-Net trainings and exports the winner as a trainer.

The public API (imported lazily, so ``import autoloss`` stays fast; see ``autoloss/api.py``):

    fingerprint(dataset) -> dict                 recommend(dataset_or_fingerprint) -> [Recommendation]
    search(dataset, ...) -> SearchResult          load_search(work_dir) -> SearchResult
    export(source, output) -> Path               report(work_dir) -> Path (report.html)
    LossSpec, build_loss(spec) -> torch module   AutolossError
"""

__version__ = "0.1.0"

# name -> module that defines it. fingerprint/search/export/report are callable submodules (autoloss/_api_module.py).
_LAZY = {
    "fingerprint": "autoloss.fingerprint", "search": "autoloss.search", "export": "autoloss.export",
    "report": "autoloss.report", "recommend": "autoloss.api", "load_search": "autoloss.api",
    "default_configuration": "autoloss.api", "SearchResult": "autoloss.api", "LossSpec": "autoloss.spec",
    "Schedule": "autoloss.spec", "build_loss": "autoloss.losses", "AutolossError": "autoloss.errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'autoloss' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_LAZY[name])
    value = module if _LAZY[name] == f"autoloss.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
