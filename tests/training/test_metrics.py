"""Threshold choice: best F1, a recall floor, and a bound on items without any label flagged."""

import numpy as np

from training.metrics import choose_thresholds

LABELS = ("health", "religion")


def scores() -> tuple[np.ndarray, np.ndarray]:
    # health: 4 positives at 0.9, 0.8, 0.6, 0.4; 6 items with no label, two of them high
    y = np.zeros((10, 2), np.float32)
    y[:4, 0] = 1
    p = np.zeros((10, 2), np.float32)
    p[:4, 0] = [0.9, 0.8, 0.6, 0.4]
    p[4:, 0] = [0.7, 0.5, 0.1, 0.1, 0.1, 0.1]
    p[:, 1] = 0.05
    return y, p


def test_without_a_bound_the_threshold_is_the_best_f1() -> None:
    y, p = scores()
    # 0.4 flags the 4 positives and the two unlabelled 0.7 and 0.5: F1 0.8, the best
    assert choose_thresholds(y, p, LABELS, 0.0)["health"] == np.float32(0.4)


def test_a_false_flag_bound_raises_the_threshold_until_it_holds() -> None:
    y, p = scores()
    # at most 1 of the 6 unlabelled items flagged: 0.5 is out; 0.6 flags only the 0.7 one
    assert choose_thresholds(y, p, LABELS, 0.0, max_false_flags=1 / 6)["health"] == np.float32(0.6)
    # none flagged: above 0.7
    assert choose_thresholds(y, p, LABELS, 0.0, max_false_flags=0.0)["health"] == np.float32(0.8)


def test_a_recall_floor_still_holds_inside_the_bound() -> None:
    y, p = scores()
    # recall >= 0.75 inside the bound of one false flag: 0.6 (recall 0.75), not 0.8 (0.5)
    th = choose_thresholds(y, p, LABELS, 0.75, max_false_flags=1 / 6)
    assert th["health"] == np.float32(0.6)


def test_the_bootstrap_interval_brackets_macro_f1_and_narrows_with_more_groups() -> None:
    from training.metrics import macro_f1_interval, prf

    rng = np.random.default_rng(1)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = (rng.random((n, 2)) < 0.3).astype(np.float32)
        pred = np.where(rng.random((n, 2)) < 0.8, y > 0, y == 0)  # 80% right
        return y, pred, np.arange(n) // 2  # conversations of two messages

    y, pred, groups = sample(400)
    point = np.mean([prf(y[:, j], pred[:, j])["f1"] for j in range(2)])
    lo, hi = macro_f1_interval(y, pred, groups)
    assert lo < point < hi
    small = macro_f1_interval(*sample(40))
    assert small[1] - small[0] > 1.5 * (hi - lo)
    # a perfect predictor is perfect in every draw
    assert macro_f1_interval(y, y > 0, groups) == (1.0, 1.0)
    # whole groups are drawn: a label whose positives all sit in one group is missing from
    # the draws that leave that group out (F1 0 there), so the interval reaches down to 0.5
    y1 = np.zeros((20, 2), np.float32)
    y1[:, 0] = 1
    y1[:2, 1] = 1
    lo1, hi1 = macro_f1_interval(y1, y1 > 0, np.arange(20) // 2)
    assert (lo1, hi1) == (0.5, 1.0)
    # over the labels present: a label no item carries does not count as a 0
    y2 = np.zeros((20, 2), np.float32)
    y2[::2, 0] = 1
    groups2 = np.arange(20) // 2
    assert macro_f1_interval(y2, y2 > 0, groups2) == (0.5, 0.5)
    assert macro_f1_interval(y2, y2 > 0, groups2, present_only=True) == (1.0, 1.0)
