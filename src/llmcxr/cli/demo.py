"""`llmcxr demo`: build, encode, train and run the four tasks on a synthetic world; writes an HTML page."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the world, tokens, model and page."),
    train_seconds: float = typer.Option(
        150.0, "--train-seconds", help="Wall-clock cap on LM training (with --train)."
    ),
    images: int = typer.Option(
        600, "--images", help="Synthetic images to build and train on (with --train)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the world and of sampling."),
    train: bool = typer.Option(
        False, "--train", help="Train a model here (minutes) instead of using checkpoints/llmcxr-tiny."
    ),
) -> None:
    """The whole system on a CPU, with no data and no downloads: the shipped model, or one trained here (--train)."""
    from llmcxr.demo import run_demo

    run_demo(out, n_images=images, train_seconds=train_seconds, seed=seed, train=train)
