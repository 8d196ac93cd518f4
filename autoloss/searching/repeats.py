"""Screening trains each loss once.

TPE proposes a loss already screened whenever the space has fixed points: Dice+CE has no parameter, a search
space restricted to a grid has nothing but fixed points. Training it again spends a budget slot on seed noise
(the sweep replay on Montgomery, before this rule: in 27 of 60 seeds a planted +2-point winner was never screened
because the budget went to repeats). So a proposal whose LossSpec was already screened on the same folds is told
the earlier trial's outcome (the sampler learns what a training would have told it), marked ``phase = "repeat"``,
not trained and not counted toward the budget, and the next proposal is a loss of the space never screened
(its parameters sampled as usual): TPE alone keeps returning to the best losses it knows (repeats tell it their
values again), so on a grid it would exhaust ``MAX_IN_A_ROW`` before trying the rest. That many repeats in a row
end the screening: every loss of the space was screened, and asking on would loop forever.
"""
from __future__ import annotations

import random

import optuna

from autoloss.searching import records as rec

MAX_IN_A_ROW = 20


class Repeats:
    """Which loss keys were screened (by which trial), and how many proposals in a row were repeats."""

    def __init__(self, screened: dict[str, tuple[int, str]] | None = None):
        self.screened = dict(screened or {})  # loss key -> (trial number, loss name)
        self.in_a_row = 0
        self.told: set[str] = set()  # keys whose repeat was said to the user

    def earlier(self, key: str) -> int | None:
        """The trial that screened ``key`` (None: a new loss, remembered as screened by the caller's trial)."""
        number = self.screened[key][0] if key in self.screened else None
        self.in_a_row = 0 if number is None else self.in_a_row + 1
        return number

    def first_repeat(self, key: str) -> bool:
        """True the first time ``key`` is repeated in this run (the caller says it once)."""
        new = key not in self.told
        self.told.add(key)
        return new

    def add(self, key: str, number: int, name: str) -> None:
        self.screened.setdefault(key, (number, name))

    def forget(self, number: int) -> None:
        """Trial ``number`` was re-queued (its worker died): its loss was not screened, it runs again as itself."""
        self.screened = {key: v for key, v in self.screened.items() if v[0] != number}

    def untried(self, losses: list[str], seed: int | None) -> str | None:
        """A loss name of ``losses`` never screened (seeded choice), None when every one was."""
        names = {name for _, name in self.screened.values()}
        left = [name for name in losses if name not in names]
        return random.Random(seed).choice(left) if left else None

    def propose_untried(self, study: optuna.Study, losses: list[str], seed: int | None, **attrs) -> str | None:
        """After a repeat: queue a loss never screened next (its other parameters sampled as usual), unless
        trials are waiting already (the prior's, the memory's); returns its name, None when every one was."""
        name = self.untried(losses, seed)
        if name and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.enqueue_trial({"loss": name}, user_attrs=attrs or None)
        return name

    @property
    def exhausted(self) -> bool:
        return self.in_a_row >= MAX_IN_A_ROW


def screened_keys(study) -> dict[str, tuple[int, str]]:
    """{loss key: (first trial number, loss name)} over a study's screening trials that finished and were not
    re-queued."""
    from autoloss.searching.study import FINISHED

    out: dict[str, tuple[int, str]] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number):
        spec = rec.spec_of(t)
        if spec is not None and rec.phase(t) == "screen" and not rec.replaced(t):
            out.setdefault(spec.key(), (t.number, spec.name))
    return out


def tell_or_hold(study: optuna.Study, trial: optuna.Trial, earlier: int, pending: dict, held: dict) -> None:
    """Tell ``trial`` (a repeat of trial ``earlier``) its outcome now, or, while ``earlier`` still trains
    (``pending``: {job number: trial}), hold it in ``held`` ({job number: [trials]}) until it ends."""
    job = next((n for n, t in pending.items() if t.number == earlier), None)
    if job is None:
        tell_repeat(study, trial, earlier)
    else:
        held.setdefault(job, []).append(trial)


def tell_repeat(study: optuna.Study, trial: optuna.Trial, earlier: int) -> None:
    original = study.get_trials(deepcopy=False)[earlier]  # Optuna numbers a study's trials 0, 1, ... in order
    trial.set_user_attr(rec.PHASE, "repeat")
    trial.set_user_attr(rec.REPEAT_OF, earlier)
    if original.state == rec.COMPLETE:
        study.tell(trial, original.value)
    elif original.state == optuna.trial.TrialState.PRUNED:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
