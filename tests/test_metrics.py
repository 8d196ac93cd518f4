import numpy as np
import pytest

from autoloss import metrics


def test_dice_and_nsd_identical_masks():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    assert metrics.dice(m, m) == 1.0
    assert metrics.nsd(m, m, (1.0, 1.0), 0.0) == 1.0


def test_nsd_shift_within_and_beyond_tolerance():
    a = np.zeros((30, 30), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 2, axis=1)
    # shifted by 2 px: every surface point is within 2 mm of the other surface at spacing 1
    assert metrics.nsd(a, b, (1.0, 1.0), 2.0) == pytest.approx(1.0)
    # at 0.5 mm tolerance only the overlapping horizontal edges stay close
    assert metrics.nsd(a, b, (1.0, 1.0), 0.5) < 0.8
    # spacing scales distances: 2 px at 2 mm per px is 4 mm
    assert metrics.nsd(a, b, (1.0, 2.0), 2.0) < 1.0


def test_empty_cases():
    e = np.zeros((5, 5), bool)
    f = e.copy()
    f[2, 2] = True
    assert np.isnan(metrics.dice(e, e)) and np.isnan(metrics.nsd(e, e, (1, 1), 1))
    assert metrics.dice(e, f) == 0.0 and metrics.nsd(e, f, (1, 1), 1) == 0.0


def test_case_metrics_regions_and_ignore():
    ref = np.array([[0, 1, 2, 3], [0, 1, 2, 2]])
    pred = np.array([[0, 1, 2, 0], [0, 1, 1, 2]])
    out = metrics.case_metrics(pred, ref, [1, (1, 2)], (1.0, 1.0), 1.0, ignore_label=3)
    assert out["1"]["dice"] == pytest.approx(2 * 2 / (3 + 2))
    assert out["(1, 2)"]["dice"] == pytest.approx(1.0)
    s = metrics.summarise({"a": out, "b": out})
    assert s["mean"]["dice"] == pytest.approx((0.8 + 1.0) / 2)
