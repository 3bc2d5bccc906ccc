"""Bootstrap intervals: the statistics match the metrics they stand for, and the intervals behave."""

from __future__ import annotations

import numpy as np
import pytest

from llmcxr.metrics.clinical import auroc_per_class, precision_recall_f1
from llmcxr.metrics.intervals import (
    item_resamples,
    macro_auroc,
    micro_f1,
    paired_difference,
    percentile_interval,
    report_f1_intervals,
)


def _labels(seed: int, n: int = 120, c: int = 5, p: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, c)) < p).astype(np.int64)


def test_micro_f1_equals_the_clinical_table():
    reference, predicted = _labels(0), _labels(1)
    table = precision_recall_f1(reference, predicted, [f"c{j}" for j in range(5)])
    assert micro_f1(reference, predicted) == pytest.approx(table["micro"]["f1"])
    # by hand: 2 true positives, 1 false positive, 1 false negative -> 4 / 6
    assert micro_f1(np.array([[1, 1, 0, 1]]), np.array([[1, 1, 1, 0]])) == pytest.approx(4 / 6)
    assert micro_f1(np.zeros((3, 2)), np.zeros((3, 2))) == 0.0


def test_macro_auroc_equals_auroc_per_class_with_ties_and_one_valued_columns():
    rng = np.random.default_rng(2)
    scores = np.round(rng.random((200, 4)), 1)  # many ties
    targets = _labels(3, 200, 4)
    targets[:, 2] = 0  # no positive: left out of the mean
    expected = auroc_per_class(scores, targets, list("abcd"))
    assert expected["n_classes_scored"] == 3
    assert macro_auroc(scores, targets) == pytest.approx(expected["macro_auroc"])
    assert macro_auroc(scores[:, 2:3], targets[:, 2:3]) is None
    perfect = np.array([[0.1], [0.2], [0.9]]), np.array([[0], [0], [1]])
    assert macro_auroc(*perfect) == 1.0


def test_intervals_are_deterministic_paired_and_cover_the_estimate():
    rows = item_resamples(100, resamples=300, seed=4)
    assert rows.shape == (300, 100) and np.array_equal(rows, item_resamples(100, resamples=300, seed=4))
    constant = percentile_interval(lambda r: 0.7, rows)
    assert constant["low"] == constant["high"] == 0.7 and constant["resamples"] == 300
    values = np.random.default_rng(5).normal(size=100)
    mean = percentile_interval(lambda r: float(values[r].mean()), rows)
    assert mean["low"] < values.mean() < mean["high"]
    assert 0.2 < mean["high"] - mean["low"] < 0.6  # about 2 x 1.96 / sqrt(100)
    same = paired_difference(lambda r: float(values[r].mean()), lambda r: float(values[r].mean()), rows)
    assert same["low"] == same["high"] == 0.0  # paired: no noise left in a difference with itself
    assert percentile_interval(lambda r: None, rows) is None
    with pytest.raises(ValueError):
        item_resamples(0)


def test_report_intervals_of_a_better_and_a_worse_system():
    reference = _labels(6, 200)
    good = reference.copy()
    good[:20] = 1 - good[:20]  # 10% of the reports wrong
    bad = _labels(7, 200)  # unrelated to the reference
    out = report_f1_intervals(reference, {"model": good, "bad": bad}, item_resamples(200, 500))
    model, margin = out["micro_f1"]["model"], out["margin"]["bad"]
    assert model["low"] <= micro_f1(reference, good) <= model["high"]
    assert margin["low"] > 0.3  # clearly better on every resample
