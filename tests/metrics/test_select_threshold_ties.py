"""select_threshold's tie rule (ties go to the larger threshold) under float rounding, against exact fractions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from monai_ext.metrics import select_threshold


def exact_select(scores: list[float], labels: list[int], method: str) -> float:
    """Brute force over the distinct scores, criteria as exact fractions, first maximum from the top."""
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    best, best_t = None, None
    for t in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, labels, strict=True) if s >= t and y == 1)
        fp = sum(1 for s, y in zip(scores, labels, strict=True) if s >= t and y == 0)
        if method == "youden":
            spec = Fraction(n_neg - fp, n_neg) if n_neg else Fraction(0)
            crit = Fraction(tp, n_pos) + spec - 1
        else:
            prec, rec = (Fraction(tp, tp + fp) if tp + fp else Fraction(0)), Fraction(tp, n_pos)
            crit = 2 * prec * rec / (prec + rec) if prec + rec else Fraction(0)
        if best is None or crit > best:
            best, best_t = crit, t
    return best_t


@pytest.mark.parametrize(
    "scores, labels, method, expected",
    [
        # J = 1/3 at 0.9, 0.5 and 0.4; the float J at 0.9 is 1 ulp below the others (the example)
        ([0.4, 0.5, 0.6, 0.9, 0.1, 0.4], [1, 1, 0, 1, 0, 0], "youden", 0.9),
        ([0.4, 0.5, 0.6, 0.9, 0.1, 0.4], [1, 1, 0, 1, 0, 0], "max_f1", 0.4),  # F1 3/4 at 0.4 only
        ([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], "youden", 0.9),  # J = 1/2 at 0.9 and 0.7
        ([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1], "youden", 0.6),  # no negative: J = recall - 1
        ([0.3, 0.2, 0.1], [0, 1, 0], "max_f1", 0.2),
    ],
)
def test_worked_ties(scores, labels, method, expected):
    assert select_threshold(scores, labels, method).threshold == expected
    assert exact_select(scores, labels, method) == expected


@pytest.mark.parametrize("method", ["youden", "max_f1"])
@pytest.mark.parametrize("seed", range(150))
def test_random_ties_match_exact_fractions(method, seed):
    """Small sets with few distinct scores: many exact ties, some of them 1 ulp apart in floats."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 14))
    labels = (rng.random(n) < 0.5).astype(int)
    labels[0] = 1
    scores = rng.integers(0, 10, size=n) / 10.0
    expected = exact_select(scores.tolist(), labels.tolist(), method)
    assert select_threshold(scores, labels, method).threshold == expected
