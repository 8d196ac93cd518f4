"""Where autoloss finds its data files: the prior's rules and reference tables (``fingerprints/``) and the search
spaces (``search_spaces/``).

The top-level ``fingerprints/`` and ``search_spaces/`` folders of the repository are the one, user-editable
source. A wheel carries copies of them as package data (``autoloss/data/``, copied at build time by setup.py), so
an installed autoloss works from any directory. Which wins: in a source checkout (editable install, or running
from the repository) the top-level folders are used, so editing them takes effect at once; an installed wheel
reads its packaged copies (to use edited files there, pass them explicitly: ``--space my.yaml``, or
``recommend_from_fingerprint(fp, rules_path=...)``).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("fingerprints", "search_spaces")
_CHECKOUT = Path(__file__).resolve().parent.parent


def data_dir(kind: str) -> Path:
    """The folder holding ``kind`` (one of KINDS): the checkout's top-level folder, else the packaged copy."""
    if kind not in KINDS:
        raise ValueError(f"unknown data folder {kind!r}; known: {', '.join(KINDS)}")
    checkout = _CHECKOUT / kind
    # pyproject.toml beside the package marks a source checkout; an installed package has site-packages there.
    if checkout.is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return checkout
    # Wheels install as plain folders, so the packaged copy is a real path (no zip extraction needed).
    return Path(str(resources.files("autoloss") / "data" / kind))


def data_file(kind: str, name: str) -> Path:
    return data_dir(kind) / name


def load_versioned_yaml(file: Path, what: str, version: int = 1) -> dict:
    """A data file's YAML mapping, refused in one line when unreadable or of another ``version``."""
    import yaml

    from autoloss.errors import AutolossError

    try:
        data = yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AutolossError(f"{file}: cannot read {what} ({exc})") from None
    found = data.get("version") if isinstance(data, dict) else None
    if found != version:
        raise AutolossError(f"{file}: unsupported {what} version {found!r} (expected {version})")
    return data
