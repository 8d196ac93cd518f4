"""The one schema version of what a search stores: the study identity (the settings a study is made with and must
be resumed with), ``results.csv`` and the knowledge record. Bumped once per release that adds fields.

Version 1: everything before the network was recorded (every trial trained nnU-Net's own network).
Version 2: the network that judged the losses (``autoloss.nnunet.scaled``), the fidelity mode (from scratch or
fine-tuned from a base, ``autoloss.searching.base``), the Ray node of each trial, and the fields below.

Adding a field under version 2 is one line in the tuple of where it goes; readers of older data get its default:

- ``STUDY_FIELDS``: keys of the study identity (``settings``); a resumed study must match them all. They are also
  copied into the knowledge record's ``settings`` (so the memory knows what judged each result).
- ``RESULT_COLUMNS``: columns of ``results.csv``, each read from the trial's user attribute of that name, else
  from the study identity's key of that name, else empty (a dict value is written as its ``label``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Field:
    name: str
    default: Any  # what data written before the field existed means by its absence
    doc: str


STUDY_FIELDS: tuple[Field, ...] = (
    Field("network", None, "the network that trained every trial: autoloss.nnunet.scaled's record"),
    Field("fidelity_mode", {"mode": "scratch"}, "from scratch, or fine-tuned from a Dice+CE base "
          "(autoloss.searching.base: the base, its length, the fine-tune epochs and LR)"),
)
RESULT_COLUMNS: tuple[Field, ...] = (
    Field("network", None, "the network's label, e.g. 'small 2d 16-128 4x'"),
    Field("node", None, "the Ray node that ran the trial (host and node id); empty in-process"),
)


def version_of(data: dict[str, Any]) -> int:
    """The schema version of a stored settings dict or record (1: written before versions were stored)."""
    version = data.get("schema_version", 1)
    return version if isinstance(version, int) else 1


def with_defaults(data: dict[str, Any], fields: tuple[Field, ...] = STUDY_FIELDS) -> dict[str, Any]:
    """``data`` with every field it predates filled with that field's default (for readers; nothing is written)."""
    return {f.name: f.default for f in fields} | dict(data)


def cell(value: Any) -> Any:
    """A ``RESULT_COLUMNS`` value as a CSV cell: a record (dict) by its label, anything else as is."""
    if isinstance(value, dict):
        return value.get("label") or value.get("name")
    return value
