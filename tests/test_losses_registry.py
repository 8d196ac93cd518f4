"""The registry and the compound module: names, parameters declared once with survey defaults, spec validation,
weighted sums of terms, schedules."""
from __future__ import annotations

import inspect
import json

import pytest
import torch

from autoloss.errors import AutolossError
from autoloss.losses import (LOSS_NAMES, TERMS, AutolossLoss, build_loss, format_loss_table, get_loss_def,
                             list_losses, validate_spec)
from autoloss.spec import LossSpec, Schedule

SINGLE = ["CE", "WCE", "TopK", "Focal", "DPCE", "SS", "Dice", "IoU", "Lovasz", "Tversky", "GDice", "FocalTversky",
          "Asym", "pGDice", "BD", "HD", "ELL"]
COMPOUND = {"DiceCE": ("dice", "ce"), "DiceTopK": ("dice", "topk"), "DiceFocal": ("dice", "focal"),
            "DiceHD": ("dice", "hd"), "DiceBD": ("dice", "bd"), "DiceCE+clDice": ("dice", "ce", "cldice"),
            "DiceCE+SkelRecall": ("dice", "ce", "skelrecall"), "DiceCE+Blob": ("dice", "ce", "blob")}


def batch(seed=0, shape=(2, 3, 9, 10)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g).float()


def test_names_and_terms():
    assert list(LOSS_NAMES) == SINGLE + list(COMPOUND)
    assert [d.name for d in list_losses()] == list(LOSS_NAMES)
    for name, terms in COMPOUND.items():
        assert get_loss_def(name).terms == terms
    assert set(TERMS) == {"ce", "wce", "topk", "focal", "dpce", "ss", "dice", "iou", "lovasz", "tversky", "gdice",
                          "focaltversky", "asym", "pgdice", "bd", "hd", "ell", "cldice", "skelrecall", "blob"}
    for name in SINGLE:
        assert get_loss_def(name).terms[0] == name.lower()
    # One generic class for every loss, compounds included.
    assert all(type(build_loss(LossSpec(n))) is AutolossLoss for n in LOSS_NAMES)


def test_survey_defaults():
    defaults = {}
    for d in list_losses():
        defaults.update(d.defaults())
    expected = {"topk.k": 10.0, "focal.gamma": 2.0, "tversky.alpha": 0.3, "tversky.beta": 0.7,
                "focaltversky.gamma": 0.75, "asym.beta": 1.5, "pgdice.k": 2.5, "ss.r": 0.05, "dice.smooth": 1e-5,
                "dice.do_bg": False, "dice.batch_dice": None, "hd.alpha": 2.0, "ell.w_dice": 0.8, "ell.w_ce": 0.2,
                "ell.gamma": 0.3, "dice.weight": 1.0, "focal.weight": 1.0, "hd.weight": 1.0}
    for key, value in expected.items():
        assert defaults[key] == value, key
    topk = get_loss_def("TopK").param("topk.k")
    assert (topk.low, topk.high, topk.log, topk.type) == (1.0, 100.0, True, float)
    assert get_loss_def("Focal").params[0].help


def test_param_defaults_match_the_classes():
    # Declared once in the registry; the term classes' own keyword defaults must agree with it.
    for t in TERMS.values():
        sig = inspect.signature(t.cls.__init__)
        for p in t.params:
            if p.name == "batch_dice":
                continue  # None in the registry means "the nnU-Net configuration's value"
            declared = sig.parameters.get(p.name)
            default = declared.default if declared is not None else None
            if declared is None:  # inherited from DiceStyleLoss / _DistanceTerm
                for base in t.cls.__mro__[1:]:
                    bp = inspect.signature(base.__init__).parameters.get(p.name)
                    if bp is not None:
                        default = bp.default
                        break
            assert default == p.default, (t.name, p.name, default, p.default)


def test_weights_only_for_compounds_and_json():
    assert not any(p.name.endswith(".weight") for p in get_loss_def("Focal").params)
    assert {p.name for p in get_loss_def("DiceFocal").params} >= {"dice.weight", "focal.weight", "focal.gamma"}
    assert get_loss_def("Lovasz").defaults()["ce.weight"] == 0.0
    js = json.loads(json.dumps([d.to_dict() for d in list_losses()]))
    assert len(js) == 25 and js[0]["name"] == "CE"


def test_table_lists_every_loss_and_parameter():
    from rich.console import Console

    console = Console(record=True, width=250)
    console.print(format_loss_table())
    table = console.export_text()
    for d in list_losses():
        assert d.name in table
        for p in d.params:
            assert p.name in table
    assert "1 .. 100 (log)" in table and "None | False | True" in table


@pytest.mark.parametrize("spec,fragment", [
    (LossSpec("DiceXE"), "unknown loss 'DiceXE'; registered losses: CE, WCE"),
    (LossSpec("DiceFocal", {"focal.gama": 2}), "has no parameter 'focal.gama'; its parameters: dice.smooth"),
    (LossSpec("Focal", {"topk.k": 10}), "Focal has no parameter 'topk.k'; its parameters: focal.gamma"),
    (LossSpec("CE", {"ce.weight": 1}), "CE has no parameter 'ce.weight'; its parameters: none"),
    (LossSpec("Focal", {"focal.gamma": "2"}), "focal.gamma must be a number, got str '2'"),
    (LossSpec("Focal", {"focal.gamma": True}), "must be a number, got bool"),
    (LossSpec("Focal", {"focal.gamma": float("nan")}), "must be finite"),
    (LossSpec("TopK", {"topk.k": 0.5}), "TopK: parameter topk.k=0.5 is out of range 1 .. 100 (log)"),
    (LossSpec("Tversky", {"tversky.alpha": 1.5}), "out of range 0 .. 1"),
    (LossSpec("DiceCE", {"dice.weight": -1.0}), "out of range 0 .. inf"),
    (LossSpec("Dice", {"dice.do_bg": 1}), "must be one of False | True, got 1"),
    (LossSpec("Dice", {"dice.batch_dice": "yes"}), "must be one of None | False | True"),
    (LossSpec("DiceBD", {}, Schedule({"hd": [(0, 0), (1, 1)]})), "DiceBD: schedule names term(s) 'hd'; its terms "
                                                                  "are dice, bd"),
])
def test_validate_spec_errors(spec, fragment):
    with pytest.raises(AutolossError) as exc:
        validate_spec(spec)
    message = str(exc.value)
    assert fragment in message and "\n" not in message
    with pytest.raises(AutolossError):
        build_loss(spec)


def test_validate_spec_accepts_and_returns_unchanged():
    spec = LossSpec("DiceTopK", {"topk.k": 10, "dice.batch_dice": None, "topk.weight": 3e38},
                    Schedule.ramp_in("topk", 0.1, 0.2))
    assert validate_spec(spec) is spec
    assert validate_spec(LossSpec("Dice", {"dice.smooth": 0})) .params == {"dice.smooth": 0}
    with pytest.raises(AutolossError, match="expected a LossSpec"):
        validate_spec({"name": "Dice"})


def test_parameters_reach_the_terms():
    loss = build_loss(LossSpec("DiceFocal", {"focal.gamma": 3.5, "dice.smooth": 0.5, "dice.do_bg": True}),
                      batch_dice=False)
    assert loss.terms["focal"].gamma == 3.5
    assert (loss.terms["dice"].smooth, loss.terms["dice"].do_bg, loss.terms["dice"].batch_dice) == (0.5, True, False)
    assert build_loss(LossSpec("Dice", {"dice.batch_dice": False}), batch_dice=True).terms["dice"].batch_dice is False
    assert build_loss(LossSpec("Dice")).terms["dice"].batch_dice is True


def test_compound_is_weighted_sum_of_its_terms():
    logits, target = batch(1)
    for name, (a, b, *_) in COMPOUND.items():
        if _:
            continue  # three-term compounds: tests/test_losses_topology.py
        spec = LossSpec(name, {f"{a}.weight": 0.7, f"{b}.weight": 2.5})
        loss = build_loss(spec)
        single_a = build_loss(LossSpec(a.capitalize() if a != "topk" else "TopK"))
        parts = loss.term_values(logits, target)
        assert loss.weights == {a: 0.7, b: 2.5}
        expected = 0.7 * parts[a] + 2.5 * parts[b]
        assert abs(float(loss(logits, target)) - expected) < 1e-5
        assert abs(parts[a] - float(single_a(logits, target))) < 1e-6


def test_zero_weight_terms_are_skipped_but_backward_works():
    logits, target = batch(2)
    x = logits.clone().requires_grad_(True)
    loss = build_loss(LossSpec("DiceCE", {"dice.weight": 0.0, "ce.weight": 0.0}))
    value = loss(x, target)
    value.backward()
    assert float(value) == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_kervadec_ramp_schedule():
    # Region weight 1 -> 0.01 in 99 epochs (Kervadec et al.: minus 0.01 per epoch), boundary term untouched.
    spec = LossSpec("DiceBD", {"bd.weight": 2.0}, Schedule({"dice": [(0, 1.0), (99, 0.01)]}, unit="epoch"))
    loss = build_loss(spec)
    assert loss.weights == {"dice": 1.0, "bd": 2.0}
    assert loss.set_epoch(50, 1000) == {"dice": pytest.approx(0.5)}
    assert loss.weights["dice"] == pytest.approx(0.5) and loss.weights["bd"] == 2.0
    for epoch, w in [(0, 1.0), (1, 0.99), (99, 0.01), (150, 0.01)]:
        loss.set_epoch(epoch, 1000)
        assert loss.weights["dice"] == pytest.approx(w)
    logits, target = batch(3)
    loss.set_epoch(99, 1000)
    parts = loss.term_values(logits, target)
    assert float(loss(logits, target)) == pytest.approx(0.01 * parts["dice"] + 2.0 * parts["bd"], abs=1e-6)


def test_switch_and_ramp_in_are_pure_functions_of_the_epoch():
    # The survey's Lovasz recipe: CE for the first half, then Lovasz.
    spec = LossSpec("Lovasz", {"ce.weight": 1.0},
                    Schedule({"ce": [(0.5, 1.0), (0.5, 0.0)], "lovasz": [(0.5, 0.0), (0.5, 1.0)]}))
    loss = build_loss(spec)
    seen = {e: dict(loss.set_epoch(e, 10)) for e in (6, 0, 4, 5, 9, 0)}
    assert seen[0] == {"ce": 1.0, "lovasz": 0.0} and seen[4] == seen[0]
    assert seen[5] == {"ce": 0.0, "lovasz": 1.0} and seen[9] == seen[5] == seen[6]
    logits, target = batch(4)
    loss.set_epoch(0, 10)
    assert float(loss(logits, target)) == pytest.approx(loss.term_values(logits, target)["ce"], abs=1e-6)
    # Dice first, boundary term ramped in (the prior's recipe); the same weights on a fresh loss (resume).
    ramp = LossSpec("DiceHD", {"hd.weight": 0.5}, Schedule.ramp_in("hd", 0.2, 0.5))
    a, b = build_loss(ramp), build_loss(ramp)
    assert a.weights["hd"] == 0.0
    for epoch, factor in [(0, 0.0), (2, 0.0), (3, 1 / 3), (5, 1.0), (9, 1.0)]:
        assert a.set_epoch(epoch, 10) == {"hd": pytest.approx(factor)}
        assert a.weights["hd"] == pytest.approx(0.5 * factor)
    b.set_epoch(3, 10)
    assert a.set_epoch(3, 10) == b.set_epoch(3, 10) and a.weights == b.weights
    assert build_loss(LossSpec("Dice")).set_epoch(5, 10) == {}


def test_spec_attribute_and_repr():
    spec = LossSpec("DiceFocal", {"focal.gamma": 1.0})
    loss = build_loss(spec)
    assert loss.spec is spec and "focal=1" in repr(loss)


def test_wrong_target_shapes_raise():
    logits, target = batch(5)
    with pytest.raises(ValueError, match="region targets need region_based=True"):
        build_loss(LossSpec("Dice"))(logits, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="region target has 2 channels"):
        build_loss(LossSpec("Dice"), region_based=True)(logits, torch.zeros(2, 2, 9, 10))
    with pytest.raises(ValueError, match="does not match"):
        build_loss(LossSpec("Dice"))(logits, target[..., :5])


def _ddp_worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        logits, target = batch(7, shape=(4, 3, 8, 9))
        part = slice(2 * rank, 2 * rank + 2)
        values = {}
        for name in ("DiceCE", "SS", "GDice", "ELL"):
            x = logits[part].clone().requires_grad_(True)
            loss = build_loss(LossSpec(name), ddp=True, batch_dice=True)
            value = loss(x, target[part])
            value.backward()  # the gathered sums back-propagate through all ranks
            values[name] = (float(value), loss.term_values(logits[part], target[part]))
        torch.save(values, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ddp_batch_dice_sums_over_ranks(tmp_path):
    # Two gloo ranks holding half a batch each: the batch-Dice sums are gathered, so the Dice term on every
    # rank equals single-process batch Dice on the whole batch (as nnU-Net's ddp=True does).
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    logits, target = batch(7, shape=(4, 3, 8, 9))
    full = build_loss(LossSpec("DiceCE")).term_values(logits, target)
    for r in range(2):
        assert results[r]["DiceCE"][1]["dice"] == pytest.approx(full["dice"], abs=1e-6)
    assert (results[0]["DiceCE"][0] + results[1]["DiceCE"][0]) / 2 == pytest.approx(
        float(build_loss(LossSpec("DiceCE"))(logits, target)), abs=1e-5)
    for name in ("SS", "GDice"):
        whole = float(build_loss(LossSpec(name))(logits, target))
        assert results[0][name][0] == pytest.approx(whole, abs=1e-6) == results[1][name][0]
