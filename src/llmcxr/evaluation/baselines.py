"""Baselines of ``llmcxr eval run`` that need the training split: the most common VQA answer and the
training images' VQ codes (cached across runs) for the mode-token-map image."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from llmcxr import atomic
from llmcxr.evaluation.run_folder import RunFolder, cache_dir
from llmcxr.metrics.finding_classifier import (
    load_record_images,
)
from llmcxr.records import QA, CXRRecord


def most_common_answers(train: Sequence[CXRRecord], asked: Sequence[QA]) -> list[str]:
    """VQA baseline: the training split's most frequent answer to the same question (same text),
    else to questions of the same kind, else "no"."""
    by_question: dict[str, Counter] = {}
    by_kind: dict[str, Counter] = {}
    for record in train:
        for qa in record.qa:
            by_question.setdefault(" ".join(qa.question.lower().split()), Counter())[qa.answer] += 1
            by_kind.setdefault(qa.kind, Counter())[qa.answer] += 1
    answers = []
    for qa in asked:
        counts = by_question.get(" ".join(qa.question.lower().split())) or by_kind.get(qa.kind)
        answers.append(counts.most_common(1)[0][0] if counts else "no")
    return answers


def train_tokens_cache(vq_folder: Path, train: Sequence[CXRRecord]) -> Path:
    """The cache file of the training images' VQ codes. Keyed by each VQ-GAN file and each image:
    path, size and modification time (not contents: the run identity has hashed the VQ weights
    already), so every eval run with this VQ-GAN on these images (any LM, any output folder, a
    validation sweep) encodes them once, and a changed file is never trusted."""
    key = hashlib.sha256()
    files = sorted(p for p in Path(vq_folder).iterdir() if p.is_file())
    for name, path in [(p.name, p) for p in files] + [(r.image_id, Path(r.image_path)) for r in train]:
        path = path.resolve()
        stat = path.stat()
        key.update(f"{name}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return cache_dir() / "train-tokens" / f"{key.hexdigest()}.safetensors"


@torch.inference_mode()
def train_token_grids(
    vq, vq_folder: Path, train: Sequence[CXRRecord], folder: RunFolder, batch_size: int, advance
) -> torch.Tensor:
    """(N, g, g) VQ codes of the training images by the model's VQ-GAN (``train_tokens_cache``)."""
    from safetensors.torch import load_file, save

    cache = train_tokens_cache(vq_folder, train)
    if cache.is_file():
        advance(len(train))
        return load_file(cache)["codes"]
    started = time.perf_counter()
    grids = []
    device = next(vq.parameters()).device
    for i in range(0, len(train), batch_size):
        chunk = train[i : i + batch_size]
        grids.append(vq.encode(load_record_images(chunk, vq.cfg.resolution).to(device)).cpu())
        advance(len(chunk))
    codes = torch.cat(grids).long().contiguous()
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(cache, save({"codes": codes}))
    folder.add_seconds("baseline_tokens", time.perf_counter() - started)
    return codes


MODE_IMAGE = "mode_token_map.png"  # in the run folder's baselines/


@torch.inference_mode()
def mode_token_image(
    vq, vq_folder: Path, train: Sequence[CXRRecord], folder: RunFolder, batch_size: int, advance
) -> torch.Tensor:
    """(C, H, W) the VQ-GAN's decoding of the training images' per-position mode code (what a model
    that ignores the report could draw), also written to baselines/mode_token_map.png."""
    from llmcxr.evaluation.run_folder import png_bytes
    from llmcxr.imaging import to_pil
    from llmcxr.metrics.baselines import mode_token_map

    grids = train_token_grids(vq, vq_folder, train, folder, batch_size, advance)
    image = vq.decode(mode_token_map(grids)[None].to(next(vq.parameters()).device)).cpu()[0]
    atomic.write_bytes(folder.baselines / MODE_IMAGE, png_bytes(to_pil(image)))
    return image
