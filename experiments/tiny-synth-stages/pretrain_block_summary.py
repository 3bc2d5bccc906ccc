"""Give a model a block summary that already reads findings, before the LM learns to use it.

    python experiments/tiny-synth-stages/pretrain_block_summary.py --base runs/e6/lm10/model \
        --recipe experiments/tiny-synth-stages/recipes/tiny-synth-grid-stem.yaml --out runs/e6/summary-pretrained/model

The block summary (``model.grid_stem.summary_layers``, llmcxr.model.grid_stem.BlockSummary) reads each
complete image block with unmasked convolutions and adds its pooled features to the token after the
block. Trained only through the LM's loss it starts from random features that the LM has no reason to
attend to. Here its convolutions are first trained on their own, as a finding classifier: the LM's
input embeddings of an image's codes (frozen) -> the summary's convolutions and pooling -> a linear
layer per CheXpert class (dropped afterwards), against the project's rule labeler's labels of the
image's report (uncertain as positive), on the train split of the recipe's data sources; a report
names its image's findings, so this is the same supervision the LM's reports give, only direct.

The output is a model folder: the base's LM unchanged, with a grid stem (``--stem-layers`` masked
layers, as a recipe's ``model.grid_stem`` would add) whose summary has the pretrained convolutions.
Both output projections start at zero, so the folder computes exactly what the base does; continue it
with a recipe whose ``model.base`` is this folder (the base's stem is kept).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from llmcxr.atomic import write_json
from llmcxr.config import load_config
from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14
from llmcxr.metrics.clinical import chexpert_14_labels, precision_recall_f1
from llmcxr.model import (
    GridStemConfig,
    attach_grid_stem,
    grid_stem_of,
    load_llmcxr_folder,
    save_llmcxr_folder,
)
from llmcxr.training import TrainRecipe
from llmcxr.training.sources import image_codes_and_reports

HELD_OUT_ITEMS = 300  # the first source's first 300 validation records, as eval_tiny.py scores


def image_ids_and_labels(recipe: TrainRecipe, image_tokens) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: ((n, tokens_per_image) image-token ids row-major, (n, 14) labels)} for train and validate."""
    out = {}
    for split, (codes, reports) in image_codes_and_reports(
        recipe.data, ("train", "validate"), HELD_OUT_ITEMS
    ).items():
        ids = torch.from_numpy(np.asarray(image_tokens.codes_to_ids(codes.reshape(len(codes), -1))))
        out[split] = (ids, torch.from_numpy(chexpert_14_labels(reports)).float())
    return out


def micro_f1(summary, head, embeddings, ids, labels) -> float:
    with torch.no_grad():
        logits = torch.cat([head(summary.pool(summary.read(embeddings[chunk]))) for chunk in ids.split(512)])
    predicted = (torch.sigmoid(logits) > 0.5).int().numpy()
    return precision_recall_f1(labels.int().numpy(), predicted, CHEXPERT_14)["micro"]["f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="model folder without a grid stem")
    parser.add_argument("--recipe", type=Path, required=True, help="training recipe: its data sources")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--stem-layers", type=int, default=2)
    parser.add_argument("--summary-layers", type=int, default=3)
    parser.add_argument("--summary-width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)

    base = load_llmcxr_folder(args.base)
    if grid_stem_of(base.model) is not None:
        raise BadInputError(args.base, "already has a grid stem", "give a model folder without one")
    config = GridStemConfig(
        layers=args.stem_layers, summary_layers=args.summary_layers, summary_width=args.summary_width
    )
    summary = attach_grid_stem(base.model, base.image_tokens, config).summary
    data = image_ids_and_labels(load_config(TrainRecipe, args.recipe), base.image_tokens)
    embeddings = base.model.get_input_embeddings().weight.detach()  # frozen: the LM keeps its own
    ids, labels = data["train"]
    print(f"{len(ids)} train images, read in {time.perf_counter() - started:.0f} s", flush=True)

    head = torch.nn.Linear(2 * args.summary_width, len(CHEXPERT_14))
    trained = [*summary.into.parameters(), *summary.convs.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(trained, lr=args.lr, weight_decay=1e-2)
    steps = args.epochs * (len(ids) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    by_epoch = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(ids))
        for start in range(0, len(ids) - args.batch_size + 1, args.batch_size):
            rows = order[start : start + args.batch_size]
            logits = head(summary.pool(summary.read(embeddings[ids[rows]])))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        by_epoch.append(
            {
                "epoch": epoch + 1,
                "validate_micro_f1_14": micro_f1(summary, head, embeddings, *data["validate"]),
            }
        )
        print(by_epoch[-1], f"{time.perf_counter() - started:.0f} s", flush=True)

    train_config = {**base.train_config, "block_summary_pretrained_from": str(args.base)}
    out = save_llmcxr_folder(
        base.model, base.tokenizer, base.image_tokens, args.out, base.vq_folder, train_config
    )
    write_json(
        out / "block_summary_pretraining.json",
        {
            "command": f"python experiments/tiny-synth-stages/pretrain_block_summary.py --base {args.base} --recipe {args.recipe} "
            f"--out {args.out} --stem-layers {args.stem_layers} --summary-layers {args.summary_layers} "
            f"--summary-width {args.summary_width} --epochs {args.epochs} --lr {args.lr:g} --seed {args.seed}",
            "train_images": len(ids),
            "validate_images": len(data["validate"][0]),
            "labels": "project rule labeler, uncertain as positive, 14 CheXpert classes, threshold 0.5",
            "by_epoch": by_epoch,
            "wall_s": round(time.perf_counter() - started, 1),
            "torch_threads": torch.get_num_threads(),
        },
    )
    print(f"model folder: {out}")


if __name__ == "__main__":
    main()
