"""Search spaces from ``search_spaces/*.yaml``: which losses, which of their parameters, ranges and the
Dice-first schedule of boundary terms. One space = the union of its files.

Sampling is conditional: ``loss`` is a categorical over the space's losses, then only the chosen loss's
parameters are suggested, under their namespaced names (``focal.gamma``), so a name always means one
distribution within a study. Ranges must lie inside the registry's valid range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoloss.errors import AutolossError
from autoloss.resources import data_dir
from autoloss.spec import LossSpec, Schedule

SPACES_DIR = data_dir("search_spaces")  # the checkout's folder, else the wheel's packaged copy
DEFAULT_SPACES = ("compound",)
SCHEDULED_TERMS = ("bd", "hd")  # boundary terms need the Dice-first ramp (survey: they fail from scratch)


@dataclass(frozen=True)
class ParamRange:
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial, name: str) -> float:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass
class SearchSpace:
    losses: list[str]
    params: dict[str, ParamRange] = field(default_factory=dict)
    schedule: dict[str, ParamRange] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, names_or_paths: list[str] | tuple[str, ...] = DEFAULT_SPACES) -> "SearchSpace":
        space = cls(losses=[])
        for item in names_or_paths:
            path = Path(item)
            if not path.suffix:
                path = SPACES_DIR / f"{item}.yaml"
            if not path.exists():
                known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
                raise AutolossError(f"search space {item!r} not found ({path}); known: {known}")
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise AutolossError(f"{path}: not valid YAML ({exc})") from None
            space._merge(data, path)
        space._validate()
        return space

    def _merge(self, data: dict[str, Any], path: Path) -> None:
        for name in data.get("losses", []):
            if name not in self.losses:
                self.losses.append(name)
        for section, target in (("params", self.params), ("schedule", self.schedule)):
            for name, cfg in (data.get(section) or {}).items():
                try:
                    rng = ParamRange(float(cfg["low"]), float(cfg["high"]), bool(cfg.get("log", False)),
                                     bool(cfg.get("integer", False)))
                except (KeyError, TypeError, ValueError):
                    raise AutolossError(f"{path}: {name} needs low and high numbers, got {cfg!r}") from None
                if name in target and target[name] != rng:
                    raise AutolossError(f"{path}: {name} is declared twice with different ranges "
                                        f"({target[name]} vs {rng}); one name must mean one distribution")
                target[name] = rng
        self.sources.append(str(path))

    def _validate(self) -> None:
        from autoloss.losses import get_loss_def

        if not self.losses:
            raise AutolossError("the search space lists no losses")
        for name in self.losses:
            get_loss_def(name)  # raises a clear error for unknown names
        for pname, rng in self.params.items():
            owners = [n for n in self.losses if pname in _param_defs(n)]
            if not owners:
                raise AutolossError(f"search space parameter {pname!r} belongs to none of {', '.join(self.losses)}")
            pdef = _param_defs(owners[0])[pname]
            low, high = getattr(pdef, "low", None), getattr(pdef, "high", None)
            if (low is not None and rng.low < low) or (high is not None and rng.high > high) or rng.low > rng.high:
                raise AutolossError(f"search range {pname} [{rng.low}, {rng.high}] is outside the valid "
                                    f"range [{low}, {high}]")

    def scheduled_term(self, loss: str) -> str | None:
        if not self.schedule:
            return None
        terms = getattr(get_def(loss), "terms", ())
        return next((t for t in SCHEDULED_TERMS if t in terms), None) if len(terms) > 1 else None

    def suggest(self, trial) -> LossSpec:
        """Sample a LossSpec (conditional on the chosen loss) through an Optuna trial."""
        loss = trial.suggest_categorical("loss", self.losses)
        own = _param_defs(loss)
        params = {p: rng.suggest(trial, p) for p, rng in self.params.items() if p in own}
        schedule = None
        term = self.scheduled_term(loss)
        if term is not None:
            start = self.schedule["schedule.start"].suggest(trial, "schedule.start")
            span = self.schedule["schedule.span"].suggest(trial, "schedule.span")
            schedule = Schedule.ramp_in(term, start, min(1.0, start + span))
        return LossSpec(loss, params, schedule)

    def params_for(self, spec: LossSpec) -> dict[str, Any]:
        """Optuna parameters that make ``suggest`` reproduce ``spec`` (to enqueue the prior's picks)."""
        if spec.name not in self.losses:
            raise AutolossError(f"{spec.name} is not in the search space ({', '.join(self.losses)})")
        params: dict[str, Any] = {"loss": spec.name}
        own = _param_defs(spec.name)
        for p in self.params:
            if p in own:
                params[p] = spec.params.get(p, own[p].default)
        term = self.scheduled_term(spec.name)
        if term is not None:
            start, full = _ramp_of(spec.schedule, term)
            params["schedule.start"], params["schedule.span"] = start, full - start
        return params


def get_def(name: str):
    from autoloss.losses import get_loss_def

    return get_loss_def(name)


def _param_defs(name: str) -> dict[str, Any]:
    return {p.name: p for p in get_def(name).params}


def _ramp_of(schedule: Schedule | None, term: str) -> tuple[float, float]:
    """(start, full) of a ramp_in schedule for ``term``; the prior's default when there is none."""
    if schedule is None or term not in schedule.knots:
        return 0.2, 0.5
    knots = schedule.knots[term]
    start = max((a for a, w in knots if w == 0.0), default=0.0)
    full = min((a for a, w in knots if w >= 1.0), default=1.0)
    return start, full
