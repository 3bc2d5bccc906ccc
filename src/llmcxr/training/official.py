"""The published LLM-CXR checkpoint -> an llmcxr model folder (``llmcxr convert official``).

The release (hyn2028/llm-cxr README) is two tarballs: a Hugging Face folder of the instruction-tuned
dolly-v2-3b (``config.json``, ``pytorch_model.bin`` from DeepSpeed's ``zero_to_fp32.py``, dolly's
tokenizer with 50,281 tokens) and a taming-transformers VQ-GAN (``.ckpt`` + YAML). The language model
has no image tokens in its tokenizer: code c is id 50,281 + c and the embedding has 50,281 + 1,024
rows. Conversion keeps every weight as it is and only changes how they are stored and described:

- weights: safetensors (``.bin`` files are unpickled with ``weights_only=True``; no pickle is kept);
- config and tokenizer: copied through transformers (nothing runs from the folder: no remote code);
- ``image_tokens.json`` with ``prompt_layout: official`` (``llmcxr.model.vocab``), so every prompt and
  every image constraint is built as the original code built them (``llmcxr.prompt.examples``);
- ``vq/``: the VQ-GAN converted by ``llmcxr.vq.convert`` (folded to one channel, same codes), with
  the original pixel pipeline (``VQConfig.preprocessing = "official"``);
- ``llmcxr_generation.json``: the original sampling (top-p 0.92, top-k off) and guidance 1: the model
  was never trained with a dropped condition, so guidance has nothing to contrast with.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.model.folder import TRAIN_CONFIG_FILE, VQ_SUBFOLDER, staged_folder
from llmcxr.model.recommended import GenerationDefaults
from llmcxr.model.vocab import official_image_tokens
from llmcxr.prompt.dolly import CONTROL_TOKENS, IMAGE_PLACEHOLDER, PromptParts
from llmcxr.prompt.examples import encode_parts

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
KEPT_FILES = ("generation_config.json",)  # copied as they are when present
OFFICIAL_SAMPLING = "the published LLM-CXR's (dolly instruct pipeline: top-p 0.92, top-k 0, temperature 1)"


def _weight_files(lm: Path) -> list[Path]:
    """The weight files of a Hugging Face folder, shards listed by their index."""
    for name in WEIGHT_FILES:
        path = lm / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise BadInputError(path, f"broken shard index ({err})") from None
            return [lm / shard for shard in shards]
        return [path]
    raise BadInputError(lm, f"no weights: none of {list(WEIGHT_FILES)}", "give the unpacked LLM folder")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BadInputError(path, "weight shard not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise BadInputError(
            path,
            f"refused to unpickle a non-tensor object ({str(err).splitlines()[0][:200]})",
            "only plain state dicts convert; re-save the weights with torch.save(model.state_dict())",
        ) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise BadInputError(path, f"unreadable weights ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(path, "not a state dict of tensors")
    return state


def read_official_weights(lm: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the LM folder, ``.bin`` read with ``weights_only=True`` (memory-mapped)."""
    state: dict[str, torch.Tensor] = {}
    for path in _weight_files(Path(lm)):
        state.update(_read_weights(path))
    return state


def _own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor with storage of its own. DeepSpeed's ``zero_to_fp32.py`` may save parameters as
    views of one flat buffer; safetensors stores no shared storage, so those are copied (one at a time,
    while the rest stays memory-mapped)."""
    owners: dict[int, int] = {}
    for tensor in state.values():
        key = tensor.untyped_storage().data_ptr()
        owners[key] = owners.get(key, 0) + 1
    return {
        name: tensor.clone() if owners[tensor.untyped_storage().data_ptr()] > 1 else tensor.contiguous()
        for name, tensor in state.items()
    }


def _check_tokenizer(tokenizer, lm: Path) -> None:
    """The three Dolly control tokens must be single tokens, and ``<image>`` must split as '<' 'image' '>'."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in CONTROL_TOKENS if t not in vocab]
    if missing:
        raise BadInputError(
            lm, f"tokenizer lacks the Dolly control tokens {missing}", "give the LLM-CXR (dolly-v2) folder"
        )
    pieces = tokenizer(IMAGE_PLACEHOLDER, add_special_tokens=False)["input_ids"]
    if len(pieces) != 3:
        raise BadInputError(lm, f"tokenizer splits {IMAGE_PLACEHOLDER!r} into {len(pieces)} tokens, not 3")


def _embedding_rows(config, state: dict[str, torch.Tensor]) -> int:
    rows = getattr(config, "vocab_size", None)
    embeddings = [
        v for k, v in state.items() if k.endswith(("embed_in.weight", "embed_tokens.weight", "wte.weight"))
    ]
    if embeddings:
        rows = embeddings[0].shape[0]
    if rows is None:
        raise BadInputError("config.json", "no vocab_size and no input embedding found")
    return int(rows)


def _find_vq_config(checkpoint: Path) -> Path:
    """The YAML shipped beside the ``.ckpt`` (the release has exactly one, ``*-project-compat.yaml``)."""
    found = sorted(checkpoint.parent.glob("*.yaml"))
    if len(found) != 1:
        raise BadInputError(
            checkpoint.parent,
            f"{len(found)} YAML files beside the checkpoint: cannot tell which is its config",
            "pass --vq-config",
        )
    return found[0]


def convert_official(
    lm: str | Path, vq_checkpoint: str | Path, out: str | Path, vq_config: str | Path | None = None
) -> dict[str, Any]:
    """Write the llmcxr folder ``out`` from the released LM folder and VQ-GAN; returns a summary.

    The folder appears whole or not at all (written beside, then renamed into place)."""
    from llmcxr.vq import load_vqgan
    from llmcxr.vq.convert import convert_taming_checkpoint

    lm, vq_checkpoint, out = Path(lm), Path(vq_checkpoint), Path(out)
    if not (lm / "config.json").is_file():
        raise BadInputError(lm, "no config.json: not the unpacked LLM folder", "untar the LLM tarball first")
    vq_config = Path(vq_config) if vq_config is not None else _find_vq_config(vq_checkpoint)
    config = AutoConfig.from_pretrained(lm)  # local files only; no remote code is ever run
    tokenizer = AutoTokenizer.from_pretrained(lm)
    _check_tokenizer(tokenizer, lm)
    state = read_official_weights(lm)
    with staged_folder(out) as stage:
        vq_summary = convert_taming_checkpoint(
            vq_checkpoint, vq_config, stage / VQ_SUBFOLDER, extract_lpips=False
        )
        vq = load_vqgan(stage / VQ_SUBFOLDER).cfg
        image_tokens = official_image_tokens(tokenizer, vq.codebook_size, vq.num_tokens)
        rows = _embedding_rows(config, state)
        if rows < image_tokens.last_id + 1:
            raise BadInputError(
                lm,
                f"the embedding has {rows} rows, but {len(tokenizer)} tokens + {vq.codebook_size} codes "
                f"need {image_tokens.last_id + 1}",
                "the LM and the VQ-GAN must come from the same release",
            )
        save_torch_state_dict(_own_storage(state), stage, max_shard_size="5GB")
        config.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        for name in KEPT_FILES:
            if (lm / name).is_file():
                shutil.copy2(lm / name, stage / name)
        image_tokens.save(stage)
        # fail now, not at the first request, if a prompt cannot be laid out as the original did
        encode_parts(
            PromptParts("x", IMAGE_PLACEHOLDER),
            tokenizer,
            image_tokens,
            np.zeros(image_tokens.tokens_per_image, dtype=np.int64),
            "input",
        )
        GenerationDefaults(
            chosen_by=f"{OFFICIAL_SAMPLING}; guidance 1: trained without a dropped condition"
        ).save(stage)
        summary = {
            "converted_from": {
                "lm": str(lm),
                "vq_checkpoint": str(vq_checkpoint),
                "vq_config": str(vq_config),
            },
            "prompt_layout": image_tokens.prompt_layout,
            "tensors": len(state),
            "parameters": int(sum(v.numel() for v in state.values())),
            "tokenizer_tokens": len(tokenizer),
            "embedding_rows": rows,
            "image_tokens": {"first_id": image_tokens.first_id, "codebook_size": vq.codebook_size},
            "vq": vq_summary | {"out": f"{VQ_SUBFOLDER}/"},
        }
        # No recipe made it here: the record says where it came from, and that no condition was dropped.
        atomic.write_json(
            stage / TRAIN_CONFIG_FILE,
            {"converted": summary, "unconditional_fraction": 0.0, "unconditional_report_fraction": 0.0},
        )
    summary["out"] = str(out)
    return summary
