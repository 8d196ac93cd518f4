"""LossSpec: the one object that travels from the prior through the search to the exported trainer.

A LossSpec names a registered loss (``autoloss.losses.registry``), gives its parameters and, optionally, a
schedule. It is plain data: it serialises to JSON and back without loss, so the prior can emit it, Optuna can
store it as a trial attribute, the trial trainer can build its loss from it and the exporter can write it
into a trainer file.

Parameter names are namespaced by the term they belong to: ``"focal.gamma"``, ``"topk.k"``,
``"dice.weight"``. A single loss such as ``Focal`` has one term (``focal``); a compound such as
``DiceFocal`` has two (``dice`` and ``focal``), each with a ``weight``.

A schedule changes term weights with the epoch. One mechanism serves every recipe of the Loss Odyssey study:
each scheduled term gets a piecewise-linear weight curve through knots ``(at, weight)``, where ``at`` is an
epoch number (``unit="epoch"``) or a fraction of the training (``unit="fraction"``). A switch is two knots at
the same point; a ramp is two knots apart; weights before the first knot and after the last stay constant.

    Kervadec's boundary recipe (region weight 1 -> 0.01, minus 0.01 per epoch):
        Schedule({"dice": [(0, 1.0), (99, 0.01)]}, unit="epoch")
    Dice for the first 20 % of training, then bring the boundary term in over the next 30 %:
        Schedule({"bd": [(0.0, 0.0), (0.2, 0.0), (0.5, 1.0)]}, unit="fraction")
    CE, then Lovasz from half-way:
        Schedule({"ce": [(0.5, 1.0), (0.5, 0.0)], "lovasz": [(0.5, 0.0), (0.5, 1.0)]})
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoloss.errors import AutolossError

SCHEDULE_UNITS = ("epoch", "fraction")


@dataclass(frozen=True)
class Schedule:
    """Piecewise-linear weight curves for some terms of a loss, driven by the epoch."""

    knots: dict[str, tuple[tuple[float, float], ...]]
    unit: str = "fraction"

    def __init__(self, knots: dict[str, Any], unit: str = "fraction"):
        if unit not in SCHEDULE_UNITS:
            raise AutolossError(f"schedule unit {unit!r} is not one of {', '.join(SCHEDULE_UNITS)}")
        clean: dict[str, tuple[tuple[float, float], ...]] = {}
        for term, points in knots.items():
            pts = tuple((float(a), float(w)) for a, w in points)
            if not pts:
                raise AutolossError(f"schedule for term {term!r} has no knots")
            if any(b[0] < a[0] for a, b in zip(pts, pts[1:])):
                raise AutolossError(f"schedule knots for term {term!r} must be sorted by position: {pts}")
            if any(w < 0 or not math.isfinite(w) for _, w in pts):
                raise AutolossError(f"schedule weights for term {term!r} must be finite and >= 0: {pts}")
            clean[str(term)] = pts
        object.__setattr__(self, "knots", clean)
        object.__setattr__(self, "unit", unit)

    def position(self, epoch: int, num_epochs: int) -> float:
        """Where ``epoch`` lies on this schedule's axis."""
        if self.unit == "epoch":
            return float(epoch)
        return epoch / max(num_epochs, 1)

    def weights_at(self, epoch: int, num_epochs: int) -> dict[str, float]:
        """Weight of every scheduled term at ``epoch`` (a pure function: resuming at epoch e gives the same)."""
        x = self.position(epoch, num_epochs)
        return {term: _interpolate(pts, x) for term, pts in self.knots.items()}

    @classmethod
    def ramp_in(cls, term: str, start: float, full: float, unit: str = "fraction") -> "Schedule":
        """``term`` off until ``start``, then linearly up to weight 1 at ``full``: the survey's "train with Dice
        first, then bring the boundary term in" recipe for DiceBD / DiceHD."""
        if full < start:
            raise AutolossError(f"ramp for {term!r} must end after it starts ({start} > {full})")
        return cls({term: [(0.0, 0.0), (start, 0.0), (full, 1.0)]}, unit=unit)

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "knots": {t: [list(p) for p in pts] for t, pts in self.knots.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Schedule":
        try:
            return cls(data["knots"], unit=data.get("unit", "fraction"))
        except (KeyError, TypeError, ValueError) as exc:
            raise AutolossError(f"malformed schedule {data!r}: {exc}") from None


def _interpolate(pts: tuple[tuple[float, float], ...], x: float) -> float:
    # At a switch (two knots at the same position) the later knot wins from that position on.
    if x < pts[0][0]:
        return pts[0][1]
    for (a0, w0), (a1, w1) in zip(pts, pts[1:]):
        if a0 <= x < a1:
            return w0 + (w1 - w0) * (x - a0) / (a1 - a0)
    return pts[-1][1]


@dataclass(frozen=True)
class LossSpec:
    """A loss by registry name, its namespaced parameters and an optional schedule."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": dict(sorted(self.params.items())),
            "schedule": self.schedule.to_dict() if self.schedule else None,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LossSpec":
        if not isinstance(data, dict) or "name" not in data:
            raise AutolossError(f"a LossSpec needs at least a 'name': got {data!r}")
        sched = data.get("schedule")
        return cls(
            name=str(data["name"]),
            params=dict(data.get("params") or {}),
            schedule=Schedule.from_dict(sched) if sched else None,
        )

    @classmethod
    def from_json(cls, text: str) -> "LossSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise AutolossError(f"LossSpec is not valid JSON: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> "LossSpec":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise AutolossError(f"{path}: cannot read LossSpec file ({exc.strerror})") from None
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise AutolossError(f"{path}: not valid JSON ({exc}); expected a LossSpec") from None

    def key(self) -> str:
        """Stable short hash of the spec: equal specs share a key (used to name trainers and dedupe trials)."""
        return hashlib.sha1(self.to_json(sort_keys=True).encode()).hexdigest()[:10]

    def __hash__(self) -> int:
        return hash(self.to_json(sort_keys=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossSpec) and self.to_dict() == other.to_dict()

    def describe(self) -> str:
        """One-line human form, e.g. ``DiceFocal(focal.gamma=2) + schedule``."""
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()))
        text = f"{self.name}({inner})" if inner else self.name
        return text + (" + schedule" if self.schedule else "")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
