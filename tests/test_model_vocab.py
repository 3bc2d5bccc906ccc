"""Image tokens in the vocabulary, embedding resize, the self-describing folder, LoRA save/load/merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from _tiny_lm import CODEBOOK, TINY_SCRATCH, TOKENS_PER_IMAGE, tiny_model, tiny_tokenizer
from llmcxr.errors import BadInputError
from llmcxr.model import (
    ImageTokenMap,
    add_cxr_tokens,
    load_llmcxr_folder,
    resize_for_tokenizer,
    save_llmcxr_folder,
)
from llmcxr.prompt import CONTROL_TOKENS
from llmcxr.training.config import LoraSpec, ModelSpec, TrainRecipe
from llmcxr.training.model_setup import apply_lora


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_codes_to_ids_round_trip(tok):
    tokenizer, image_tokens, _ = tok
    codes = np.random.default_rng(0).integers(0, CODEBOOK, (2, 3, 3))
    ids = image_tokens.codes_to_ids(codes)
    assert ids.shape == codes.shape and np.array_equal(image_tokens.ids_to_codes(ids), codes)
    torch_codes = torch.from_numpy(codes)
    assert torch.equal(image_tokens.ids_to_codes(image_tokens.codes_to_ids(torch_codes)), torch_codes)
    # every id is the tokenizer's id of that code's token string, and the block is contiguous
    assert tokenizer.convert_tokens_to_ids(image_tokens.tokens()) == list(
        range(image_tokens.first_id, image_tokens.first_id + CODEBOOK)
    )
    assert tokenizer.convert_ids_to_tokens(int(ids[0, 1, 2])) == image_tokens.token(int(codes[0, 1, 2]))
    with pytest.raises(BadInputError):
        image_tokens.codes_to_ids(np.array([CODEBOOK]))
    with pytest.raises(BadInputError):
        image_tokens.ids_to_codes(np.array([image_tokens.first_id - 1]))


def test_adding_tokens_is_idempotent(tok):
    tokenizer, image_tokens, _ = tok
    size = len(tokenizer)
    again = add_cxr_tokens(tokenizer, CODEBOOK, TOKENS_PER_IMAGE, CONTROL_TOKENS)
    assert again == image_tokens and len(tokenizer) == size


def test_row_markers_open_each_row_of_the_block_and_round_trip():
    from llmcxr.prompt import IMAGE_PLACEHOLDER, PromptParts, decode_example, encode_parts

    tokenizer, image_tokens, _ = tiny_tokenizer(row_markers=True)
    g = image_tokens.grid_size
    assert g == 3 and image_tokens.block_length == TOKENS_PER_IMAGE + g
    first = image_tokens.row_marker_first_id
    assert tokenizer.convert_tokens_to_ids(image_tokens.row_markers()) == [first, first + 1, first + 2]
    codes = np.random.default_rng(1).integers(0, CODEBOOK, (g, g))
    block = image_tokens.block_ids(codes)
    # row r: its marker, then the row's codes
    expected = [[first + r, *(image_tokens.first_id + codes[r])] for r in range(g)]
    assert block.tolist() == [i for row in expected for i in row]
    assert np.array_equal(image_tokens.block_codes(block), codes.reshape(-1))
    assert np.array_equal(
        image_tokens.block_codes(np.stack([block, block])), np.stack([codes.reshape(-1)] * 2)
    )
    assert [image_tokens.block_allowed(t) for t in (0, 1, 4, 8)] == [
        (first, first + 1),
        (image_tokens.first_id, image_tokens.last_id + 1),
        (first + 1, first + 2),
        (first + 2, first + 3),
    ]
    swapped = block.copy()
    swapped[[0, g + 1]] = swapped[[g + 1, 0]]  # rows 0 and 1 opened by each other's marker
    with pytest.raises(BadInputError, match="row markers"):
        image_tokens.block_codes(swapped)
    with pytest.raises(BadInputError, match="expected 12"):
        image_tokens.block_codes(block[:-1])
    # a prompt carries the block, and reads back to the same codes
    parts = PromptParts("Describe.", IMAGE_PLACEHOLDER, "Clear lungs.")
    example = encode_parts(parts, tokenizer, image_tokens, codes, "input")
    assert example.input_ids.count(first) == 1 and example.input_ids.count(first + 2) == 1
    back, back_codes = decode_example(example.input_ids, tokenizer, image_tokens)
    assert back == parts and np.array_equal(back_codes, codes.reshape(-1))


def test_a_tokenizer_with_row_markers_keeps_them():
    tokenizer, image_tokens, _ = tiny_tokenizer(row_markers=True)
    size = len(tokenizer)
    again = add_cxr_tokens(tokenizer, CODEBOOK, TOKENS_PER_IMAGE, CONTROL_TOKENS)  # row_markers not asked
    assert again == image_tokens and len(tokenizer) == size
    plain, plain_map, _ = tiny_tokenizer()
    assert not plain_map.has_row_markers and plain_map.block_length == TOKENS_PER_IMAGE
    assert np.array_equal(plain_map.block_ids(np.arange(9)), plain_map.codes_to_ids(np.arange(9)))
    with pytest.raises(BadInputError, match="square grid"):
        add_cxr_tokens(plain, CODEBOOK, 8, CONTROL_TOKENS, row_markers=True)


def test_resize_pads_to_64_and_initialises_new_rows_near_the_mean(tok):
    tokenizer, image_tokens, old = tok
    model = tiny_model(old)  # a "pretrained" model that predates the new tokens
    before = model.get_input_embeddings().weight.detach().clone()
    resize_for_tokenizer(model, tokenizer, old)
    weight = model.get_input_embeddings().weight.detach()
    assert weight.shape[0] % 64 == 0 and weight.shape[0] >= len(tokenizer)
    assert torch.equal(weight[:old], before[:old])  # old rows untouched
    new = weight[old : len(tokenizer)]
    mean, std = before[:old].mean(0), before[:old].std(0)
    assert torch.all((new - mean).abs() <= 0.6 * std + 1e-6)  # mean + noise of std/10 (6 sigma bound)
    assert new.std(0).mean() > 0  # the image tokens are not all identical
    out = model.get_output_embeddings().weight.detach()[old : len(tokenizer)]
    assert torch.isfinite(out).all()


def test_folder_round_trip_and_plain_transformers_load(tok, tmp_path):
    tokenizer, image_tokens, _ = tok
    model = tiny_model(len(tokenizer))
    vq = tmp_path / "vq-src"
    vq.mkdir()
    (vq / "vq_config.json").write_text("{}")
    out = save_llmcxr_folder(model, tokenizer, image_tokens, tmp_path / "m", vq, {"stage": 1})
    plain = AutoModelForCausalLM.from_pretrained(out)  # the LM alone, no llmcxr needed
    loaded = load_llmcxr_folder(out)
    assert loaded.image_tokens == image_tokens and loaded.train_config == {"stage": 1}
    assert (loaded.vq_folder / "vq_config.json").is_file()
    ids = torch.tensor([[1, 2, image_tokens.first_id, image_tokens.last_id]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, model.eval()(ids).logits, atol=1e-6)
        assert torch.allclose(loaded.model(ids).logits, plain(ids).logits, atol=1e-6)


def test_folder_without_image_tokens_is_a_clear_error(tok, tmp_path):
    tokenizer, image_tokens, _ = tok
    model = tiny_model(len(tokenizer))
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    with pytest.raises(BadInputError, match="image_tokens.json"):
        load_llmcxr_folder(tmp_path / "plain")
    with pytest.raises(BadInputError):
        ImageTokenMap.load(tmp_path / "plain")


def _tiny_llama(vocab_size: int):
    """A tiny Llama with tied input and output embeddings (as Llama-3.2-1B, Qwen2.5-0.5B)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


BASES = {"gpt_neox_untied": tiny_model, "llama_tied": _tiny_llama}


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("rows_only", [True, False])
def test_lora_save_load_merge(tok, tmp_path, base, rows_only):
    """Adapters and new-token rows (only those rows, or the whole embedding matrices) train, save,
    reload and merge into a plain model that computes what the adapted one did."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from llmcxr.training.model_setup import cxr_token_ids

    tokenizer, image_tokens, _ = tok
    build = BASES[base]
    lora = LoraSpec(enabled=True, r=4, alpha=8, dropout=0.0, train_new_token_rows_only=rows_only)
    recipe = TrainRecipe(output_dir=tmp_path, model=ModelSpec(scratch=TINY_SCRATCH), lora=lora)
    new_ids = cxr_token_ids(tokenizer, image_tokens)
    assert len(new_ids) == len(CONTROL_TOKENS) + CODEBOOK
    peft_model = apply_lora(build(len(tokenizer)), recipe, new_ids)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_B" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    hidden = peft_model.get_input_embeddings().weight.shape[1]
    with torch.no_grad():  # make the adapter and the new token rows do something
        for p in trainable.values():
            p.add_(torch.randn_like(p) * 0.05)
    peft_model.eval()
    ids = torch.tensor([[5, 9, image_tokens.first_id + 3, image_tokens.last_id]])
    with torch.no_grad():
        tuned = peft_model(ids).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    rows = {k: v for k, v in saved.items() if "lora_" not in k}
    if rows_only:  # only the new tokens' rows: one set per matrix, or one shared set where tied
        assert {tuple(v.shape) for v in rows.values()} == {(len(new_ids), hidden)}
        assert len(rows) == (1 if base == "llama_tied" else 2)
    else:  # the embedding matrices in full
        assert all(v.shape[0] >= len(tokenizer) for v in rows.values()) and rows
    reloaded = PeftModel.from_pretrained(build(len(tokenizer)), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, tuned, atol=1e-5)
        merged = reloaded.merge_and_unload()
        assert torch.allclose(merged(ids).logits, tuned, atol=1e-4)
        assert not torch.allclose(build(len(tokenizer)).eval()(ids).logits, tuned, atol=1e-3)
    if rows_only:  # the merged matrices changed in the new tokens' rows only
        before = build(len(tokenizer)).get_input_embeddings().weight
        changed = (merged.get_input_embeddings().weight != before).any(dim=1).nonzero().flatten().tolist()
        assert set(changed) <= set(new_ids) and changed
