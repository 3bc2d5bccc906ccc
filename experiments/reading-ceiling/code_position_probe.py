"""Does it matter where in the grid a VQ code sits? Linear probes from an image's codes to its report's
CheXpert labels, with and without the codes' grid positions (why ``image_row_markers`` exists).

    python experiments/reading-ceiling/code_position_probe.py      # -> experiments/reading-ceiling/results/code_position_probe.json

Features of one image's g x g codes (codebook N):
- ``bag_of_codes``: how often each code occurs (N numbers; where a code sits is lost), and
- ``codes_at_positions``: a one-hot of the code at each grid position (g*g*N numbers).
A logistic regression per CheXpert class (one linear layer, Adam, full batch) is fitted on the train
split of the synthetic worlds the shipped model was trained on (their token stores, by the shipped
VQ-GAN), and scored by micro-F1-14 at threshold 0.5 on the first 300 test records of the seed-0
world, the test items of ``benchmarks/eval_tiny.py``. Labels are the project's rule labeler's on the
reports, uncertain as positive. Needs runs/e6 (the commands of experiments/tiny-synth-stages/recipes/tiny-synth*.yaml).
Positions matter to a probe; the shipped 8x8 LM turned out to find them without markers too (a control
run without them did as well, docs/training.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llmcxr.atomic import write_json
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.findings import CHEXPERT_14
from llmcxr.metrics.clinical import chexpert_14_labels, precision_recall_f1
from llmcxr.vq import TokenStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts' shared helper
from _repo import REPO

HERE = Path(__file__).resolve().parent

RUNS = REPO / "runs" / "e6"
# (world, its token store by the shipped VQ-GAN): the data of experiments/tiny-synth-stages/recipes/tiny-synth-retoken.yaml
WORLDS = [("world", "tokens-c2"), ("world-extra", "tokens-extra-c2"), ("world-extra2", "tokens-extra2-c2")]
TEST_ITEMS = 300


def bag_of_codes(codes: np.ndarray, codebook: int) -> tuple[torch.Tensor, int]:
    """(feature indices of each image, number of features): its codes (a code that occurs k times
    counts k times), out of ``codebook``."""
    return torch.from_numpy(codes.astype(np.int64)), codebook


def codes_at_positions(codes: np.ndarray, codebook: int) -> tuple[torch.Tensor, int]:
    """(feature indices of each image, number of features): (grid position, code) pairs, one per position."""
    positions = np.arange(codes.shape[1], dtype=np.int64)
    return torch.from_numpy(positions * codebook + codes.astype(np.int64)), codes.shape[1] * codebook


class LinearProbe(torch.nn.Module):
    """A linear layer on sparse count features: the logits are the sum of the weight rows of the
    image's feature indices plus a bias (``EmbeddingBag`` = the dense matmul without the zeros)."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.weight = torch.nn.EmbeddingBag(features, classes, mode="sum")
        torch.nn.init.zeros_(self.weight.weight)
        self.bias = torch.nn.Parameter(torch.zeros(classes))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.weight(indices) + self.bias


def fit_probe(
    indices: torch.Tensor, features: int, targets: np.ndarray, steps: int, seed: int
) -> LinearProbe:
    torch.manual_seed(seed)
    probe = LinearProbe(features, targets.shape[1])
    optimiser = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-5)
    y = torch.from_numpy(targets).float()
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(probe(indices), y).backward()
        optimiser.step()
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "code_position_probe.json")
    args = parser.parse_args()
    started = time.perf_counter()

    train_codes, train_reports, test_codes, test_reports = [], [], [], []
    codebook = 0
    for world, store_name in WORLDS:
        store = TokenStore(RUNS / store_name)
        codebook = store.config.codebook_size
        for record in read_synthetic_world(RUNS / world):
            if world == "world" and record.split == "test" and len(test_codes) < TEST_ITEMS:
                test_codes.append(store.get(record.image_id).reshape(-1))
                test_reports.append(record.report)
            elif record.split == "train":
                train_codes.append(store.get(record.image_id).reshape(-1))
                train_reports.append(record.report)
    train_targets = chexpert_14_labels(train_reports)
    test_targets = chexpert_14_labels(test_reports)

    results = {}
    train_grid, test_grid = np.stack(train_codes), np.stack(test_codes)
    for name, features in (("bag_of_codes", bag_of_codes), ("codes_at_positions", codes_at_positions)):
        train_indices, size = features(train_grid, codebook)
        probe = fit_probe(train_indices, size, train_targets, args.steps, args.seed)
        with torch.no_grad():
            logits = probe(features(test_grid, codebook)[0])
        predicted = (torch.sigmoid(logits) > 0.5).int().numpy()
        scores = precision_recall_f1(test_targets, predicted, CHEXPERT_14)
        results[name] = {"micro_f1_14": scores["micro"]["f1"], "features": size}
        print(f"{name}: micro-F1-14 {scores['micro']['f1']:.3f}", flush=True)

    write_json(
        args.out,
        {
            "command": "python experiments/reading-ceiling/code_position_probe.py",
            "train_images": len(train_codes),
            "test_images": len(test_codes),
            "tokens_per_image": int(train_grid.shape[1]),
            "codebook_size": codebook,
            "probe": f"logistic regression per class, Adam lr 1e-2, {args.steps} full-batch steps, seed {args.seed}",
            "results": results,
            "wall_s": round(time.perf_counter() - started, 1),
            "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        },
    )


if __name__ == "__main__":
    main()
