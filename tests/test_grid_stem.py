"""The grid stem: masked convolutions over the image-token grid inside a causal LM."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from _tiny_lm import REPORTS, tiny_llmcxr_folder
from llmcxr.errors import BadInputError
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.model import load_llmcxr_folder, save_llmcxr_folder
from llmcxr.model.grid_stem import (
    GRID_STEM_FILE,
    GRID_STEM_WEIGHTS,
    TAPS,
    GridStem,
    GridStemConfig,
    attach_grid_stem,
    grid_stem_of,
)
from llmcxr.model.vocab import ImageTokenMap
from llmcxr.prompt import IMAGE_GENERATION, PromptParts

HIDDEN, GRID = 12, 4


def _block(image_tokens: ImageTokenMap, codes: np.ndarray) -> list[int]:
    return image_tokens.block_ids(codes).tolist()


def _stem(markers: bool, width: int = 8, layers: int = 2, seed: int = 0, summary_layers: int = 0) -> GridStem:
    image_tokens = ImageTokenMap(30, 100, GRID * GRID, row_marker_first_id=130 if markers else None)
    torch.manual_seed(seed)
    config = GridStemConfig(layers=layers, width=width, summary_layers=summary_layers, summary_width=6)
    stem = GridStem(HIDDEN, image_tokens, config)
    for p in stem.parameters():  # the output starts at zero; any weights will do for these checks
        torch.nn.init.normal_(p, std=0.5)
    return stem


def _masked_conv_reference(stem: GridStem, embeddings: torch.Tensor) -> torch.Tensor:
    """The stem written as PixelCNN type-B 3x3 convolutions over a (1, width, g, g) grid."""
    h = stem.into(embeddings).T.reshape(1, -1, GRID, GRID)
    for i, conv in enumerate(stem.convs):
        width = conv.out_features
        kernel = torch.zeros(width, width, 3, 3)
        for t, (dr, dc) in enumerate(TAPS):
            kernel[:, :, dr + 1, dc + 1] = conv.weight[:, t * width : (t + 1) * width]
        h = torch.nn.functional.conv2d(h, kernel, conv.bias, padding=1)
        h = torch.nn.functional.gelu(h) if i < len(stem.convs) - 1 else h
    return stem.out(h.reshape(h.shape[1], -1).T)


@pytest.mark.parametrize("markers", [False, True])
def test_the_stem_is_a_masked_convolution_over_the_grid_and_leaves_text_alone(markers):
    stem = _stem(markers)
    codes = np.random.default_rng(0).integers(0, 30, GRID * GRID)
    text = [5, 6, 7]
    ids = torch.tensor([text + _block(stem.image_tokens, codes) + text])
    embeddings = torch.randn(1, ids.shape[1], HIDDEN)
    out = stem(ids, embeddings)
    code_at = stem.image_tokens.is_image_id(ids[0])
    assert int(code_at.sum()) == GRID * GRID
    assert torch.equal(out[0, ~code_at], embeddings[0, ~code_at])  # text and row markers untouched
    expected = _masked_conv_reference(stem, embeddings[0, code_at])
    torch.testing.assert_close(out[0, code_at] - embeddings[0, code_at], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("markers", [False, True])
def test_the_summary_is_a_pooled_convolution_over_the_whole_block_at_the_token_after_it(markers):
    stem = _stem(markers, summary_layers=2)
    assert [conv.in_channels for conv in stem.summary.convs] == [6, 6]  # summary_width, not the stem's
    codes = np.random.default_rng(0).integers(0, 30, GRID * GRID)
    block = _block(stem.image_tokens, codes)
    ids = torch.tensor([[5, 6] + block + [7, 8], [5] + block[:-1] + [7, 8, 9, 10]])  # whole; one code short
    embeddings = torch.randn(*ids.shape, HIDDEN)
    with_summary = stem(ids, embeddings)
    summary_module, stem.summary = stem.summary, None
    summary = with_summary - stem(ids, embeddings)
    stem.summary = summary_module
    after = 2 + len(block)
    assert torch.equal(summary[0, :after], torch.zeros_like(summary[0, :after]))
    assert torch.equal(summary[0, after + 1 :], torch.zeros_like(summary[0, after + 1 :]))
    assert torch.equal(summary[1], torch.zeros_like(summary[1]))  # no complete block, no summary
    code_at = stem.image_tokens.is_image_id(ids[0])
    grid = stem.summary.into(embeddings[0, code_at]).T.reshape(1, -1, GRID, GRID)
    for conv in stem.summary.convs:
        grid = torch.nn.functional.gelu(torch.nn.functional.conv2d(grid, conv.weight, conv.bias, padding=1))
    expected = stem.summary.out(torch.cat([grid.mean(dim=(2, 3)), grid.amax(dim=(2, 3))], dim=1))[0]
    torch.testing.assert_close(summary[0, after], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("markers", [False, True])
@pytest.mark.parametrize("summary_layers", [0, 1])
def test_the_stem_is_causal_and_reads_each_image_of_a_packed_row_apart(markers, summary_layers):
    stem = _stem(markers, summary_layers=summary_layers)
    rng = np.random.default_rng(1)
    first, second = rng.integers(0, 30, (2, GRID * GRID))
    block = len(_block(stem.image_tokens, first))
    ids = torch.tensor([[5] + _block(stem.image_tokens, first) + [6, 7] + _block(stem.image_tokens, second)])
    embeddings = torch.randn(1, ids.shape[1], HIDDEN)
    out = stem(ids, embeddings)
    for cut in (4, 9, block + 5):  # any later token may change: nothing before it does
        changed = ids.clone()
        changed[0, cut:] = torch.where(
            stem.image_tokens.is_image_id(changed[0, cut:]),
            100 + (changed[0, cut:] - 99) % 30,
            changed[0, cut:],
        )
        moved = embeddings.clone()
        moved[0, cut:] += 1.0
        torch.testing.assert_close(stem(changed, moved)[0, :cut], out[0, :cut])
    # The second image reads as it would alone: no tap reaches back into the first. (Token 6 follows
    # the first image, so it carries that image's summary where the stem has one.)
    alone = torch.tensor([[6, 7] + _block(stem.image_tokens, second)])
    torch.testing.assert_close(
        stem(alone, embeddings[:, -alone.shape[1] :])[0, 1:], out[0, 1 - alone.shape[1] :]
    )


def test_codes_outside_a_well_formed_block_get_no_stem():
    stem = _stem(markers=True)
    stray = torch.tensor([[5, 101, 102, 130, 103, 104, 105, 106, 107]])  # codes before any marker; a row of 5
    embeddings = torch.randn(1, stray.shape[1], HIDDEN)
    placed, row, col = stem.placement(stray)
    assert placed.tolist() == [[False, False, False, False, True, True, True, True, False]]
    assert row[0, 4:8].tolist() == [0] * 4 and col[0, 4:8].tolist() == [0, 1, 2, 3]
    out = stem(stray, embeddings)
    assert torch.equal(out[0, :4], embeddings[0, :4]) and torch.equal(out[0, 8], embeddings[0, 8])


@pytest.fixture(scope="module")
def stem_folder(tmp_path_factory) -> Path:
    """A tiny model folder with row markers and a grid stem of random (non-zero) weights."""
    root = tmp_path_factory.mktemp("stem")
    plain = load_llmcxr_folder(tiny_llmcxr_folder(root, REPORTS * 5, max_positions=256, row_markers=True))
    stem = attach_grid_stem(plain.model, plain.image_tokens, GridStemConfig(layers=2, summary_layers=1))
    torch.manual_seed(0)
    torch.nn.init.normal_(stem.out.weight, std=0.5)
    torch.nn.init.normal_(stem.summary.out.weight, std=0.5)
    return save_llmcxr_folder(
        plain.model, plain.tokenizer, plain.image_tokens, root / "stemmed", plain.vq_folder, {"stage": 1}
    )


def test_a_new_stem_keeps_the_function_and_a_saved_one_loads_back(stem_folder, tmp_path):
    loaded = load_llmcxr_folder(stem_folder)
    stem = grid_stem_of(loaded.model)
    assert stem is not None and float(stem.out.weight.detach().abs().sum()) > 0
    assert json.loads((stem_folder / GRID_STEM_FILE).read_text()) == dataclasses.asdict(stem.config)
    # The LM's own weights file holds no stem: a plain from_pretrained loads the LM alone, cleanly.
    plain = AutoModelForCausalLM.from_pretrained(stem_folder)
    assert not hasattr(plain, "grid_stem")
    codes = np.arange(loaded.image_tokens.tokens_per_image) % loaded.image_tokens.codebook_size
    ids = torch.tensor([[3, 4, *loaded.image_tokens.block_ids(codes).tolist(), 5]])
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, loaded.model(ids).logits)  # the stem counts
        fresh = AutoModelForCausalLM.from_pretrained(stem_folder)
        attach_grid_stem(fresh, loaded.image_tokens, GridStemConfig())  # zero output: the plain LM
        torch.testing.assert_close(fresh(ids).logits, plain(ids).logits)
    (stem_folder / GRID_STEM_WEIGHTS).rename(tmp_path / "moved")
    try:
        with pytest.raises(BadInputError, match=GRID_STEM_WEIGHTS):
            load_llmcxr_folder(stem_folder)
    finally:
        (tmp_path / "moved").rename(stem_folder / GRID_STEM_WEIGHTS)


def test_cached_decoding_with_a_stem_equals_full_forward_passes(stem_folder):
    """Each cached step embeds the new code from the whole sequence: greedy image tokens equal the
    argmax of uncached passes over the prompt and everything drawn so far."""
    llm = LLMCXR.from_pretrained(stem_folder, device="cpu", dtype=torch.float32)
    result = llm.generate_image(REPORTS[:1], n=1, sampling=SamplingConfig(do_sample=False))[0]
    block = llm.image_tokens.block_ids(result.image_tokens.reshape(-1)).tolist()
    prompt = llm.prompt_ids(PromptParts(IMAGE_GENERATION[0], REPORTS[0]))
    ids = list(prompt)
    with torch.no_grad():
        for expected in block:
            logits = llm.model(torch.tensor([ids])).logits[0, -1]
            start, stop = llm.image_tokens.block_allowed(len(ids) - len(prompt))
            assert start + int(logits[start:stop].argmax()) == expected
            ids.append(expected)


def test_recipes_add_keep_and_refuse_stems(tmp_path, stem_folder):
    from llmcxr.training import DataSource, ModelSpec, TrainRecipe
    from llmcxr.training.model_setup import apply_lora, prepare_model

    def recipe(base: Path, stem: GridStemConfig | None, **fields) -> TrainRecipe:
        return TrainRecipe(
            output_dir=tmp_path / f"run{len(list(tmp_path.iterdir()))}",
            data=[DataSource("manifest", tmp_path / "unused.jsonl", tmp_path / "tokens")],
            model=ModelSpec(base=base, grid_stem=stem),
            image_row_markers=True,
            **fields,
        )

    shipped = load_llmcxr_folder(stem_folder)
    size, per_image = shipped.image_tokens.codebook_size, shipped.image_tokens.tokens_per_image
    model, _, _ = prepare_model(recipe(stem_folder, None), [], size, per_image)  # the base's stem is kept
    assert torch.equal(grid_stem_of(model).out.weight, grid_stem_of(shipped.model).out.weight)
    with pytest.raises(BadInputError, match="differs from the base"):
        prepare_model(recipe(stem_folder, GridStemConfig(layers=3, summary_layers=1)), [], size, per_image)
    from llmcxr.training import LoraSpec

    codes = np.arange(shipped.image_tokens.tokens_per_image) % size
    ids = torch.tensor([[3, 4, *shipped.image_tokens.block_ids(codes).tolist(), 5]])
    with torch.no_grad():
        expected = model(ids).logits
    rows = [shipped.image_tokens.first_id, shipped.image_tokens.first_id + 1]
    for rows_only in (True, False):
        spec = LoraSpec(enabled=True, r=2, alpha=4, train_new_token_rows_only=rows_only)
        fresh, _, _ = prepare_model(recipe(stem_folder, None), [], size, per_image)
        lora = apply_lora(fresh, recipe(stem_folder, None, lora=spec), rows)
        trained = {name for name, p in lora.named_parameters() if p.requires_grad}
        assert any("grid_stem" in name for name in trained)  # a new module: trained in full beside LoRA
        with torch.no_grad():  # LoRA starts as the identity: the stem still runs inside the wrapped model
            torch.testing.assert_close(lora(ids).logits, expected)
