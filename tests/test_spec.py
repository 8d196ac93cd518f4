import json

import pytest

from autoloss.errors import AutolossError
from autoloss.spec import LossSpec, Schedule


def test_lossspec_json_roundtrip_with_schedule():
    spec = LossSpec("DiceHD", {"hd.weight": 0.5, "dice.smooth": 1e-5}, Schedule.ramp_in("hd", 0.2, 0.5))
    back = LossSpec.from_json(spec.to_json())
    assert back == spec
    assert back.key() == spec.key()
    assert json.loads(spec.to_json())["schedule"]["knots"]["hd"] == [[0.0, 0.0], [0.2, 0.0], [0.5, 1.0]]


def test_kervadec_ramp_in_epochs():
    # Kervadec: region weight 1 at epoch 0, minus 0.01 per epoch, floor 0.01 at epoch 99
    s = Schedule({"dice": [(0, 1.0), (99, 0.01)]}, unit="epoch")
    assert s.weights_at(0, 1000)["dice"] == pytest.approx(1.0)
    assert s.weights_at(10, 1000)["dice"] == pytest.approx(0.9)
    assert s.weights_at(99, 1000)["dice"] == pytest.approx(0.01)
    assert s.weights_at(500, 1000)["dice"] == pytest.approx(0.01)


def test_switch_takes_later_knot_from_its_position():
    s = Schedule({"ce": [(0.5, 1.0), (0.5, 0.0)], "lovasz": [(0.5, 0.0), (0.5, 1.0)]})
    assert s.weights_at(4, 10) == {"ce": 1.0, "lovasz": 0.0}
    assert s.weights_at(5, 10) == {"ce": 0.0, "lovasz": 1.0}


def test_ramp_in_fraction():
    s = Schedule.ramp_in("bd", 0.2, 0.6)
    assert s.weights_at(1, 10)["bd"] == 0.0
    assert s.weights_at(4, 10)["bd"] == pytest.approx(0.5)
    assert s.weights_at(9, 10)["bd"] == 1.0


@pytest.mark.parametrize("bad", [
    {"knots": {"x": [(0.5, 1.0), (0.1, 0.0)]}},
    {"knots": {"x": [(0.0, -1.0)]}},
    {"knots": {"x": []}},
    {"knots": {"x": [(0, 1)]}, "unit": "minutes"},
])
def test_bad_schedules_raise_user_errors(bad):
    with pytest.raises(AutolossError):
        Schedule.from_dict(bad)


def test_load_reports_file(tmp_path):
    f = tmp_path / "spec.json"
    f.write_text("{not json")
    with pytest.raises(AutolossError, match="spec.json"):
        LossSpec.load(f)
