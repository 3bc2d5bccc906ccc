"""Language retention: the instruction checks, the held-out set, the KL to the base, both model kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from _tiny_lm import REPORTS, tiny_llmcxr_folder
from llmcxr.datasets.instructions import distillation_prompts, read_instructions
from llmcxr.errors import BadInputError
from llmcxr.evaluation.language_retention import load_text_model, score_model
from llmcxr.generation.plain import greedy_answers, load_plain_lm, self_distill
from llmcxr.metrics.instructions import check_answer, load_instruction_items, mean_token_kl
from llmcxr.model.scratch import train_bpe_tokenizer

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ROOT / "benchmarks" / "data" / "language_retention.jsonl"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|user|>' + message['content'] + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
QUESTIONS = ["What is the capital of France?", "What is 12 + 30? Answer with the number only."]


@pytest.mark.parametrize(
    ("answer", "check", "passes"),
    [
        ("The capital of France is Paris.", {"kind": "contains", "all": [["paris"]]}, True),
        ("Lyon.", {"kind": "contains", "all": [["paris"]]}, False),
        ("Fluid in the pleural space.", {"kind": "contains", "all": [["fluid"], ["pleura", "lung"]]}, True),
        ("Fluid around the heart.", {"kind": "contains", "all": [["fluid"], ["pleura", "lung"]]}, False),
        ("It is a plunge.", {"kind": "contains", "all": [["lung"]]}, False),  # at a word start only
        ("42", {"kind": "number", "value": 42}, True),
        ("The answer is 42.", {"kind": "number", "value": 42}, True),
        ("7 times 6 is 42", {"kind": "number", "value": 42}, True),
        ("42 is wrong, it is 41", {"kind": "number", "value": 42}, False),  # the last number counts
        ("Yes.", {"kind": "exact", "values": ["yes"]}, True),
        ("Yes, it is.", {"kind": "exact", "values": ["yes"]}, False),
        ("chest", {"kind": "exact", "values": ["CHEST"], "case_sensitive": True}, False),
        ("red, green, blue", {"kind": "format", "pattern": r"[a-z]+(\s*,\s*[a-z]+){2}"}, True),
        ("red, green", {"kind": "format", "pattern": r"[a-z]+(\s*,\s*[a-z]+){2}"}, False),
    ],
)
def test_checks(answer, check, passes):
    assert check_answer(answer, check) is passes


def test_held_out_set_is_large_and_no_empty_or_evasive_answer_passes():
    items = load_instruction_items(ITEMS)
    assert len(items) >= 200
    assert len({item["id"] for item in items}) == len(items)
    assert {item["category"] for item in items} == {"facts", "arithmetic", "format", "medical"}
    for evasive in ("", "I don't know.", "As an AI language model, I cannot answer that."):
        assert not [item["id"] for item in items if check_answer(evasive, item["check"])]


def test_bad_item_file_names_the_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "instruction": "x", "check": {"kind": "vibes"}}\n')
    with pytest.raises(BadInputError, match="line 1: unknown check kind"):
        load_instruction_items(path)


def _plain_folder(root: Path, extra_tokens: int = 0, noise: float = 0.0) -> Path:
    """A tiny Llama with a chat template; ``extra_tokens`` new tokens and ``noise`` on the weights make
    a 'tuned' copy (same seed: the same base weights underneath)."""
    tokenizer = train_bpe_tokenizer([*REPORTS, *QUESTIONS, CHAT_TEMPLATE] * 3, 300)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    base_size = len(tokenizer)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=base_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
        initializer_range=0.5,  # varied greedy tokens, not one repeated
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    if extra_tokens:
        tokenizer.add_tokens([f"<img_{i}>" for i in range(extra_tokens)], special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(noise * torch.randn_like(p))
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def test_kl_is_zero_to_itself_and_grows_with_tuning(tmp_path):
    items = [{"id": str(i), "category": "facts", "instruction": q, "check": {"kind": "number", "value": 42}}
             for i, q in enumerate(QUESTIONS)]  # fmt: skip
    base = load_text_model(_plain_folder(tmp_path / "base"))
    assert base.layout == "chat"
    result, base_ids = score_model(base, items, max_new_tokens=6)
    assert base_ids and all(len(ids) > 0 for ids in base_ids)
    assert 0.0 <= result.accuracy["accuracy"] <= 1.0 and len(result.answers) == 2

    same = load_text_model(_plain_folder(tmp_path / "same"))
    itself, _ = score_model(same, items, base=base, base_answer_ids=base_ids, max_new_tokens=6)
    assert itself.kl_to_base["mean_kl_nats"] == pytest.approx(0.0, abs=1e-5)
    tuned = load_text_model(_plain_folder(tmp_path / "tuned", extra_tokens=5, noise=0.05))
    moved, _ = score_model(tuned, items, base=base, base_answer_ids=base_ids, max_new_tokens=6)
    assert moved.kl_to_base["mean_kl_nats"] > 1e-3
    assert moved.kl_to_base["tokens"] == sum(map(len, base_ids))

    # An llmcxr folder of its own vocabulary: asked through LLMCXR.chat (Dolly), no KL to this base.
    other = load_text_model(tiny_llmcxr_folder(tmp_path / "tiny", REPORTS))
    floor, ids = score_model(other, items, base=base, base_answer_ids=base_ids, max_new_tokens=6)
    assert other.layout == "dolly" and ids is None and len(floor.answers) == 2
    assert floor.kl_to_base["mean_kl_nats"] is None and "vocabulary" in floor.kl_to_base["why"]


def test_token_kl_counts_mass_moved_onto_new_tokens():
    base = torch.tensor([[2.0, 0.0, -1.0]])
    same_plus_new = torch.tensor([[2.0, 0.0, -1.0, -50.0]])  # a new token the model never picks
    leaky = torch.tensor([[2.0, 0.0, -1.0, 2.0]])  # as likely as the base's best token
    assert mean_token_kl(base, same_plus_new).item() == pytest.approx(0.0, abs=1e-6)
    assert mean_token_kl(base, leaky).item() > 0.3
    with pytest.raises(ValueError, match="fewer"):
        mean_token_kl(base, base[:, :2])


def test_self_distillation_writes_the_answers_that_ended_as_dolly_jsonl(tmp_path):
    lm = load_plain_lm(_plain_folder(tmp_path / "base"))
    # A random model stops when it likes: make its third greedy token of the first prompt its stop token.
    _, ids, _ = greedy_answers(lm, QUESTIONS, max_new_tokens=3)  # the same batch as below
    lm.tokenizer.eos_token = lm.tokenizer.convert_ids_to_tokens(ids[0][2])
    summary = self_distill(lm, QUESTIONS, tmp_path / "distilled.jsonl", max_new_tokens=3)

    rows = read_instructions(tmp_path / "distilled.jsonl")
    assert summary["written"] == len(rows) >= 1 and summary["cut_or_empty"] == len(QUESTIONS) - len(rows)
    assert rows[0].instruction == QUESTIONS[0] and rows[0].category == "self_distilled"
    assert rows[0].response == lm.tokenizer.decode(ids[0][:2], skip_special_tokens=True).strip()
    with pytest.raises(BadInputError, match="no answer of the base ended"):
        self_distill(lm, QUESTIONS[1:], tmp_path / "none.jsonl", max_new_tokens=1)


def test_distillation_prompts_are_not_in_the_held_out_set():
    held_out = {item["instruction"].lower() for item in load_instruction_items(ITEMS)}
    prompts = distillation_prompts()
    assert len(prompts) >= 500 and not held_out & {p.lower() for p in prompts}
