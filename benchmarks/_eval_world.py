"""The world the shipped models are evaluated on, and its scoring classifier, built where missing:
the 3,000-image 64 px template world of seed 0 (the tiny model's training world; its test split was
never trained on) and a finding classifier trained on its train split with seed 1, not the seed-0 one
the tokenizer's clinical loss used, so agreement is scored by a network no model was tuned against."""

from __future__ import annotations

from pathlib import Path

from _repo import llmcxr


def prepare_eval_world(world: Path, classifier: Path) -> None:
    if not (world / "world.json").is_file():
        llmcxr("data", "synth", "--n", "3000", "--size", "64", "--seed", "0", "--reports", "templates",
               "--out", str(world), "--workers", "2")  # fmt: skip
    if not (classifier / "classifier.safetensors").is_file():
        llmcxr("eval", "train-classifier", "--world", str(world), "--out", str(classifier),
               "--steps", "1000", "--seed", "1")  # fmt: skip
