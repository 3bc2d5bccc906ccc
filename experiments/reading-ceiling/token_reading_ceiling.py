"""How well can a small supervised network read the findings from an image's VQ tokens alone?

    python experiments/reading-ceiling/token_reading_ceiling.py [--recipe experiments/tiny-synth-stages/recipes/tiny-synth-more-worlds.yaml]
        [--epochs 4] [--out experiments/reading-ceiling/results/token_reading_ceiling.json]
        [--reader cnn|transformer|causal [--width 96 --layers 2 --lr 1e-3] [--stem]]

The LM reads a CXR as its g x g VQ codes, so the codes bound what its reports can get right. This
benchmark trains a small convolutional network straight on the code grids (an embedding per code,
three 3x3 convolutions, a linear layer per CheXpert class) on the train split of the recipe's data
sources (their token stores), and scores its labels by micro-F1-14, threshold 0.5, on the first 300
validation and the first 300 test records of the first source: the items of ``benchmarks/eval_tiny.py``.
Labels are the project's rule labeler's on the reports, uncertain as positive, as ``eval run`` scores
reports. If the network reads far better than the LM, the tokens are not what holds the LM back.

The other readers ask what in the LM's way of reading costs it: a transformer over the flat row-major
code sequence (``transformer``: all-to-all; ``causal``: each code sees only those before it, as in
the LM), classified at one more token after the codes as a report is written after ``### Response:``;
``--stem`` puts masked 3x3 convolutions (row above and codes to the left only, so still causal) over
the grid of code embeddings first.
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
from llmcxr.config import load_config
from llmcxr.findings import CHEXPERT_14
from llmcxr.metrics.clinical import chexpert_14_labels, precision_recall_f1
from llmcxr.training import TrainRecipe
from llmcxr.training.sources import image_codes_and_reports
from llmcxr.vq import TokenStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts' shared helper
from _repo import REPO, shown

HERE = Path(__file__).resolve().parent

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


class MaskedConvStem(torch.nn.Module):
    """3x3 convolutions over the embedded grid that see only codes at or before each position in
    raster order (the row above and the codes to the left: PixelCNN's type-B mask), so an LM could
    use them on its image tokens without looking ahead. Added to the embeddings (residual)."""

    def __init__(self, width: int, layers: int = 2) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(width, width, 3, padding=1) for _ in range(layers))
        mask = torch.ones(3, 3)
        mask[2, :] = 0  # the row below
        mask[1, 2] = 0  # the code to the right
        self.register_buffer("mask", mask)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:  # (B, width, g, g)
        x = grid
        for i, conv in enumerate(self.convs):
            x = torch.nn.functional.conv2d(x, conv.weight * self.mask, conv.bias, padding=1)
            x = torch.nn.functional.gelu(x) if i < len(self.convs) - 1 else x
        return grid + x


class CodeSequenceReader(torch.nn.Module):
    """(B, g, g) code indices -> (B, classes) logits, read as the LM reads them: a flat row-major
    sequence through transformer layers, then one more token (as ``### Response:``) whose output is
    classified. ``causal``: each position sees only those before it, as in the LM; else all."""

    def __init__(
        self,
        codebook: int,
        classes: int,
        tokens: int,
        width: int,
        layers: int,
        causal: bool,
        stem: bool = False,
    ):
        super().__init__()
        self.stem = MaskedConvStem(width) if stem else None
        self.embed = torch.nn.Embedding(codebook + 1, width)  # the last id is the read token
        self.position = torch.nn.Parameter(torch.randn(tokens + 1, width) * 0.02)
        self.heads = max(width // 48, 1)
        layer = torch.nn.TransformerEncoderLayer(
            width,
            self.heads,
            4 * width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, classes)
        self.read_id, self.causal = codebook, causal

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        flat = codes.reshape(len(codes), -1)
        ids = torch.cat([flat, torch.full_like(flat[:, :1], self.read_id)], 1)
        x = self.embed(ids)
        if self.stem is not None:  # over the grid of code embeddings; the read token stays as it is
            grid = x[:, :-1].transpose(1, 2).reshape(len(codes), -1, *codes.shape[1:])
            x = torch.cat([self.stem(grid).flatten(2).transpose(1, 2), x[:, -1:]], 1)
        x = x + self.position
        mask = torch.nn.Transformer.generate_square_subsequent_mask(ids.shape[1]) if self.causal else None
        return self.head(self.norm(self.layers(x, mask=mask, is_causal=self.causal))[:, -1])


def reader_for(kind: str, codebook: int, grid: torch.Tensor, width: int, layers: int, stem: bool):
    if kind == "cnn":
        return CodeGridReader(codebook, len(CHEXPERT_14))
    return CodeSequenceReader(
        codebook, len(CHEXPERT_14), grid[0].numel(), width, layers, kind == "causal", stem
    )


def micro_f1(model: torch.nn.Module, codes: torch.Tensor, targets: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = (torch.sigmoid(model(codes)) > 0.5).int().numpy()
    model.train()
    return precision_recall_f1(targets, predicted, CHEXPERT_14)["micro"]["f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipe",
        type=Path,
        default=REPO / "experiments" / "tiny-synth-stages" / "recipes" / "tiny-synth-more-worlds.yaml",
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reader",
        choices=("cnn", "transformer", "causal"),
        default="cnn",
        help="cnn: convolutions over the grid; transformer / causal: the flat code sequence through "
        "transformer layers, all-to-all or causal (as the LM sees it)",
    )
    parser.add_argument("--width", type=int, default=96, help="transformer readers: model width")
    parser.add_argument("--layers", type=int, default=2, help="transformer readers: layers")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument(
        "--stem", action="store_true", help="transformer readers: masked 3x3 convolutions over the grid first"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "token_reading_ceiling.json")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)

    recipe = load_config(TrainRecipe, args.recipe)
    splits = image_codes_and_reports(recipe.data, ("train", "validate", "test"), HELD_OUT_ITEMS)
    codebook = TokenStore(recipe.data[0].token_store).config.codebook_size
    grids = {s: torch.from_numpy(codes) for s, (codes, _) in splits.items()}
    targets = {s: chexpert_14_labels(reports) for s, (_, reports) in splits.items()}
    print(f"{len(grids['train'])} train images, read in {time.perf_counter() - started:.0f} s", flush=True)

    model = reader_for(args.reader, codebook, grids["train"], args.width, args.layers, args.stem)
    steps = args.epochs * (len(grids["train"]) // args.batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
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
            "command": f"python experiments/reading-ceiling/token_reading_ceiling.py --recipe {shown(args.recipe)} "
            f"--epochs {args.epochs}"
            + (
                f" --reader {args.reader} --width {args.width} --layers {args.layers} --lr {args.lr:g}"
                + (" --stem" if args.stem else "")
                if args.reader != "cnn"
                else ""
            ),
            "train_images": len(grids["train"]),
            "held_out_images": {s: len(grids[s]) for s in ("validate", "test")},
            "tokens_per_image": int(grids["train"][0].numel()),
            "codebook_size": codebook,
            "reader": (
                "embedding 64 + 3 conv 3x3 (64 ch, batch norm, GELU) + mean/max pool + linear"
                if args.reader == "cnn"
                else f"{'causal' if args.reader == 'causal' else 'all-to-all'} transformer over the flat "
                f"row-major codes + a read token{' after a masked-conv stem' if args.stem else ''}: "
                f"width {args.width}, {args.layers} layers, "
                f"{model.heads} heads, learned positions, pre-norm"
            )
            + f"; {sum(p.numel() for p in model.parameters())} parameters; AdamW {args.lr:g} one-cycle, "
            f"batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}",
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
