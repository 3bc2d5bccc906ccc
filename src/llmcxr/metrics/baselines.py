"""Baselines a CXR model must beat, scored with the same metrics: a model that does not has learned nothing.

- CXR -> report, ``most_common_report``: every test image gets the training set's most frequent
  report (the majority-class answer; on normal-heavy data it already scores some F1);
- CXR -> report, ``nearest_neighbour_reports``: every test image gets the report of the most
  similar training image (cosine similarity of image features: downsampled pixels, or the finding
  classifier's features);
- report -> CXR, ``mode_token_map``: the per-position most frequent code of the training token
  grids, decoded by the VQ-GAN into one image for every report (the "mean" image in token space).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _normal_form(report: str) -> str:
    return " ".join(report.lower().split())


def most_common_report(train_reports: Sequence[str]) -> str:
    """The most frequent training report (case and spacing ignored; the first seen wins ties)."""
    if not train_reports:
        raise ValueError("no training reports")
    counts = Counter(_normal_form(r) for r in train_reports)
    best = max(counts.values())
    return next(r for r in train_reports if counts[_normal_form(r)] == best)


def pixel_features(images: torch.Tensor, side: int = 16) -> torch.Tensor:
    """(N, 1, H, W) -> (N, side*side): area-downsampled pixels, each image centred and scaled to unit norm."""
    small = F.interpolate(images.float(), size=(side, side), mode="area").flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return F.normalize(small, dim=1)


def nearest_neighbours(train_features: torch.Tensor, query_features: torch.Tensor) -> torch.Tensor:
    """Index (M,) of the most cosine-similar training row (N, D) for each query row (M, D)."""
    similarity = F.normalize(query_features.double(), dim=1) @ F.normalize(train_features.double(), dim=1).T
    return similarity.argmax(dim=1)


def nearest_neighbour_reports(
    train_features: torch.Tensor, train_reports: Sequence[str], query_features: torch.Tensor
) -> list[str]:
    """For each query image, the report of its nearest training image."""
    if len(train_features) != len(train_reports):
        raise ValueError(f"{len(train_features)} training feature rows vs {len(train_reports)} reports")
    return [train_reports[int(i)] for i in nearest_neighbours(train_features, query_features)]


def mode_token_map(token_grids: torch.Tensor) -> torch.Tensor:
    """(N, g, g) int64 codes -> (g, g): the most frequent code at each position (lowest code on ties)."""
    if token_grids.dim() != 3 or len(token_grids) == 0:
        raise ValueError(f"expected (N, g, g) token grids, got {tuple(token_grids.shape)}")
    return torch.mode(token_grids, dim=0).values
