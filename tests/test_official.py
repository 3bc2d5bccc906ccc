"""The published LLM-CXR's prompt layout, id for id, and `llmcxr convert official` on a release in miniature.

Expected ids are written by hand from the tokenizer's construction (``_official.py``): the original
code tokenizes the whole prompt string (so ``\\n\\nInput:`` is two newline tokens) and replaces only
the ``image`` token of ``<image>`` by the codes (hyn2028/llm-cxr ``get_inject_vq_fun``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM

from _official import (
    COLON,
    END,
    FIRST_IMAGE_ID,
    GT,
    IMAGE,
    INPUT,
    INSTRUCTION,
    LT,
    NL,
    NL2,
    RESPONSE_NL,
    byte_ids,
    fake_release,
    official_tokenizer,
)
from llmcxr.errors import BadInputError
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.model import GenerationDefaults, official_image_tokens
from llmcxr.prompt import (
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    INTRO_BLURB,
    OFFICIAL_IMAGE_GENERATION,
    OFFICIAL_REPORT_GENERATION,
    PromptParts,
    decode_example,
    encode_parts,
    image_response_frame,
)
from llmcxr.prompt.phrasings import OFFICIAL_PHRASINGS
from llmcxr.training.official import convert_official

CODES = np.arange(16) * 2  # a 4 x 4 grid of codes 0, 2, ..., 30 (of 32)
HEAD = byte_ids(INTRO_BLURB) + [NL2, INSTRUCTION, NL]  # "...request.\n\n### Instruction:\n"


@pytest.fixture(scope="module")
def tokenizer():
    return official_tokenizer()


@pytest.fixture(scope="module")
def image_tokens(tokenizer):
    return official_image_tokens(tokenizer, codebook_size=32, tokens_per_image=16)


def test_cxr_to_report_ids(tokenizer, image_tokens) -> None:
    parts = PromptParts("Describe it.", IMAGE_PLACEHOLDER, "Small effusion.")
    example = encode_parts(parts, tokenizer, image_tokens, CODES, "input")
    codes = [FIRST_IMAGE_ID + c for c in CODES.tolist()]
    # "\n\nInput:\n" in one piece: two "\n" tokens, never the merged "\n\n" (NL2) before Input
    prompt = HEAD + byte_ids("Describe it.") + [NL, NL, INPUT, COLON, NL, LT, *codes, GT, NL2, RESPONSE_NL]
    response = byte_ids("Small effusion.") + [NL2, END]
    assert example.input_ids == prompt + response
    assert example.labels == [IGNORE_INDEX] * len(prompt) + response
    back, back_codes = decode_example(example.input_ids, tokenizer, image_tokens)
    assert back == parts and np.array_equal(back_codes, CODES)


def test_report_to_cxr_ids(tokenizer, image_tokens) -> None:
    parts = PromptParts("Draw it.", "Small effusion.", IMAGE_PLACEHOLDER)
    example = encode_parts(parts, tokenizer, image_tokens, CODES, "response")
    codes = [FIRST_IMAGE_ID + c for c in CODES.tolist()]
    prompt = HEAD + byte_ids("Draw it.") + [NL, NL, INPUT, COLON, NL] + byte_ids("Small effusion.")
    prompt += [NL2, RESPONSE_NL]
    response = [LT, *codes, GT, NL2, END]  # "<" + codes + ">" + "\n\n" + "### End"
    assert example.input_ids == prompt + response
    assert example.labels == [IGNORE_INDEX] * len(prompt) + response
    # generation forces exactly that frame around the block
    assert image_response_frame(tokenizer, image_tokens) == ([LT], [GT, NL2, END])


def test_vqa_and_no_input_ids(tokenizer, image_tokens) -> None:
    vqa = encode_parts(
        PromptParts("Is there effusion?", IMAGE_PLACEHOLDER), tokenizer, image_tokens, CODES, "input"
    )
    codes = [FIRST_IMAGE_ID + c for c in CODES.tolist()]
    question = byte_ids("Is there effusion?")
    assert vqa.input_ids == HEAD + question + [NL, NL, INPUT, COLON, NL, LT, *codes, GT, NL2, RESPONSE_NL]
    chat = encode_parts(PromptParts("Say hi."), tokenizer, image_tokens)
    assert chat.input_ids == HEAD + byte_ids("Say hi.") + [NL2, RESPONSE_NL]


def test_user_text_stays_text(tokenizer, image_tokens) -> None:
    """A report that spells a control token or the placeholder gets plain-text ids, never the token."""
    example = encode_parts(
        PromptParts("Draw it.", "See ### End <image>", IMAGE_PLACEHOLDER),
        tokenizer,
        image_tokens,
        CODES,
        "response",
    )
    prompt = example.input_ids[: example.labels.index(LT)]
    assert prompt.count(END) == 0 and prompt.count(IMAGE) == 1  # 'image' of the text; no codes
    assert not any(i >= FIRST_IMAGE_ID for i in prompt)


def test_official_image_tokens_live_past_the_tokenizer(tokenizer) -> None:
    mapping = official_image_tokens(tokenizer, 32, 16)
    assert (mapping.first_id, mapping.prompt_layout) == (FIRST_IMAGE_ID, "official")
    mapping.check(tokenizer)
    with pytest.raises(BadInputError, match="could produce image ids"):
        official_image_tokens(tokenizer, 32, 16).__class__(32, 100, 16, prompt_layout="official").check(
            tokenizer
        )


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    lm, ckpt, tokenizer, model = fake_release(root)
    summary = convert_official(lm, ckpt, root / "converted")
    return root / "converted", summary, model


def test_convert_round_trip(converted) -> None:
    out, summary, original = converted
    assert summary["prompt_layout"] == "official" and summary["tokenizer_tokens"] == FIRST_IMAGE_ID
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    ids = torch.tensor([[5, 17, FIRST_IMAGE_ID + 3, END, FIRST_IMAGE_ID + 31]])
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, original(ids).logits)
    llm = LLMCXR.from_pretrained(out, device="cpu", dtype=torch.float32)
    assert llm.image_tokens.is_official and llm.image_tokens.first_id == FIRST_IMAGE_ID
    assert llm.vq.cfg.preprocessing == "official"
    assert llm.defaults.image_guidance_scale == 1.0 and llm.defaults.report_guidance_scale == 1.0
    assert (llm.report_instruction, llm.image_instruction) == (
        OFFICIAL_REPORT_GENERATION[0],
        OFFICIAL_IMAGE_GENERATION[0],
    )
    assert (llm.image_opening, llm.image_closing) == ([LT], [GT, NL2, END])


def test_converted_folder_generates_in_the_official_layout(converted, tmp_path: Path) -> None:
    out, _, original = converted
    llm = LLMCXR.from_pretrained(out, device="cpu", dtype=torch.float32)
    greedy = SamplingConfig(do_sample=False, max_new_tokens=6)
    drawn = llm.generate_image("Small effusion.", sampling=greedy)
    assert drawn.image_tokens.shape == (4, 4) and drawn.guidance_scale == 1.0
    # greedy codes are the argmax of the unconverted model under the prompt the original code builds
    prompt = llm.prompt_ids(PromptParts(OFFICIAL_IMAGE_GENERATION[0], "Small effusion."))
    ids = torch.tensor([prompt + [LT]])
    with torch.no_grad():
        for _ in range(16):
            logits = original(ids).logits[0, -1, FIRST_IMAGE_ID : FIRST_IMAGE_ID + 32]
            ids = torch.cat([ids, torch.tensor([[FIRST_IMAGE_ID + int(logits.argmax())]])], dim=1)
    assert (ids[0, len(prompt) + 1 :] - FIRST_IMAGE_ID).tolist() == drawn.image_tokens.reshape(-1).tolist()
    Image.fromarray(np.full((80, 96), 128, np.uint8)).save(tmp_path / "cxr.png")
    report = llm.report(tmp_path / "cxr.png", sampling=greedy)
    assert isinstance(report.text, str) and report.prompt.instruction == OFFICIAL_REPORT_GENERATION[0]


def test_convert_refuses_pickled_objects_and_mismatched_parts(tmp_path: Path) -> None:
    lm, ckpt, _, model = fake_release(tmp_path)
    state = model.state_dict()
    torch.save({**state, "extra": Path("x")}, lm / "pytorch_model.bin")  # a non-tensor pickle
    with pytest.raises(BadInputError, match="refused to unpickle|not a state dict"):
        convert_official(lm, ckpt, tmp_path / "out")
    small = {k: v[:FIRST_IMAGE_ID] if "embed" in k else v for k, v in state.items()}
    torch.save(small, lm / "pytorch_model.bin")  # embedding rows for text only
    with pytest.raises(BadInputError, match="rows"):
        convert_official(lm, ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_generation_defaults_round_trip(tmp_path: Path) -> None:
    GenerationDefaults(image_guidance_scale=3.0, report_guidance_scale=1.5, chosen_by="test").save(tmp_path)
    loaded = GenerationDefaults.load(tmp_path)
    assert (loaded.image_guidance_scale, loaded.report_guidance_scale) == (3.0, 1.5)
    assert GenerationDefaults.load(tmp_path / "none") == GenerationDefaults()


def test_training_goes_on_in_the_official_layout(converted, tmp_path: Path) -> None:
    """A recipe continuing a converted official model keeps its layout and weights, and its samples
    use the official instruction lists and the official token layout."""
    from llmcxr.records import CXRRecord
    from llmcxr.training.config import DataSource, Mixture, ModelSpec, TrainRecipe
    from llmcxr.training.model_setup import prepare_model
    from llmcxr.training.tasks import encode_samples, mix_tasks

    out, _, original = converted
    recipe = TrainRecipe(
        output_dir=tmp_path / "run",
        data=[DataSource("manifest", tmp_path / "unused.jsonl", tmp_path / "tokens")],
        model=ModelSpec(base=out),
    )
    model, tokenizer, image_tokens = prepare_model(recipe, [], 32, 16)
    assert (
        image_tokens.is_official
        and image_tokens.first_id == FIRST_IMAGE_ID
        and len(tokenizer) == FIRST_IMAGE_ID
    )
    assert torch.equal(model.get_input_embeddings().weight, original.get_input_embeddings().weight)
    records = [CXRRecord(image_id=f"i{k}", findings="Small effusion.", view="PA") for k in range(6)]
    mixture = Mixture(report_generation=1.0, image_generation=1.0, vqa=0.0, text=0.0)
    samples = mix_tasks(records, [], mixture, 1, seed=0, phrasings=OFFICIAL_PHRASINGS)
    assert {s.parts.instruction for s in samples} <= set(
        OFFICIAL_REPORT_GENERATION + OFFICIAL_IMAGE_GENERATION
    )
    examples = encode_samples(samples, tokenizer, image_tokens, {f"i{k}": CODES for k in range(6)}, 512)
    for sample, example in zip(samples, examples, strict=True):
        assert (
            example.input_ids
            == encode_parts(sample.parts, tokenizer, image_tokens, CODES, sample.image_field).input_ids
        )
        assert example.input_ids.count(LT) == 1 and example.input_ids.count(GT) == 1
