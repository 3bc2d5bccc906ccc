"""The one self-describing model folder: language model + tokenizer + image-token map + VQ-GAN + recipe.

Layout (``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads the LM from it alone)::

    folder/
      config.json, model.safetensors[.index.json], generation_config.json   the language model
      tokenizer.json, tokenizer_config.json                                 with control + image tokens
      image_tokens.json                                                     llmcxr.model.vocab.ImageTokenMap
                                                                            (with the prompt layout)
      llmcxr_generation.json (optional)                                     llmcxr.model.recommended
      grid_stem.json, grid_stem.safetensors (optional)                      llmcxr.model.grid_stem
      vq/vq_config.json, vq/vqgan.safetensors                               a copy of the image tokenizer
      llmcxr_train.json                                                     the training recipe that made it

or, in place of the LM's weights, a LoRA adapter over a base it names: adapter_config.json,
adapter_model.safetensors and base_model.json (``llmcxr.model.adapter``).

Writes go to a sibling temporary folder renamed into place at the end, so a crash mid-export
leaves the previous folder intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.model.adapter import find_base, is_adapter_folder, load_adapter_model
from llmcxr.model.grid_stem import load_grid_stem, save_grid_stem
from llmcxr.model.recommended import GenerationDefaults
from llmcxr.model.vocab import IMAGE_TOKENS_FILE, ImageTokenMap

VQ_SUBFOLDER = "vq"
TRAIN_CONFIG_FILE = "llmcxr_train.json"
# The model the project ships, found beside the package in a clone (an editable install), never by the
# working directory: src/llmcxr/model/folder.py -> the repository.
SHIPPED_MODEL = Path(__file__).resolve().parents[3] / "checkpoints" / "llmcxr-tiny"
# SmolLM2-135M-Instruct with a LoRA adapter (issue 22): the default for the tasks its record names.
SHIPPED_SMOL = SHIPPED_MODEL.with_name("llmcxr-smol")


def shipped_for(task: str) -> Path | None:
    """``SHIPPED_SMOL`` where its record (SHIPPED.json, from the eval numbers) makes it the default for
    ``task`` ("report", "image", "vqa", "chat") and its base has been fetched; else None."""
    record = SHIPPED_SMOL / "SHIPPED.json"
    if not record.is_file() or task not in json.loads(record.read_text(encoding="utf-8")).get(
        "default_tasks", []
    ):
        return None
    try:
        find_base(SHIPPED_SMOL)
    except BadInputError as err:
        warnings.warn(
            f"{SHIPPED_SMOL.name} is the default for {task}, but {err}; using {SHIPPED_MODEL.name}",
            stacklevel=2,
        )
        return None
    return SHIPPED_SMOL


def model_or_shipped(folder: str | Path | None, task: str | None = None) -> Path:
    """``folder``, or the shipped model for ``task`` (``shipped_for``, else ``SHIPPED_MODEL``) when none
    is given."""
    if folder is not None:
        return Path(folder)
    if task is not None and (smol := shipped_for(task)) is not None:
        return smol
    if not (SHIPPED_MODEL / "config.json").is_file():
        raise BadInputError(
            SHIPPED_MODEL,
            "no model folder given, and the shipped model is not here (it ships with a clone of the "
            "repository, installed with `pip install -e .`)",
            "give --model FOLDER (a folder `llmcxr train` wrote)",
        )
    return SHIPPED_MODEL


def trained_only_on_synthetic(train_config: dict[str, Any]) -> bool:
    """True when the recipe a model folder records trained it on ``llmcxr.synth`` worlds alone."""
    kinds = [source.get("kind") for source in train_config.get("data") or [] if isinstance(source, dict)]
    return bool(kinds) and all(kind == "synthetic" for kind in kinds)


def replace_folder(stage: Path, out: Path) -> None:
    """Move a finished ``stage`` folder to ``out``; an old ``out`` is moved aside first, removed last."""
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty sibling folder of ``out``; on success it replaces ``out`` (old one removed last)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield stage
        replace_folder(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def write_llmcxr_files(
    folder: Path, image_tokens: ImageTokenMap, vq_folder: Path | None, train_config: dict[str, Any]
) -> None:
    """Add the llmcxr parts (image-token map, VQ-GAN copy, recipe) to a saved LM folder."""
    folder = Path(folder)
    image_tokens.save(folder)
    if vq_folder is not None:
        vq_folder = Path(vq_folder)
        if not vq_folder.is_dir():
            raise BadInputError(
                vq_folder, "VQ-GAN folder not found", "point vq_folder at a `llmcxr vq train` output"
            )
        shutil.copytree(vq_folder, folder / VQ_SUBFOLDER, dirs_exist_ok=True)
    atomic.write_json(folder / TRAIN_CONFIG_FILE, train_config)


def save_llmcxr_folder(
    model,
    tokenizer,
    image_tokens: ImageTokenMap,
    out: Path,
    vq_folder: Path | None = None,
    train_config: dict[str, Any] | None = None,
) -> Path:
    """Write the whole folder atomically (one process; sharded runs export through ``training.export``)."""
    image_tokens.check(tokenizer)
    with staged_folder(Path(out)) as stage:
        model.save_pretrained(stage)
        save_grid_stem(model, stage)
        tokenizer.save_pretrained(stage)
        write_llmcxr_files(stage, image_tokens, vq_folder, train_config or {})
    return Path(out)


@dataclass
class LLMCXRFolder:
    """A loaded model folder."""

    folder: Path
    model: Any  # transformers PreTrainedModel (causal LM)
    tokenizer: Any  # transformers tokenizer with the control and image tokens
    image_tokens: ImageTokenMap
    train_config: dict[str, Any] = field(default_factory=dict)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)  # recommended settings

    @property
    def vq_folder(self) -> Path | None:
        path = self.folder / VQ_SUBFOLDER
        return path if path.is_dir() else None

    def load_vq(self, device: str = "cpu"):
        """The VQ-GAN saved with the model (``llmcxr.vq.load_vqgan``)."""
        from llmcxr.vq import load_vqgan  # the VQ package is only needed to draw or read pixels

        if self.vq_folder is None:
            raise BadInputError(
                self.folder, "has no vq/ subfolder", "export the model with its VQ-GAN folder"
            )
        return load_vqgan(self.vq_folder, device=device)


def load_llmcxr_folder(folder: Path, device: str = "cpu", dtype: torch.dtype | None = None) -> LLMCXRFolder:
    """Load model, tokenizer and image-token map; BadInputError for a folder that is not an llmcxr model."""
    folder = Path(folder)
    adapter = is_adapter_folder(folder)
    if not adapter and not (folder / "config.json").is_file():
        raise BadInputError(
            folder, "no config.json: not a model folder", "give the folder `llmcxr train` wrote"
        )
    if not (folder / IMAGE_TOKENS_FILE).is_file():
        raise BadInputError(
            folder,
            f"no {IMAGE_TOKENS_FILE}: a plain language model without image tokens",
            "train it with `llmcxr train` (it adds the image tokens) before using it for CXRs",
        )
    if not adapter and not any(folder.glob("model*.safetensors")) and any(folder.glob("pytorch_model*.bin")):
        raise BadInputError(
            folder,
            "holds pytorch_model.bin (a pickle, which can run code when loaded) but no model.safetensors; "
            "llmcxr loads safetensors only",
            "convert it once, if you trust its source: AutoModelForCausalLM.from_pretrained(folder)"
            ".save_pretrained(folder) writes model.safetensors",
        )
    image_tokens = ImageTokenMap.load(folder)
    with _unreadable(folder, "tokenizer (tokenizer.json, tokenizer_config.json)"), _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder)
    image_tokens.check(tokenizer)
    with _unreadable(folder, "language model (config.json, model.safetensors)"), _quiet_transformers():
        # safetensors only: a pickled pytorch_model.bin enters through an explicit conversion (`llmcxr convert
        # official` reads it with weights_only), never by loading (a pickle can run code).
        if adapter:  # a LoRA adapter over a fetched base (llmcxr.model.adapter)
            model = load_adapter_model(folder, tokenizer, dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    load_grid_stem(model, image_tokens, folder)
    model = model.to(device).eval()
    if model.get_input_embeddings().weight.shape[0] <= image_tokens.last_block_id:
        raise BadInputError(
            folder, "the model has fewer embedding rows than image tokens", "re-export the folder"
        )
    config_path = folder / TRAIN_CONFIG_FILE
    with _unreadable(config_path, "training recipe"):
        train_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return LLMCXRFolder(folder, model, tokenizer, image_tokens, train_config, GenerationDefaults.load(folder))


@contextmanager
def _unreadable(where: Path, what: str) -> Iterator[None]:
    """transformers, tokenizers and safetensors report a broken file with OSError, ValueError, RuntimeError
    (a size mismatch) or SafetensorError (an Exception): one BadInputError naming the folder instead."""
    try:
        yield
    except BadInputError:
        raise
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        if "mismatched_sizes" in detail:  # transformers points at a report that _quiet_transformers hid
            detail = "the weights' shapes do not match config.json"
        raise BadInputError(
            where,
            f"unreadable {what} ({type(err).__name__}: {detail})",
            "the folder is incomplete or damaged: export it again (`llmcxr export-checkpoint`) or copy it anew",
        ) from None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bar or load report on the user's terminal (errors still raise)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
