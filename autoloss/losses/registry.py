"""The loss registry: every loss name autoloss knows, its terms and every parameter, declared once.

A *term* is one loss module (``dice``, ``focal``, ...); a registry *loss* is one or more terms summed with weights
(``DiceFocal`` = ``dice + focal``). Parameters are namespaced by term (``focal.gamma``); multi-term losses also
have a ``<term>.weight`` per term. Each parameter has a type, a default (the Loss Odyssey survey's), a valid range
(with a log-scale hint for the search) and a one-line help. The prior, the search space, the trainer and the
exporter all read this module; nothing else holds an idea of what a loss is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from autoloss.errors import AutolossError
from autoloss.losses.base import DiceStyleLoss, SegLoss
from autoloss.losses.boundary import BoundaryLoss, HausdorffDTLoss
from autoloss.losses.compound import AutolossLoss, ExpLogLoss
from autoloss.losses.distribution import (CrossEntropyLoss, DistancePenalizedCELoss, FocalLoss, TopKLoss,
                                          WeightedCrossEntropyLoss)
from autoloss.losses.instance import BlobLoss
from autoloss.losses.lovasz import LovaszSoftmaxLoss
from autoloss.losses.region import (AsymmetricLoss, DiceLoss, FocalTverskyLoss, GeneralizedDiceLoss, IoULoss,
                                    PenaltyGDiceLoss, SensitivitySpecificityLoss, TverskyLoss)
from autoloss.losses.skeleton import ClDiceLoss, SkeletonRecallLoss
from autoloss.spec import LossSpec


@dataclass(frozen=True)
class ParamDef:
    """One parameter: ``name`` (namespaced in a LossDef, bare in a TermDef), Python ``type``, ``default``,
    inclusive valid range ``low``..``high`` (None = unbounded), ``log`` (search on a log scale), ``choices``."""

    name: str
    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    help: str = ""

    def renamed(self, name: str) -> "ParamDef":
        return ParamDef(name, self.type, self.default, self.low, self.high, self.log, self.choices, self.help)

    def range_text(self) -> str:
        if self.choices is not None:
            return " | ".join(str(c) for c in self.choices)
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{lo} .. {hi}" + (" (log)" if self.log else "")

    def check(self, value: Any, loss: str) -> None:
        """Raise AutolossError (one line) unless ``value`` is a valid value of this parameter."""
        where = f"{loss}: parameter {self.name}"
        if self.choices is not None and self.type is bool:
            if (value is not None and not isinstance(value, bool)) or value not in self.choices:
                raise AutolossError(f"{where} must be one of {self.range_text()}, got {value!r}")
            return
        if self.type in (float, int):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    self.type is int and not float(value).is_integer()):
                raise AutolossError(f"{where} must be {'an integer' if self.type is int else 'a number'}, "
                                    f"got {type(value).__name__} {value!r}")
            if not math.isfinite(float(value)):
                raise AutolossError(f"{where} must be finite, got {value!r}")
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise AutolossError(f"{where}={value!r} is out of range {self.range_text()}")
            return
        if not isinstance(value, self.type):  # pragma: no cover - no other types are declared
            raise AutolossError(f"{where} must be {self.type.__name__}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.__name__, "default": self.default, "low": self.low,
                "high": self.high, "log": self.log, "choices": list(self.choices) if self.choices else None,
                "help": self.help}


@dataclass(frozen=True)
class TermDef:
    """One term: the module class, its own parameters (bare names = constructor arguments), what it is."""

    name: str
    cls: type[SegLoss]
    params: tuple[ParamDef, ...]
    family: str
    description: str
    reference: str
    # A per-sample target made from the label in the data loader (autoloss.losses.targets): such terms need a
    # softmax label map, so they refuse region-based and ignore-label training.
    extra_target: str | None = None

    @property
    def uses_distance_maps(self) -> bool:
        return self.name in ("bd", "hd", "dpce")

    @property
    def supports_regions_and_ignore(self) -> bool:
        return self.extra_target is None


@dataclass(frozen=True)
class LossDef:
    """A registry loss: name, terms, namespaced parameters (term params, then weights), description, reference."""

    name: str
    terms: tuple[str, ...]
    params: tuple[ParamDef, ...]
    family: str
    description: str
    reference: str
    weights: dict[str, float] = field(default_factory=dict)  # base weights (before the weight parameters)

    def param(self, name: str) -> ParamDef:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    @property
    def uses_distance_maps(self) -> bool:
        return any(TERMS[t].uses_distance_maps for t in self.terms)

    @property
    def extra_targets(self) -> tuple[str, ...]:
        """Loader-made targets this loss needs, in the order the trainer appends them to the label."""
        return tuple(dict.fromkeys(TERMS[t].extra_target for t in self.terms if TERMS[t].extra_target))

    @property
    def supports_regions_and_ignore(self) -> bool:
        return all(TERMS[t].supports_regions_and_ignore for t in self.terms)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "terms": list(self.terms), "family": self.family,
                "description": self.description, "reference": self.reference,
                "params": [p.to_dict() for p in self.params]}


# ---- terms -----------------------------------------------------------------------------------------------------
def _dice_params(do_bg: bool = False) -> tuple[ParamDef, ...]:
    return (
        ParamDef("smooth", float, 1e-5, 0.0, 1.0, help="added to numerator and denominator (nnU-Net 1e-5)"),
        ParamDef("do_bg", bool, do_bg, choices=(False, True), help="include the softmax background channel"),
        ParamDef("batch_dice", bool, None, choices=(None, False, True),
                 help="sum over the batch before the ratio; None = nnU-Net's plans value"),
    )


def _per_class(do_bg: bool) -> tuple[ParamDef, ...]:
    return (ParamDef("do_bg", bool, do_bg, choices=(False, True), help="include the softmax background channel"),)


_TERMS: tuple[TermDef, ...] = (
    TermDef("ce", CrossEntropyLoss, (), "distribution", "cross-entropy (BCE for regions)", "nnU-Net"),
    TermDef("wce", WeightedCrossEntropyLoss,
            (ParamDef("power", float, 0.5, 0.0, 2.0, help="class weight (N / N_c)^power; 1 = inverse frequency"),),
            "distribution", "class-frequency weighted cross-entropy", "Ronneberger et al., MICCAI 2015"),
    TermDef("topk", TopKLoss,
            (ParamDef("k", float, 10.0, 1.0, 100.0, log=True, help="percent of hardest voxels kept (survey 10)"),),
            "distribution", "cross-entropy of the k % hardest voxels", "Wu et al., arXiv:1605.06885, 2016"),
    TermDef("focal", FocalLoss,
            (ParamDef("gamma", float, 2.0, 0.0, 5.0, help="focusing exponent; 0 = cross-entropy"),),
            "distribution", "focal loss: CE down-weighted on easy voxels", "Lin et al., ICCV 2017"),
    TermDef("dpce", DistancePenalizedCELoss, (), "distribution",
            "CE weighted by 1 + inverted distance to the GT boundary", "Caliva et al., MIDL 2019"),
    TermDef("ss", SensitivitySpecificityLoss,
            (ParamDef("r", float, 0.05, 0.0, 1.0, help="weight of the sensitivity term (paper 0.05)"),)
            + _dice_params(), "region", "sensitivity-specificity (squared error in and out of the object)",
            "Brosch et al., MICCAI 2015"),
    TermDef("dice", DiceLoss, _dice_params(), "region", "soft Dice (nnU-Net's)", "Milletari et al., 3DV 2016"),
    TermDef("iou", IoULoss, _dice_params(), "region", "soft Jaccard / IoU", "Rahman & Wang, ISVC 2016"),
    TermDef("lovasz", LovaszSoftmaxLoss,
            (ParamDef("per_image", bool, False, choices=(False, True), help="average per image, not over the batch"),)
            + _per_class(True), "region", "Lovasz-Softmax surrogate of IoU on probabilities",
            "Berman et al., CVPR 2018"),
    TermDef("tversky", TverskyLoss,
            (ParamDef("alpha", float, 0.3, 0.0, 1.0, help="weight of false positives"),
             ParamDef("beta", float, 0.7, 0.0, 1.0, help="weight of false negatives")) + _dice_params(),
            "region", "Tversky index (weighted FP / FN)", "Salehi et al., MLMI 2017"),
    TermDef("gdice", GeneralizedDiceLoss, _dice_params(do_bg=True), "region",
            "generalized Dice with 1/volume^2 class weights", "Sudre et al., DLMIA 2017"),
    TermDef("focaltversky", FocalTverskyLoss,
            (ParamDef("alpha", float, 0.3, 0.0, 1.0, help="weight of false positives"),
             ParamDef("beta", float, 0.7, 0.0, 1.0, help="weight of false negatives"),
             ParamDef("gamma", float, 0.75, 0.1, 3.0, log=True, help="exponent of (1 - TI); paper's 1/gamma")
             ) + _dice_params(), "region", "focal Tversky: (1 - TI)^gamma per class", "Abraham & Khan, ISBI 2019"),
    TermDef("asym", AsymmetricLoss,
            (ParamDef("beta", float, 1.5, 0.1, 5.0, help="F-beta's beta; > 1 favours recall"),) + _dice_params(),
            "region", "asymmetric similarity (soft F-beta)", "Hashemi et al., IEEE Access 2018"),
    TermDef("pgdice", PenaltyGDiceLoss,
            (ParamDef("k", float, 2.5, 0.0, 10.0, help="penalty strength; 0 = generalized Dice"),)
            + _dice_params(do_bg=True), "region", "penalty generalized Dice: L_GD / (1 + k (1 - L_GD))",
            "Yang et al., MIDL 2019"),
    TermDef("bd", BoundaryLoss, _per_class(False), "boundary",
            "boundary loss: signed GT distance map times probability", "Kervadec et al., MIDL 2019"),
    TermDef("hd", HausdorffDTLoss,
            (ParamDef("alpha", float, 2.0, 0.5, 4.0, help="exponent of the distances"),) + _per_class(False),
            "boundary", "distance-transform Hausdorff loss", "Karimi & Salcudean, IEEE TMI 2019"),
    TermDef("ell", ExpLogLoss,
            (ParamDef("w_dice", float, 0.8, 0.0, 10.0, help="weight of the exponential log Dice part"),
             ParamDef("w_ce", float, 0.2, 0.0, 10.0, help="weight of the exponential weighted-CE part"),
             ParamDef("gamma", float, 0.3, 0.05, 3.0, log=True, help="exponent of -ln Dice and -ln p")
             ) + _dice_params(), "compound", "exponential logarithmic loss (Dice and weighted CE)",
            "Wong et al., MICCAI 2018"),
    TermDef("cldice", ClDiceLoss,
            (ParamDef("iters", int, 3, 1, 10, help="soft-skeleton iterations: at least the largest radius in voxels"),
             ParamDef("smooth", float, 1.0, 0.0, 10.0, help="added to the clDice ratios (MONAI 1)"),
             ) + _dice_params()[1:], "topology", "soft clDice: skeleton precision/sensitivity by min/max pooling",
            "Shit et al., CVPR 2021"),
    TermDef("skelrecall", SkeletonRecallLoss, _dice_params(), "topology",
            "recall of the tubed label skeleton (made in the data loader)", "Kirchhoff et al., ECCV 2024",
            extra_target="skeleton"),
    TermDef("blob", BlobLoss,
            (ParamDef("smooth", float, 1e-5, 0.0, 1.0, help="added to each blob's Dice ratio"),),
            "instance", "per-lesion Dice + CE, other lesions masked (components made in the data loader)",
            "Kofler et al., IPMI 2023", extra_target="components"),
)
TERMS: dict[str, TermDef] = {t.name: t for t in _TERMS}


def _loss(name: str, terms: Sequence[str], description: str, *, family: str | None = None,
          weights: dict[str, float] | None = None) -> LossDef:
    weights = {t: (weights or {}).get(t, 1.0) for t in terms}
    params: list[ParamDef] = []
    for t in terms:
        params += [p.renamed(f"{t}.{p.name}") for p in TERMS[t].params]
    if len(terms) > 1:
        params += [ParamDef(f"{t}.weight", float, weights[t], 0.0, None,
                            help=f"weight of the {t} term (times its schedule factor)") for t in terms]
    reference = "; ".join(TERMS[t].reference for t in terms)
    return LossDef(name, tuple(terms), tuple(params), family or TERMS[terms[0]].family, description, reference,
                   weights)


_LOSSES: tuple[LossDef, ...] = (
    _loss("CE", ["ce"], "cross-entropy"),
    _loss("WCE", ["wce"], "class-frequency weighted cross-entropy"),
    _loss("TopK", ["topk"], "cross-entropy of the k % hardest voxels"),
    _loss("Focal", ["focal"], "focal loss"),
    _loss("DPCE", ["dpce"], "distance-map penalised cross-entropy"),
    _loss("SS", ["ss"], "sensitivity-specificity loss"),
    _loss("Dice", ["dice"], "soft Dice"),
    _loss("IoU", ["iou"], "soft IoU (Jaccard)"),
    _loss("Lovasz", ["lovasz", "ce"], "Lovasz-Softmax; the ce term (weight 0 by default) carries the survey's "
          "CE-first recipe as a schedule", weights={"ce": 0.0}),
    _loss("Tversky", ["tversky"], "Tversky loss"),
    _loss("GDice", ["gdice"], "generalized Dice"),
    _loss("FocalTversky", ["focaltversky"], "focal Tversky loss"),
    _loss("Asym", ["asym"], "asymmetric similarity loss"),
    _loss("pGDice", ["pgdice"], "penalty generalized Dice"),
    _loss("BD", ["bd"], "boundary loss alone (needs a good start: prefer DiceBD with a schedule)"),
    _loss("HD", ["hd"], "Hausdorff distance-transform loss alone (prefer DiceHD with a schedule)"),
    _loss("ELL", ["ell"], "exponential logarithmic loss"),
    _loss("DiceCE", ["dice", "ce"], "Dice + cross-entropy (nnU-Net's default)", family="compound"),
    _loss("DiceTopK", ["dice", "topk"], "Dice + TopK cross-entropy", family="compound"),
    _loss("DiceFocal", ["dice", "focal"], "Dice + focal loss", family="compound"),
    _loss("DiceHD", ["dice", "hd"], "Dice + Hausdorff DT loss (ramp hd in with a schedule)", family="compound"),
    _loss("DiceBD", ["dice", "bd"], "Dice + boundary loss (ramp bd in with a schedule)", family="compound"),
    _loss("DiceCE+clDice", ["dice", "ce", "cldice"], "Dice + CE + soft clDice, for thin tubular structures",
          family="topology"),
    _loss("DiceCE+SkelRecall", ["dice", "ce", "skelrecall"], "Dice + CE + Skeleton Recall, for thin tubular "
          "structures (the skeleton is made in the data loader)", family="topology"),
    _loss("DiceCE+Blob", ["dice", "ce", "blob"], "Dice + CE + 0.5 blob loss, for many small lesions (the paper's "
          "2:1 global:blob weighting)", family="instance", weights={"blob": 0.5}),
)
REGISTRY: dict[str, LossDef] = {d.name: d for d in _LOSSES}
LOSS_NAMES: tuple[str, ...] = tuple(REGISTRY)
# nnU-Net's default loss: every search trains it at the same fidelity and every verdict is measured against it.
BASELINE_LOSS = "DiceCE"


def baseline_spec() -> LossSpec:
    """The Dice+CE baseline exactly as nnU-Net trains it (registry defaults, no schedule)."""
    return LossSpec(BASELINE_LOSS)


def list_losses() -> list[LossDef]:
    """Every registered loss, in registry order (single losses, then compounds)."""
    return list(_LOSSES)


def get_loss_def(name: str) -> LossDef:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise AutolossError(f"unknown loss {name!r}; registered losses: {', '.join(LOSS_NAMES)}") from None


def validate_spec(spec: LossSpec) -> LossSpec:
    """Check ``spec`` against the registry; return it unchanged or raise a one-line AutolossError."""
    if not isinstance(spec, LossSpec):
        raise AutolossError(f"expected a LossSpec, got {type(spec).__name__}")
    d = get_loss_def(spec.name)
    names = {p.name: p for p in d.params}
    for key, value in spec.params.items():
        if key not in names:
            valid = ", ".join(names) if names else "none"
            raise AutolossError(f"{spec.name} has no parameter {key!r}; its parameters: {valid}")
        names[key].check(value, spec.name)
    if spec.schedule is not None:
        unknown = [t for t in spec.schedule.knots if t not in d.terms]
        if unknown:
            raise AutolossError(f"{spec.name}: schedule names term(s) {', '.join(map(repr, unknown))}; "
                                f"its terms are {', '.join(d.terms)}")
    return spec


def build_loss(spec: LossSpec, *, region_based: bool = False, ignore_label: int | None = None,
               batch_dice: bool = True, ddp: bool = False, spacing: Sequence[float] | None = None,
               edt_backend: str = "auto") -> AutolossLoss:
    """Build the loss module of ``spec`` for an nnU-Net configuration.

    ``region_based``/``ignore_label``: nnU-Net's label manager (sigmoid regions; ignore label, whose mask is the
    last target channel in region mode). ``batch_dice``: the configuration's value, used by every term whose
    ``batch_dice`` parameter is None. ``ddp``: gather batch-Dice sums over ranks. ``spacing``: voxel spacing
    of the patches for the distance maps (voxel units if None). ``edt_backend``: see
    :mod:`autoloss.losses.distance`.
    """
    validate_spec(spec)
    d = get_loss_def(spec.name)
    if (region_based or ignore_label is not None) and not d.supports_regions_and_ignore:
        what = "region-based training (dataset.json regions)" if region_based else f"an ignore label ({ignore_label})"
        raise AutolossError(f"{spec.name} does not support {what}: its {'/'.join(d.extra_targets)} target is made "
                            "from a plain label map; use DiceCE+clDice or another loss")
    values = {**d.defaults(), **spec.params}
    terms: dict[str, SegLoss] = {}
    for t in d.terms:
        tdef = TERMS[t]
        kw = {p.name: values[f"{t}.{p.name}"] for p in tdef.params}
        if "batch_dice" in kw and kw["batch_dice"] is None:
            kw["batch_dice"] = batch_dice
        if issubclass(tdef.cls, DiceStyleLoss):
            kw["ddp"] = ddp
        if tdef.uses_distance_maps:
            kw.update(spacing=spacing, edt_backend=edt_backend)
        terms[t] = tdef.cls(region_based=region_based, ignore_label=ignore_label, **kw)
    weights = {t: float(values.get(f"{t}.weight", d.weights[t])) for t in d.terms}
    return AutolossLoss(terms, weights, spec=spec, region_based=region_based, ignore_label=ignore_label,
                        extra_targets=d.extra_targets)


def format_loss_table():
    """Table of every loss with its terms, parameters, defaults, valid ranges and help (``autoloss losses``).

    A ``rich.table.Table`` (rich wraps it to the terminal); ``str`` of it is not meaningful, render it with a
    rich Console.
    """
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Registered losses (parameters are <term>.<name>; absent ones take the default)",
                  show_lines=False)
    for col in ("loss", "parameter", "default", "range"):
        table.add_column(col, no_wrap=True)
    table.add_column("meaning", overflow="fold", ratio=1)
    for d in _LOSSES:
        table.add_row(f"[bold]{escape(d.name)}[/bold]", escape(" + ".join(d.terms)), "", "",
                      escape(f"{d.description} ({d.reference})"), end_section=not d.params)
        for i, p in enumerate(d.params):
            table.add_row("", escape(p.name), escape(str(p.default)), escape(p.range_text()), escape(p.help),
                          end_section=i == len(d.params) - 1)
    return table
