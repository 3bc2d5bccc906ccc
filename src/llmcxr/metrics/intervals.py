"""Bootstrap confidence intervals over test items (Efron & Tibshirani 1993, the percentile method).

A synthetic test split of a few hundred images has 7-45 positives per finding, so a macro-AUROC or a
micro-F1 moves by a few hundredths between two draws of the same world: an eval run reports each
headline number with the 95% interval of its item resamples, and differences (model minus a baseline,
originals minus round trips) as *paired* intervals, both sides scored on the same resampled items.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmcxr.metrics.clinical import precision_recall_f1

RESAMPLES = 1000
LEVEL = 0.95


def item_resamples(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) row indices, each row n items drawn with replacement; deterministic in ``seed``."""
    if n < 1:
        raise ValueError("no items to resample")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(
    statistic: Callable[[np.ndarray], float | None], rows: np.ndarray, level: float = LEVEL
) -> dict[str, float | int] | None:
    """{low, high, resamples}: the central ``level`` interval of ``statistic(row indices)`` over ``rows``.

    Resamples where the statistic is undefined (None: e.g. no positive of any class drawn) are left out
    and the count says how many were used; None when none was defined."""
    values = [v for v in (statistic(r) for r in rows) if v is not None]
    if not values:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return {"low": float(low), "high": float(high), "level": level, "resamples": len(values)}


def report_f1_intervals(
    reference: np.ndarray, systems: dict[str, np.ndarray], rows: np.ndarray, model: str = "model"
) -> dict[str, object]:
    """Intervals of each system's micro-F1 and of the paired difference ``model`` - each other system.

    reference, systems[name]: (N, C) 0/1 CheXpert labels of the reference and generated reports."""
    classes = [str(j) for j in range(reference.shape[1])]

    def micro_f1(items: np.ndarray, predicted: np.ndarray) -> float:
        return precision_recall_f1(reference[items], predicted[items], classes)["micro"]["f1"]

    out: dict[str, object] = {
        "micro_f1": {
            name: percentile_interval(lambda r, p=pred: micro_f1(r, p), rows)
            for name, pred in systems.items()
        }
    }
    out["margin"] = {
        name: percentile_interval(lambda r, p=pred: micro_f1(r, systems[model]) - micro_f1(r, p), rows)
        for name, pred in systems.items()
        if name != model
    }
    return out


def paired_difference(
    first: Callable[[np.ndarray], float | None],
    second: Callable[[np.ndarray], float | None],
    rows: np.ndarray,
) -> dict[str, float | int] | None:
    """Interval of first(rows) - second(rows) on the same resampled items (None where either is undefined)."""

    def difference(r: np.ndarray) -> float | None:
        a, b = first(r), second(r)
        return None if a is None or b is None else a - b

    return percentile_interval(difference, rows)
