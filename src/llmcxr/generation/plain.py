"""A plain pretrained LM (a base, before any CXR tokens): greedy answers in its own prompt layout, and
self-distillation, its answers to a prompt set written as Dolly-style JSONL for the ``text`` task.

Why self-distillation (issue 22): the paper keeps dolly-v2's language by mixing Dolly-15k (20%) into
the CXR tasks. Where the user has no Dolly-15k, the base's own answers keep the base's behaviour the
same way; they are the data the tuned model is pulled back towards.

Layouts: ``chat``, the base's chat template (what an instruct model was tuned on), or ``dolly``, the
Dolly text (``llmcxr.prompt.format_prompt``) for a base with no template.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.prompt.dolly import END_KEY, PromptParts, format_prompt

LAYOUTS = ("chat", "dolly")
DISTILLED_CATEGORY = "self_distilled"


@dataclass
class PlainLM:
    """A Hugging Face causal LM folder with no image tokens, and the layout it is asked in."""

    folder: Path
    model: Any
    tokenizer: Any
    layout: str  # "chat" | "dolly"
    load_s: float = 0.0

    def prompt_ids(self, instruction: str) -> list[int]:
        """The generation prompt of ``instruction`` in this model's layout."""
        if self.layout == "chat":
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
            )
            return self.tokenizer(text, add_special_tokens=False).input_ids
        return self.tokenizer(format_prompt(PromptParts(instruction))).input_ids


def load_plain_lm(folder: Path, layout: str | None = None, dtype: torch.dtype = torch.float32) -> PlainLM:
    """Load ``folder``; layout defaults to the chat template where the tokenizer has one, else dolly."""
    folder = Path(folder)
    started = time.perf_counter()
    if not (folder / "config.json").is_file():
        raise BadInputError(folder, "no config.json: not a model folder", "llmcxr base fetch ... --out DIR")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    layout = layout or ("chat" if tokenizer.chat_template else "dolly")
    if layout not in LAYOUTS:
        raise BadInputError("layout", f"unknown prompt layout {layout!r}", f"use one of {LAYOUTS}")
    if layout == "chat" and not tokenizer.chat_template:
        raise BadInputError(folder, "the tokenizer has no chat template", "use layout dolly")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    return PlainLM(folder, model, tokenizer, layout, time.perf_counter() - started)


@torch.no_grad()
def greedy_answers(
    lm: PlainLM, instructions: list[str], max_new_tokens: int, batch_size: int = 16
) -> tuple[list[str], list[list[int]], list[bool]]:
    """(answers, their new token ids without the stop token, whether each stopped by itself);
    left-padded batches."""
    texts, ids, stopped = [], [], []
    pad, stop = lm.tokenizer.pad_token_id, lm.tokenizer.eos_token_id
    for start in range(0, len(instructions), batch_size):
        prompts = [lm.prompt_ids(text) for text in instructions[start : start + batch_size]]
        width = max(map(len, prompts))
        batch = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=lm.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=batch.device)
        out = lm.model.generate(
            batch,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=stop,
        )
        for row in out[:, width:].tolist():
            ended = stop in row
            row = row[: row.index(stop)] if ended else row
            text = lm.tokenizer.decode(row, skip_special_tokens=True)
            ended = ended or END_KEY in text  # a plain LM asked in Dolly text may write the end marker
            ids.append(row)
            texts.append(text.split(END_KEY)[0].strip())
            stopped.append(ended)
    return texts, ids, stopped


def self_distill(
    lm: PlainLM, instructions: list[str], out: Path, max_new_tokens: int = 192, batch_size: int = 8
) -> dict[str, Any]:
    """Write the base's greedy answers to ``instructions`` as Dolly JSONL (``read_instructions`` reads
    it; the recipe's ``instructions:``). Answers cut at ``max_new_tokens`` or empty are left out."""
    started = time.perf_counter()
    answers, _, stopped = greedy_answers(lm, instructions, max_new_tokens, batch_size)
    rows = [
        {"instruction": q, "context": "", "response": a, "category": DISTILLED_CATEGORY}
        for q, a, ended in zip(instructions, answers, stopped, strict=True)
        if ended and a
    ]
    if not rows:
        raise BadInputError(out, "no answer of the base ended within max_new_tokens", "raise max_new_tokens")
    atomic.write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return {
        "prompts": len(instructions),
        "written": len(rows),
        "cut_or_empty": len(instructions) - len(rows),
        "seconds": round(time.perf_counter() - started, 1),
        "layout": lm.layout,
    }
