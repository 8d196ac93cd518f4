"""autoloss: the loss is the part of nnU-Net that nnU-Net does not configure. autoloss measures the dataset,
recommends a loss, searches losses with real nnU-Net trainings and exports the winner as a trainer.

The public API, defined in ``autoloss/api.py`` and re-exported here (imported on first use, so ``import autoloss``
loads none of torch, nnU-Net, Optuna, Ray or SimpleITK):

    fingerprint(dataset) -> dict                 recommend(dataset_or_fingerprint) -> [Recommendation]
    verify(dataset) -> VerifyReport (errors, warnings: one line each)
    search(dataset, ...) -> SearchResult          load_search(work_dir) -> SearchResult
    export(source, output) -> Path               report(work_dir) -> Path (report.html)
    LossSpec, build_loss(spec) -> torch module   AutolossError
"""
__version__ = "0.1.0"

# Type checkers read the block below as true (``TYPE_CHECKING`` by name); importing ``typing`` for it would double
# the cost of ``import autoloss``.
TYPE_CHECKING = False

# public name -> the module that defines it (no module of the package is named like one of these functions)
_LAZY = {
    "fingerprint": "autoloss.api", "recommend": "autoloss.api", "search": "autoloss.api",
    "load_search": "autoloss.api", "export": "autoloss.api", "report": "autoloss.api",
    "default_configuration": "autoloss.api", "verify": "autoloss.api", "SearchResult": "autoloss.api",
    "LossSpec": "autoloss.spec", "Schedule": "autoloss.spec", "build_loss": "autoloss.losses",
    "AutolossError": "autoloss.errors",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names are imported on first use
    from autoloss.api import (SearchResult, default_configuration, export, fingerprint, load_search, recommend,
                              report, search, verify)
    from autoloss.errors import AutolossError
    from autoloss.losses import build_loss
    from autoloss.spec import LossSpec, Schedule


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'autoloss' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
