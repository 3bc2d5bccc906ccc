"""How well can a small supervised network read the findings from an image's VQ tokens alone?

    python benchmarks/token_reading_ceiling.py [--recipe recipes/tiny-synth-more-worlds.yaml]
        [--epochs 4] [--out benchmarks/results/token_reading_ceiling.json]

The LM reads a CXR as its g x g VQ codes, so the codes bound what its reports can get right. This
benchmark trains a small convolutional network straight on the code grids (an embedding per code,
three 3x3 convolutions, a linear layer per CheXpert class) on the train split of the recipe's data
sources (their token stores), and scores its labels by micro-F1-14, threshold 0.5, on the first 300
validation and the first 300 test records of the first source: the items of ``benchmarks/eval_tiny.py``.
Labels are the project's rule labeler's on the reports, uncertain as positive, as ``eval run`` scores
reports. If the network reads far better than the LM, the tokens are not what holds the LM back.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from _repo import REPO, shown

from llmcxr.atomic import write_json
from llmcxr.config import load_config
from llmcxr.findings import CHEXPERT_14
from llmcxr.metrics.clinical import chexpert_14_labels, precision_recall_f1
from llmcxr.training import TrainRecipe
from llmcxr.training.sources import read_source
from llmcxr.vq import TokenStore

HELD_OUT_ITEMS = 300


class CodeGridReader(torch.nn.Module):
    """(B, g, g) code indices -> (B, classes) logits."""

    def __init__(self, codebook: int, classes: int, width: int = 64) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(codebook, width)
        self.convs = torch.nn.Sequential(
            *(
                layer
                for _ in range(3)
                for layer in (
                    torch.nn.Conv2d(width, width, 3, padding=1),
                    torch.nn.BatchNorm2d(width),
                    torch.nn.GELU(),
                )
            )
        )
        self.head = torch.nn.Linear(2 * width, classes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.embed(codes).permute(0, 3, 1, 2))
        # mean and max over the grid: a small finding lights few positions, which a mean would dilute
        return self.head(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))


def micro_f1(model: CodeGridReader, codes: torch.Tensor, targets: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = (torch.sigmoid(model(codes)) > 0.5).int().numpy()
    model.train()
    return precision_recall_f1(targets, predicted, CHEXPERT_14)["micro"]["f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "tiny-synth-more-worlds.yaml")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "token_reading_ceiling.json"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)

    recipe = load_config(TrainRecipe, args.recipe)
    splits: dict[str, tuple[list[np.ndarray], list[str]]] = {
        s: ([], []) for s in ("train", "validate", "test")
    }
    codebook = 0
    for number, source in enumerate(recipe.data):
        store = TokenStore(REPO / source.token_store)
        codebook = store.config.codebook_size
        for record in read_source(source):
            codes, reports = splits[record.split]
            held_out = record.split != "train"
            if held_out and (number > 0 or len(codes) >= HELD_OUT_ITEMS):
                continue  # held-out items: the first source's first 300, as eval_tiny.py scores
            codes.append(store.get(record.image_id).reshape(store.config.grid_size, -1))
            reports.append(record.report)
    grids = {s: torch.from_numpy(np.stack(c).astype(np.int64)) for s, (c, _) in splits.items()}
    # label each distinct report once: template reports repeat
    unique = sorted({report for _, reports in splits.values() for report in reports})
    unique_labels = chexpert_14_labels(unique)
    row_of = dict(zip(unique, unique_labels, strict=True))
    targets = {s: np.stack([row_of[report] for report in r]) for s, (_, r) in splits.items()}
    print(f"{len(grids['train'])} train images, read in {time.perf_counter() - started:.0f} s", flush=True)

    model = CodeGridReader(codebook, len(CHEXPERT_14))
    steps = args.epochs * (len(grids["train"]) // args.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    y = torch.from_numpy(targets["train"]).float()
    by_epoch = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y) - args.batch_size + 1, args.batch_size):
            rows = order[start : start + args.batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(grids["train"][rows]), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        by_epoch.append(
            {"epoch": epoch + 1, "validate": micro_f1(model, grids["validate"], targets["validate"])}
        )
        print(by_epoch[-1], f"{time.perf_counter() - started:.0f} s", flush=True)

    result = {split: micro_f1(model, grids[split], targets[split]) for split in ("validate", "test")}
    write_json(
        args.out,
        {
            "command": f"python benchmarks/token_reading_ceiling.py --recipe {shown(args.recipe)} "
            f"--epochs {args.epochs}",
            "train_images": len(grids["train"]),
            "held_out_images": {s: len(grids[s]) for s in ("validate", "test")},
            "tokens_per_image": int(grids["train"][0].numel()),
            "codebook_size": codebook,
            "reader": f"embedding 64 + 3 conv 3x3 (64 ch, batch norm, GELU) + mean/max pool + linear; "
            f"AdamW 2e-3 one-cycle, batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}",
            "labels": "project rule labeler, uncertain as positive, 14 CheXpert classes, threshold 0.5",
            "micro_f1_14": result,
            "validate_by_epoch": by_epoch,
            "wall_s": round(time.perf_counter() - started, 1),
            "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)",
        },
    )
    print(result)


if __name__ == "__main__":
    main()
