"""Function-preserving growth (llmcxr.model.grow): deeper, same outputs, trainable, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from _tiny_lm import REPORTS, tiny_llmcxr_folder
from _tiny_vq import LM_VQ
from llmcxr.errors import BadInputError
from llmcxr.generation.decode import cache_argument
from llmcxr.model import grow_layers
from llmcxr.model.grow import decoder_layers, new_layers_after
from llmcxr.training import DataSource, ModelSpec, TrainRecipe
from llmcxr.training.model_setup import prepare_model


def _models():
    torch.manual_seed(0)
    small = dict(vocab_size=96, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, use_parallel_residual=True, **small))
    serial = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, use_parallel_residual=False, **small))
    llama = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, num_key_value_heads=1, **small))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=2))
    return {"gpt-neox": neox, "gpt-neox-serial": serial, "llama": llama, "gpt2": gpt2}


@pytest.mark.parametrize("name", ["gpt-neox", "gpt-neox-serial", "llama", "gpt2"])
def test_growing_keeps_the_outputs_and_adds_trainable_layers(name):
    model = _models()[name].eval()
    # Train the base a little first: zero-initialised biases would hide a layer that is not the identity.
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        before = model(input_ids=ids).logits
    grow_layers(model, 5)
    layers = decoder_layers(model)
    assert len(layers) == 5 and model.config.num_hidden_layers == 5
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)
    # Layer indices follow the new order (the KV cache is indexed by them): cached decoding agrees.
    indices = [m.layer_idx for layer in layers for m in layer.modules() if hasattr(m, "layer_idx")]
    if indices:
        assert sorted(set(indices)) == list(range(5))
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        cache = {cache_argument(model): DynamicCache(config=model.config)}
        model(input_ids=ids[:, :-1], use_cache=True, **cache)
        step = model(input_ids=ids[:, -1:], use_cache=True, **cache).logits[:, -1]
    assert torch.allclose(full, step, atol=1e-4)
    # The new layers learn: after one step the outputs move and every new parameter has a gradient.
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for p in layers[1].parameters() if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in layers[1].parameters() if p.grad is not None)


def test_new_layers_are_spread_between_the_base_layers():
    assert new_layers_after(4, 8) == [1, 1, 1, 1]
    assert new_layers_after(4, 6) == [0, 1, 0, 1]
    assert new_layers_after(2, 5) == [1, 2]
    assert sum(new_layers_after(3, 10)) == 7


def test_growing_refuses_a_target_that_is_not_deeper():
    model = _models()["gpt-neox"]
    with pytest.raises(BadInputError, match="already has 2 layers"):
        grow_layers(model, 2)


def test_growing_refuses_an_architecture_it_would_change(monkeypatch):
    """If zeroing the named projections does not make a layer the identity, the probe catches it."""
    import llmcxr.model.grow as grow

    monkeypatch.setattr(grow, "RESIDUAL_WRITERS", frozenset({"dense"}))  # forgets the MLP's output
    model = _models()["gpt-neox"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with pytest.raises(BadInputError, match="changed its outputs"):
        grow_layers(model, 3)


def test_a_recipe_grows_an_exported_model(tmp_path: Path):
    """``model.grow_layers`` in a recipe: the prepared model is deeper and computes the same logits."""
    folder = tiny_llmcxr_folder(tmp_path / "first", REPORTS)
    recipe = TrainRecipe(
        output_dir=tmp_path / "second",
        data=[DataSource("manifest", tmp_path / "unused.jsonl", tmp_path / "tokens")],
        model=ModelSpec(base=folder, grow_layers=3),
    )
    model, tokenizer, _ = prepare_model(recipe, [], LM_VQ.codebook_size, LM_VQ.num_tokens)
    from llmcxr.model import load_llmcxr_folder

    exported = load_llmcxr_folder(folder)
    assert model.config.num_hidden_layers == 3 > exported.model.config.num_hidden_layers
    ids = tokenizer(REPORTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(
            model.eval()(input_ids=ids).logits, exported.model(input_ids=ids).logits, atol=1e-5
        )


def test_a_recipe_cannot_grow_a_model_from_scratch(tmp_path: Path):
    from _tiny_lm import TINY_SCRATCH

    with pytest.raises(BadInputError, match="grow_layers"):
        TrainRecipe(
            output_dir=tmp_path,
            data=[],
            model=ModelSpec(scratch=TINY_SCRATCH, grow_layers=4),
        )
