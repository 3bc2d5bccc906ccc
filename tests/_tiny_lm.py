"""Tiny tokenizers, models, records and token stores for the instruction-tuning tests (no network)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from llmcxr.model import ScratchConfig, add_cxr_tokens, build_scratch_model, train_bpe_tokenizer
from llmcxr.prompt import CONTROL_TOKENS, INTRO_BLURB, REPORT_GENERATION

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


def tiny_tokenizer():
    """(tokenizer with control + image tokens, ImageTokenMap, size before they were added)."""
    corpus = REPORTS * 5 + [INTRO_BLURB, "Input:\n", *REPORT_GENERATION]
    tokenizer = train_bpe_tokenizer(corpus, 400)
    old = len(tokenizer)
    image_tokens = add_cxr_tokens(tokenizer, CODEBOOK, TOKENS_PER_IMAGE, CONTROL_TOKENS)
    return tokenizer, image_tokens, old


def tiny_model(vocab_size: int, seed: int = 0):
    from dataclasses import replace

    return build_scratch_model(replace(TINY_SCRATCH, seed=seed), vocab_size)


class DictStore(dict):
    """A token store stand-in: ``in`` and ``get`` by image id."""


def write_world(root: Path, n: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """A manifest of ``n`` fake CXR records (reports, views, QA, splits) and a real token store of
    random VQConfig.tiny() codes for them; returns (manifest, token store folder)."""
    from llmcxr.vq import TokenStoreWriter, VQConfig

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
