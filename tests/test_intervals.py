"""Bootstrap intervals: deterministic, paired, and around the estimates they stand for."""

from __future__ import annotations

import numpy as np
import pytest

from llmcxr.metrics.clinical import precision_recall_f1
from llmcxr.metrics.intervals import (
    item_resamples,
    paired_difference,
    percentile_interval,
    report_f1_intervals,
)


def _labels(seed: int, n: int = 120, c: int = 5, p: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, c)) < p).astype(np.int64)


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
    estimate = precision_recall_f1(reference, good, list("abcde"))["micro"]["f1"]
    assert model["low"] <= estimate <= model["high"]
    assert margin["low"] > 0.3  # clearly better on every resample
