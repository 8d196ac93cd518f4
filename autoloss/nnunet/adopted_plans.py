"""Plans a study adopts instead of planning (a fine-tune base's), and how two plans are compared.

Kept apart from ``prepare`` (which writes them) and ``base_folder`` (which reads a base), so both can use it.
"""
from __future__ import annotations

import json
from pathlib import Path

from autoloss.errors import AutolossError


def first_difference(a, b, where: str = "") -> str | None:
    """The first path at which two JSON values differ (``configurations.2d.patch_size``), None when equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}{k}"
            found = first_difference(a[k], b[k], f"{where}{k}.")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}{i}.")
            if found:
                return found
        return None
    return None if a == b else where.rstrip(".") or "(value)"


def adopt_plans(preprocessed: Path, plans: dict) -> None:
    """Give the study the base's plans: write ``<plans_name>.json`` into the study's preprocessed folder, or check
    that the one there is the same (a different one was made for another network: refused, never overwritten)."""
    target = Path(preprocessed) / f"{plans['plans_name']}.json"
    if target.is_file():
        diff = first_difference(json.loads(target.read_text()), plans)
        if diff:
            raise AutolossError(f"the base's plans differ from {target} at {diff}: the base was trained with other "
                                f"plans under the same name; use the nnUNet_preprocessed the base was trained from")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(plans, indent=4))
