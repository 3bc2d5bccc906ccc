"""Tiny tokenizers, models, model folders, records and token stores for the tests (no network)."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from _tiny_vq import LM_VQ
from llmcxr.model import (
    ScratchConfig,
    add_cxr_tokens,
    build_scratch_model,
    save_llmcxr_folder,
    train_bpe_tokenizer,
)
from llmcxr.prompt import CONTROL_TOKENS, IMAGE_GENERATION, INTRO_BLURB, REPORT_GENERATION
from llmcxr.vq import VQGAN, TokenStoreWriter, VQConfig, save_vqgan

CODEBOOK = 16  # image tokens in the vocabulary
TOKENS_PER_IMAGE = 9  # a 3 x 3 code grid

REPORTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Moderate cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "Right lower lobe consolidation, concerning for pneumonia. No pneumothorax.",
    "Support devices in place. Mild pulmonary edema. Stable cardiomediastinal silhouette.",
]
TINY_SCRATCH = ScratchConfig(
    bpe_vocab_size=400,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    max_position_embeddings=512,
)


def tiny_tokenizer(
    reports: Sequence[str] = REPORTS * 5,
    codebook: int = CODEBOOK,
    tokens_per_image: int = TOKENS_PER_IMAGE,
    instructions: Sequence[str] = REPORT_GENERATION,
    row_markers: bool = False,
):
    """(tokenizer with control + image tokens, ImageTokenMap, size before they were added): BPE
    trained on ``reports`` and the prompt text around them."""
    tokenizer = train_bpe_tokenizer([*reports, INTRO_BLURB, "Input:\n", *instructions], 400)
    old = len(tokenizer)
    image_tokens = add_cxr_tokens(
        tokenizer, codebook, tokens_per_image, CONTROL_TOKENS, row_markers=row_markers
    )
    return tokenizer, image_tokens, old


def tiny_model(vocab_size: int, seed: int = 0, max_positions: int = 512):
    cfg = replace(TINY_SCRATCH, seed=seed, max_position_embeddings=max_positions)
    return build_scratch_model(cfg, vocab_size)


def tiny_llmcxr_folder(
    root: Path,
    reports: Sequence[str],
    max_positions: int = 512,
    vq: VQConfig = LM_VQ,
    seed: int = 0,
    row_markers: bool = False,
) -> Path:
    """A random-weight LLM-CXR folder in the training layout: ``root/run/model`` (BPE tokenizer on
    ``reports`` + control/image tokens + scratch GPT-NeoX) and its micro VQ-GAN in ``root/vq``."""
    tokenizer, image_tokens, _ = tiny_tokenizer(
        reports, vq.codebook_size, vq.num_tokens, [*REPORT_GENERATION, *IMAGE_GENERATION], row_markers
    )
    model = tiny_model(len(tokenizer), seed, max_positions)
    torch.manual_seed(seed)  # the VQ-GAN's weights do not depend on the LM's size
    save_vqgan(VQGAN(vq).eval(), root / "vq")
    return save_llmcxr_folder(
        model, tokenizer, image_tokens, root / "run" / "model", root / "vq", {"stage": 1}
    )


class DictStore(dict):
    """A token store stand-in: ``in`` and ``get`` by image id."""


def write_world(root: Path, n: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """A manifest of ``n`` fake CXR records (reports, views, QA, splits) and a real token store of
    random VQConfig.tiny() codes for them; returns (manifest, token store folder)."""
    rng = random.Random(seed)
    cfg = VQConfig.tiny()
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    with TokenStoreWriter(root / "tokens", cfg) as writer:
        for i in range(n):
            writer.add(
                f"img{i}", np.random.default_rng(seed + i).integers(0, cfg.codebook_size, cfg.num_tokens)
            )
            rows.append(
                {
                    "image": f"img{i}.png",
                    "findings": rng.choice(REPORTS),
                    "impression": "No acute process." if i % 2 else "Cardiomegaly.",
                    "view": "PA",
                    "question": "Is there cardiomegaly?",
                    "answer": rng.choice(["yes", "no"]),
                    "split": "validate" if i % 8 == 0 else "train",
                }
            )
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest, root / "tokens"


def plain_base(folder: Path) -> Path:
    """A pretrained-LM stand-in: a tiny GPT-NeoX and its BPE, without control or image tokens."""
    tokenizer = train_bpe_tokenizer(REPORTS * 5, 400)
    tiny_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_run_recipe(output_dir: Path, world: Path, per_device: int, steps: int, **fields):
    """The tiny run the distributed checks compare (tests/test_distributed.py, benchmarks/distributed.py):
    the ``write_world`` folder ``world``, a 2-layer scratch GPT-NeoX, fp32 for exact comparisons,
    ``steps`` steps at ``per_device`` packed rows per process, a checkpoint every 2 steps."""
    from llmcxr.training import DataSource, Mixture, ModelSpec, OptimSpec, TrainRecipe

    recipe = TrainRecipe(
        output_dir=output_dir,
        data=[DataSource("manifest", world / "manifest.jsonl", world / "tokens")],
        model=ModelSpec(scratch=TINY_SCRATCH),
        mixture=Mixture(0.3, 0.3, 0.2, 0.2),
        max_length=384,
        bf16=False,
        optim=OptimSpec(
            learning_rate=1e-3, warmup_steps=0, max_steps=steps, per_device_batch_size=per_device
        ),
        logging_steps=1,
        eval_steps=1000,
        save_steps=2,
        eval_samples_per_task=4,
    )
    return replace(recipe, **fields)


class StopAfterCheckpoint(TrainerCallback):
    """Stops training right after the checkpoint of step ``step``, as a kill there would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


RANKS = Path(__file__).with_name("_train_ranks.py")


def torchrun_command(recipe, *options: str) -> list[str]:
    """Save ``recipe`` as OUTPUT_DIR.yaml and return the command that trains it on 2 ranks of
    tests/_train_ranks.py (tests/test_distributed.py, benchmarks/distributed.py)."""
    from llmcxr.config import save_config

    path = Path(recipe.output_dir).with_suffix(".yaml")
    save_config(recipe, path)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port: other runs on this machine may hold the default one
        "--nproc-per-node",
        "2",
        str(RANKS),
        str(path),
        *options,
    ]


def run_losses(run: Path) -> list[float]:
    """The logged training losses of a run folder, in order."""
    return [e["loss"] for e in json.loads((run / "train_log.json").read_text())["log_history"] if "loss" in e]


def rank_hashes(run: Path) -> list[str]:
    """Each of the 2 ranks' hash of the weights it exported, rank order."""
    return [(run / f"weights_sha256.rank{r}.txt").read_text().strip() for r in range(2)]
