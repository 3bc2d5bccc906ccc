"""Baselines: most common report, nearest-neighbour retrieval, the mode token map."""

from __future__ import annotations

import pytest
import torch

from llmcxr.metrics.baselines import (
    mode_token_map,
    most_common_report,
    nearest_neighbour_reports,
    nearest_neighbours,
    pixel_features,
)


def test_most_common_report_ignores_case_and_spacing() -> None:
    reports = [
        "Lungs are clear.",
        "Small effusion.",
        "lungs  are clear.",
        "Small effusion.",
        "LUNGS ARE CLEAR.",
    ]
    assert most_common_report(reports) == "Lungs are clear."
    with pytest.raises(ValueError):
        most_common_report([])


def test_nearest_neighbour_retrieves_the_closest_image() -> None:
    train = torch.full((3, 1, 32, 32), -1.0)
    train[0, :, :16] = 1.0  # bright top half
    train[1, :, :, :16] = 1.0  # bright left half
    train[2, :, 8:24, 8:24] = 1.0  # bright centre
    query = train[[2, 0, 1]] + 0.05 * torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert nearest_neighbours(pixel_features(train), pixel_features(query)).tolist() == [2, 0, 1]
    reports = ["top", "left", "centre"]
    assert nearest_neighbour_reports(pixel_features(train), reports, pixel_features(query)) == [
        "centre",
        "top",
        "left",
    ]


def test_mode_token_map() -> None:
    grids = torch.tensor([[[1, 2], [3, 4]], [[1, 5], [3, 4]], [[7, 5], [0, 4]]])
    assert mode_token_map(grids).tolist() == [[1, 5], [3, 4]]
    with pytest.raises(ValueError):
        mode_token_map(torch.zeros(2, 4, dtype=torch.long))
