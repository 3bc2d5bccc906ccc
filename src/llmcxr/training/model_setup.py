"""The language model to tune: a local base or a from-scratch one, with control and image tokens in its
vocabulary (and a grid stem where the recipe asks), and LoRA on top where the recipe enables it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmcxr.errors import BadInputError
from llmcxr.model.grid_stem import (
    STEM_ATTRIBUTE,
    GridStemConfig,
    attach_grid_stem,
    grid_stem_of,
    load_grid_stem,
)
from llmcxr.model.grow import grow_layers
from llmcxr.model.scratch import build_scratch_model, train_bpe_tokenizer
from llmcxr.model.vocab import (
    CHAT_LAYOUT,
    IMAGE_TOKENS_FILE,
    OFFICIAL_LAYOUT,
    ImageTokenMap,
    add_cxr_tokens,
    official_image_tokens,
    resize_for_tokenizer,
)
from llmcxr.prompt.chat import has_chat_template
from llmcxr.prompt.dolly import CONTROL_TOKENS
from llmcxr.training.config import TrainRecipe

BASE_TOKENIZER_DIR = "base_tokenizer"  # the tokenizer before image tokens, kept for resume and ranks > 0


def _image_tokens(recipe: TrainRecipe, tokenizer, codebook_size: int, tokens_per_image: int) -> ImageTokenMap:
    """The image-token map: a base folder's official layout is kept (a converted LLM-CXR fine-tunes in
    the layout it learned); ``prompt_layout: official`` puts codes past the tokenizer; else ours."""
    base = Path(recipe.model.base) if recipe.model.base is not None else None
    if base is not None and (base / IMAGE_TOKENS_FILE).is_file():
        saved = ImageTokenMap.load(base)
        if saved.is_official:
            saved.check(tokenizer)
            return saved
    if recipe.prompt_layout == OFFICIAL_LAYOUT:
        return official_image_tokens(tokenizer, codebook_size, tokens_per_image)
    if recipe.prompt_layout == CHAT_LAYOUT and not has_chat_template(tokenizer):
        raise BadInputError(
            recipe.model.base or "recipe",
            "prompt_layout chat needs a base whose tokenizer has a chat template",
            "use prompt_layout llmcxr",
        )
    added = add_cxr_tokens(
        tokenizer, codebook_size, tokens_per_image, CONTROL_TOKENS, row_markers=recipe.image_row_markers
    )
    return replace(added, prompt_layout=recipe.prompt_layout)


def load_dtype(recipe: TrainRecipe) -> torch.dtype:
    """The dtype the LM's weights are held in: bf16 where something else keeps fp32 (a frozen LoRA base,
    whose trained adapters and token rows are fp32; DeepSpeed, whose optimizer holds fp32 master
    weights), otherwise fp32 (the Trainer's bf16 autocast needs fp32 weights to update). At dolly-v2-3b's
    shape bf16 halves the base (11.1 -> 5.6 GB on every rank)."""
    if recipe.bf16 and (recipe.lora.enabled or recipe.deepspeed is not None):
        return torch.bfloat16
    return torch.float32


def cxr_token_ids(tokenizer, image_tokens: ImageTokenMap) -> list[int]:
    """Ids of the tokens llmcxr adds to an LM: the Dolly control tokens, the image codes and any row
    markers (added now or by an earlier stage: their rows are the ones the new tasks train)."""
    control = [
        i
        for i in tokenizer.convert_tokens_to_ids(list(CONTROL_TOKENS))
        if i not in (None, tokenizer.unk_token_id)
    ]
    return sorted(
        {*control, *range(image_tokens.first_id, image_tokens.last_id + 1), *image_tokens.row_marker_ids}
    )


def prepare_model(recipe: TrainRecipe, corpus: list[str], codebook_size: int, tokens_per_image: int):
    """(model, tokenizer, image_tokens): the LM with control and image tokens in its vocabulary.

    The base (pre-image-token) tokenizer is saved in output_dir once, by the main process, and
    loaded from there by every other process and on resume: all ranks and restarts agree on ids.
    """
    base_dir = Path(recipe.output_dir) / BASE_TOKENIZER_DIR
    with PartialState().main_process_first():
        if not base_dir.is_dir():
            if recipe.model.base is not None:
                tokenizer = AutoTokenizer.from_pretrained(recipe.model.base)
            else:
                tokenizer = train_bpe_tokenizer(corpus, recipe.model.scratch.bpe_vocab_size)
            tokenizer.save_pretrained(base_dir)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:  # dolly-v2 pads with the end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    old_size = len(tokenizer)
    image_tokens = _image_tokens(recipe, tokenizer, codebook_size, tokens_per_image)
    dtype = load_dtype(recipe)
    if recipe.model.base is not None:
        model = AutoModelForCausalLM.from_pretrained(
            recipe.model.base, dtype=dtype, attn_implementation=recipe.model.attn_implementation
        )
        if image_tokens.is_official:  # unnamed image ids past the tokenizer: rows, not tokens, to add
            rows = max(model.get_input_embeddings().weight.shape[0], image_tokens.last_id + 1)
            model.resize_token_embeddings(rows)
        else:
            resize_for_tokenizer(model, tokenizer, old_size, seed=recipe.seed)
        if recipe.model.grow_layers is not None:
            grow_layers(model, recipe.model.grow_layers)
    else:
        model = build_scratch_model(recipe.model.scratch, len(tokenizer)).to(dtype)
        model.config._attn_implementation = recipe.model.attn_implementation
    base_stem = GridStemConfig.load(recipe.model.base) if recipe.model.base is not None else None
    if base_stem is not None:
        if recipe.model.grid_stem not in (None, base_stem):
            raise BadInputError(
                "recipe",
                f"model.grid_stem {recipe.model.grid_stem} differs from the base's ({base_stem})",
                "leave model.grid_stem out to keep the base's stem",
            )
        load_grid_stem(model, image_tokens, recipe.model.base)
    elif recipe.model.grid_stem is not None:
        attach_grid_stem(model, image_tokens, recipe.model.grid_stem)
    model.config.pad_token_id = tokenizer.pad_token_id
    if recipe.gradient_checkpointing:
        model.config.use_cache = False
    return model, tokenizer, image_tokens


def _module_name(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def apply_lora(model, recipe: TrainRecipe, new_token_ids: Sequence[int]):
    """peft LoRA on the linear layers, plus the input and output embedding rows of ``new_token_ids``
    (``LoraSpec.train_new_token_rows_only``: peft's trainable_token_indices, one set of rows per
    matrix for an untied head such as GPT-NeoX's, one shared set for tied embeddings such as Llama's)
    or both embedding matrices in full (modules_to_save). A grid stem is new: trained in full.
    Everything trained is fp32, whatever the base's dtype."""
    from peft import LoraConfig, get_peft_model

    spec = recipe.lora
    embeddings = [_module_name(model, model.get_input_embeddings())]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        embeddings.append(_module_name(model, output))
    keep = [STEM_ATTRIBUTE] if grid_stem_of(model) is not None else []
    if spec.train_new_token_rows_only:
        rows = {name: list(new_token_ids) for name in embeddings}
    else:
        rows, keep = None, [*embeddings, *keep]
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules or "all-linear",
        modules_to_save=keep or None,
        trainable_token_indices=rows,
        task_type="CAUSAL_LM",
    )
    stem = grid_stem_of(model)
    model = get_peft_model(model, config)
    # The adapters' base is the model prepared here (resized, new rows seeded), not the folder on disk:
    # peft would otherwise see the vocabulary grown since that folder and save both embedding
    # matrices whole in every checkpoint (3.2 GB at dolly-v2-3b's shape).
    model.peft_config["default"].base_model_name_or_path = None
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    if stem is not None and spec.train_new_token_rows_only:
        # peft's row wrapper embeds with F.embedding, past the hook on the embedding module: hook the
        # wrapper too (once merged at export, the wrapper is gone and the module's own hook runs).
        wrapper = model.get_input_embeddings()
        for hook in list(wrapper.original_module._forward_hooks.values()):
            wrapper.register_forward_hook(hook)
    return model
