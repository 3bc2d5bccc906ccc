"""Deepen a trained causal LM without changing what it computes (function-preserving growth).

A model that has stopped improving at its size can be trained on with more layers instead of being
trained again from scratch. Each new layer is a copy of the base layer below it with the
projections that write into the residual stream set to zero: at step 0 the new layer adds nothing,
so the grown model starts exactly where the base left off (Net2Net, Chen et al. 2016), and its
attention and MLP inputs start from trained weights rather than noise. New layers are spread
evenly between the base layers.

Tested on GPT-NeoX (parallel and serial residual), Llama and GPT-2 blocks. Every growth is checked on
a probe sequence, so an architecture where zeroing these projections does not make a layer the
identity is refused instead of silently changed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from llmcxr.errors import BadInputError

# Names of the linear layers whose output is added to the residual stream, across architectures:
# GPT-NeoX attention.dense / mlp.dense_4h_to_h, Llama-family o_proj / down_proj, GPT-2 c_proj,
# Phi dense / fc2, others out_proj / fc_out / wo / w2.
RESIDUAL_WRITERS = frozenset(
    {"dense", "dense_4h_to_h", "o_proj", "down_proj", "c_proj", "out_proj", "fc2", "fc_out", "wo", "w2"}
)
PROBE_TOLERANCE = 1e-4  # largest logit change accepted as "the same function" (fp32)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks (the ModuleList with num_hidden_layers entries)."""
    count = model.config.num_hidden_layers
    found = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == count
        and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks")
    ]
    if len(found) != 1:
        raise BadInputError(
            "model",
            f"cannot find its {count} decoder layers ({type(model).__name__})",
            "grow a GPT-NeoX, Llama-family or GPT-2 model",
        )
    return found[0]


def identity_copy(layer: nn.Module) -> nn.Module:
    """A copy of ``layer`` with every residual-writing projection zeroed (weights and biases)."""
    new = copy.deepcopy(layer)
    zeroed = 0
    for name, module in new.named_modules():
        if name.rsplit(".", 1)[-1] in RESIDUAL_WRITERS and hasattr(module, "weight"):
            nn.init.zeros_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
            zeroed += 1
    if zeroed == 0:
        raise BadInputError(
            "model",
            f"{type(layer).__name__} has no known output projection to zero",
            "grow a GPT-NeoX, Llama-family or GPT-2 model",
        )
    return new


def new_layers_after(base_layers: int, target_layers: int) -> list[int]:
    """How many new layers follow each base layer, spread evenly (4 -> 6: [0, 1, 0, 1])."""
    extra = target_layers - base_layers
    return [((i + 1) * extra) // base_layers - (i * extra) // base_layers for i in range(base_layers)]


@torch.no_grad()
def grow_layers(model: nn.Module, target_layers: int) -> nn.Module:
    """Deepen ``model`` in place to ``target_layers`` decoder layers; its outputs do not change."""
    layers = decoder_layers(model)
    base = len(layers)
    if target_layers <= base:
        raise BadInputError(
            "recipe",
            f"model.grow_layers={target_layers} but the base already has {base} layers",
            f"give more than {base}, or leave it out",
        )
    was_training = model.training
    model.eval()
    probe = torch.arange(3, 3 + min(32, model.config.vocab_size - 3), device=model.device)[None]
    before = model(input_ids=probe, use_cache=False).logits

    grown, types = [], []
    old_types = getattr(model.config, "layer_types", None)
    for i, count in enumerate(new_layers_after(base, target_layers)):
        for layer in [layers[i]] + [identity_copy(layers[i]) for _ in range(count)]:
            grown.append(layer)
            if old_types is not None:
                types.append(old_types[i])
    for index, layer in enumerate(grown):  # the KV cache addresses layers by index
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    del layers[:]
    layers.extend(grown)
    model.config.num_hidden_layers = target_layers
    if old_types is not None:
        model.config.layer_types = types

    change = (model(input_ids=probe, use_cache=False).logits - before).abs().max().item()
    if change > PROBE_TOLERANCE:
        raise BadInputError(
            "model",
            f"growing {type(model).__name__} changed its outputs (largest logit change {change:.2e})",
            "this architecture's layers are not the identity with zeroed output projections; train it at its size",
        )
    model.train(was_training)
    return model
