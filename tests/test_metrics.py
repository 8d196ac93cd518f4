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


# ---- topology and lesion metrics (known answers) -----------------------------------------------------------------
def line_mask(gap: bool = False) -> np.ndarray:
    m = np.zeros((21, 40), bool)
    m[9:12, 2:38] = True
    if gap:
        m[:, 19:22] = False
    return m


def test_cldice_known_answers():
    ref = line_mask()
    assert metrics.cldice(ref, ref) == pytest.approx(1.0)
    # A prediction that covers the reference's centre line but is 3x as thick: Tsens 1, Tprec 1 -> still 1.
    thick = np.zeros_like(ref)
    thick[6:15, 2:38] = True
    assert metrics.cldice(thick, ref) == pytest.approx(1.0)
    # A gap of 3 px: Tprec stays 1, Tsens drops by the 3 missing centre-line pixels of 34.
    broken = line_mask(gap=True)
    n_skel = int(metrics._skeleton(ref).sum())
    tsens = (n_skel - 3) / n_skel
    assert metrics.cldice(broken, ref) == pytest.approx(2 * tsens / (1 + tsens))
    e = np.zeros_like(ref)
    assert np.isnan(metrics.cldice(e, e)) and metrics.cldice(e, ref) == 0.0


def test_betti0_error_counts_components():
    ref = line_mask()
    assert metrics.betti0_error(ref, ref) == 0.0
    assert metrics.betti0_error(line_mask(gap=True), ref) == 1.0  # the gap splits the line in two
    diag = np.eye(6, dtype=bool)  # 8-connected in 2D: one component
    assert metrics.betti0_error(diag, np.zeros_like(diag)) == 1.0
    vol = np.zeros((5, 5, 5), bool)
    vol[0, 0, 0] = vol[1, 1, 1] = vol[3, 3, 3] = True  # 26-connectivity: two components
    assert metrics.betti0_error(vol, np.zeros_like(vol)) == 2.0


def test_lesion_detection_known_answer():
    ref = np.zeros((30, 30), bool)
    for r, c in [(2, 2), (2, 20), (20, 2), (20, 20)]:  # four reference lesions
        ref[r:r + 4, c:c + 4] = True
    pred = np.zeros_like(ref)
    pred[3:5, 3:5] = True  # finds lesion 1
    pred[21:23, 21:23] = True  # finds lesion 4
    pred[10:12, 10:12] = True  # a false positive
    out = metrics.lesion_detection(pred, ref)
    assert out["lesion_recall"] == pytest.approx(2 / 4)
    assert out["lesion_precision"] == pytest.approx(2 / 3)
    assert out["lesion_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    e = np.zeros_like(ref)
    assert np.isnan(metrics.lesion_detection(e, e)["lesion_f1"])
    assert metrics.lesion_detection(e, ref)["lesion_f1"] == 0.0
    assert metrics.lesion_detection(e, ref)["lesion_recall"] == 0.0


def test_hd95_and_case_metrics_carry_every_metric():
    a = np.zeros((30, 30), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)
    nsd, hd95 = metrics.surface_metrics(a, b, (1.0, 1.0), 1.0)
    assert hd95 == pytest.approx(3.0) and nsd == pytest.approx(metrics.nsd(a, b, (1.0, 1.0), 1.0))
    assert metrics.surface_metrics(a, np.zeros_like(a), (1.0, 2.0), 1.0)[1] == pytest.approx(np.hypot(30, 60))
    out = metrics.case_metrics(a.astype(int), b.astype(int), [1], (1.0, 1.0), 1.0)["1"]
    assert set(out) == {"dice", "nsd", "hd95", "cldice", "betti0_error", "lesion_recall", "lesion_precision",
                        "lesion_f1"}
    s = metrics.summarise({"x": {"1": out}, "y": {"1": out}})
    assert s["mean"]["lesion_f1"] == 1.0 and s["1"]["hd95"] == pytest.approx(3.0)


def test_cldice_only_for_requested_classes_and_cropping_changes_nothing():
    ref = np.zeros((12, 30, 30), int)
    ref[5, 3:27, 10:13] = 1
    ref[2:9, 2:8, 20:26] = 2
    pred = np.roll(ref, 1, axis=2)
    full = metrics.case_metrics(pred, ref, [1, 2], (1.0, 1.0, 1.0), 1.0)
    only = metrics.case_metrics(pred, ref, [1, 2], (1.0, 1.0, 1.0), 1.0, cldice_classes=frozenset({"1"}))
    assert "cldice" in only["1"] and "cldice" not in only["2"] and only["1"]["cldice"] == full["1"]["cldice"]
    assert full["1"]["cldice"] == pytest.approx(metrics.cldice(pred == 1, ref == 1))
