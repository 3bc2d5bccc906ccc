"""`llmcxr train --config recipe.yaml [--resume]`: instruction-tune a causal LM on CXR tasks;
`llmcxr export-checkpoint RUN/checkpoint-N --out DIR`: an earlier step of a run as a model folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def train(
    config: Path = typer.Option(..., "--config", "-c", help="Recipe YAML/JSON (see recipes/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Override the recipe's output_dir."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override optim.max_steps (smoke runs)."),
) -> None:
    """Train per the recipe; the model lands in OUTPUT_DIR/model (a folder `from_pretrained` loads).

    Multi-GPU / multi-node: `torchrun --nproc-per-node 8 -m llmcxr.cli.train_entry --config ...`
    or `accelerate launch -m llmcxr.cli.train_entry --config ...` (same options).
    """
    # torch/transformers load in seconds: imported here so `llmcxr --help` stays fast.
    from llmcxr.config import load_config
    from llmcxr.training import TrainRecipe, train_recipe

    recipe = load_config(TrainRecipe, config)
    if output_dir is not None:
        recipe = dataclasses.replace(recipe, output_dir=output_dir)
    if max_steps is not None:
        recipe = dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, max_steps=max_steps))
    folder = train_recipe(recipe, resume=resume)
    console.print(f"model folder: [bold]{folder}[/]")


def export_checkpoint(
    checkpoint: Path = typer.Argument(..., help="A checkpoint-N folder inside a run's output_dir."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (replaced atomically)."),
) -> None:
    """Export a run's checkpoint as a model folder (weights, tokenizer, image tokens, VQ-GAN, recipe),
    as the run's own export would be at that step; `stopped_at_step` in its llmcxr_train.json."""
    from llmcxr.training.export import export_checkpoint as export

    console.print(f"model folder: [bold]{export(checkpoint, out)}[/]")
