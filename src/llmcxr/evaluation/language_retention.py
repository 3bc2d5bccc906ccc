"""Does a CXR-tuned LM keep its base's language? Accuracy on plain instructions with checkable answers
(``llmcxr.metrics.instructions``), and the tuned model's per-token KL to its base.

A model is asked in its own prompt layout: a plain Hugging Face folder (a base such as SmolLM2-Instruct)
in its chat template where it has one ("chat") or the Dolly text ("dolly"); an llmcxr model folder
through ``LLMCXR.chat``, exactly as ``llmcxr chat`` asks it. Answers are greedy.

The KL is measured on the base's own greedy answers (teacher-forced): at each answer token,
KL(base || tuned) of the next-token distributions, each model given the instruction in its own layout.
Defined only where the tuned model's vocabulary extends the base's (it was tuned from that base).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmcxr.generation.api import LLMCXR
from llmcxr.generation.decode import SamplingConfig
from llmcxr.generation.plain import PlainLM, greedy_answers, load_plain_lm
from llmcxr.metrics.instructions import accuracy_with_interval, check_answer, mean_token_kl
from llmcxr.model.vocab import CHAT_LAYOUT, IMAGE_TOKENS_FILE
from llmcxr.prompt.dolly import PromptParts

MAX_NEW_TOKENS = 48  # the items ask for short answers; a check reads the answer's start


@dataclass
class TextModel:
    """A model to ask plain instructions: a plain LM folder (``plain``) or an llmcxr folder (``llmcxr``)."""

    folder: Path
    model: Any
    tokenizer: Any
    layout: str  # "chat" | "dolly"
    plain: PlainLM | None = None
    llmcxr: LLMCXR | None = None
    load_s: float = 0.0

    def prompt_ids(self, instruction: str) -> list[int]:
        """The generation prompt of ``instruction`` in this model's layout."""
        if self.llmcxr is not None:
            return self.llmcxr.prompt_ids(PromptParts(instruction))
        return self.plain.prompt_ids(instruction)


def load_text_model(folder: Path, layout: str | None = None) -> TextModel:
    """A plain LM folder (layout: its chat template where it has one, else dolly) or an llmcxr folder."""
    folder = Path(folder)
    if (folder / IMAGE_TOKENS_FILE).is_file():
        started = time.perf_counter()
        llmcxr = LLMCXR.from_pretrained(folder, device="cpu", dtype=torch.float32)
        return TextModel(
            folder,
            llmcxr.model,
            llmcxr.tokenizer,
            "chat" if llmcxr.image_tokens.prompt_layout == CHAT_LAYOUT else "dolly",
            llmcxr=llmcxr,
            load_s=time.perf_counter() - started,
        )
    plain = load_plain_lm(folder, layout)
    return TextModel(folder, plain.model, plain.tokenizer, plain.layout, plain=plain, load_s=plain.load_s)


def answer_instructions(
    asked: TextModel, instructions: list[str], max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 16
) -> tuple[list[str], list[list[int]] | None]:
    """(greedy answers, their token ids where the model is a plain LM, else None)."""
    if asked.llmcxr is not None:
        sampling = SamplingConfig(do_sample=False, max_new_tokens=max_new_tokens)
        results = asked.llmcxr.chat(instructions, sampling=sampling, batch_size=batch_size)
        return [result.text.strip() for result in results], None
    answers, ids, _ = greedy_answers(asked.plain, instructions, max_new_tokens, batch_size)
    return answers, ids


def _answer_logits(asked: TextModel, instruction: str, answer_ids: list[int]) -> torch.Tensor:
    """(len(answer_ids), V) next-token logits at each answer token, teacher-forced."""
    prompt = asked.prompt_ids(instruction)
    ids = torch.tensor([prompt + answer_ids])
    logits = asked.model(ids).logits[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(answer_ids)]


def vocabulary_extends(base: TextModel, tuned: TextModel) -> bool:
    """Whether the tuned tokenizer keeps every base token at the same id (it was tuned from the base)."""
    base_vocab, tuned_vocab = base.tokenizer.get_vocab(), tuned.tokenizer.get_vocab()
    return all(tuned_vocab.get(token) == index for token, index in base_vocab.items())


@torch.no_grad()
def kl_to_base(
    base: TextModel, tuned: TextModel, instructions: list[str], base_answer_ids: list[list[int]]
) -> dict[str, Any]:
    """Mean per-token KL(base || tuned) over the base's answers: {mean_kl_nats, tokens, items, per_item}."""
    per_item, tokens = [], 0
    for instruction, answer in zip(instructions, base_answer_ids, strict=True):
        if not answer:
            continue
        kl = mean_token_kl(
            _answer_logits(base, instruction, answer), _answer_logits(tuned, instruction, answer)
        )
        per_item.append(float(kl.mean()))
        tokens += len(answer)
    return {
        "mean_kl_nats": float(np.mean(per_item)) if per_item else None,
        "items": len(per_item),
        "tokens": tokens,
        "per_item": per_item,
    }


def score_answers(answers: list[str], items: list[dict[str, Any]]) -> tuple[np.ndarray, dict, dict]:
    """(0/1 per item, overall accuracy with interval, the same per category) of answers to ``items``.
    Also rescores stored answers after a check changes, with no generation."""
    correct = np.array([check_answer(a, item["check"]) for a, item in zip(answers, items, strict=True)])
    categories = sorted({item["category"] for item in items})
    by_category = {
        c: accuracy_with_interval(correct[[item["category"] == c for item in items]]) for c in categories
    }
    return correct, accuracy_with_interval(correct), by_category


@dataclass
class RetentionResult:
    """One model's score on the instruction set."""

    folder: str
    layout: str
    accuracy: dict[str, Any]
    by_category: dict[str, dict[str, Any]]
    kl_to_base: dict[str, Any] | None
    seconds: dict[str, float] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)


def score_model(
    asked: TextModel,
    items: list[dict[str, Any]],
    base: TextModel | None = None,
    base_answer_ids: list[list[int]] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 16,
) -> tuple[RetentionResult, list[list[int]] | None]:
    """Answer and check every item; with ``base`` (and its answer ids), the KL to it as well."""
    instructions = [item["instruction"] for item in items]
    started = time.perf_counter()
    answers, answer_ids = answer_instructions(asked, instructions, max_new_tokens, batch_size)
    generate_s = time.perf_counter() - started
    correct, accuracy, by_category = score_answers(answers, items)
    kl = None
    started = time.perf_counter()
    if base is not None and base_answer_ids is not None:
        if vocabulary_extends(base, asked):
            kl = kl_to_base(base, asked, instructions, base_answer_ids)
        else:
            kl = {
                "mean_kl_nats": None,
                "why": "the vocabulary does not extend the base's (not tuned from it)",
            }
    result = RetentionResult(
        folder=str(asked.folder),
        layout=asked.layout,
        accuracy=accuracy,
        by_category=by_category,
        kl_to_base=kl,
        seconds={
            "load": round(asked.load_s, 1),
            "generate": round(generate_s, 1),
            "kl": round(time.perf_counter() - started, 1),
        },
        answers=[
            {"id": item["id"], "answer": a, "correct": bool(ok)}
            for item, a, ok in zip(items, answers, correct, strict=True)
        ],
    )
    return result, answer_ids
