"""Plain-text instructions (the ``text`` task): Dolly-15k JSONL when the user has it, otherwise the
project's own small set (``builtin_instructions.jsonl``, written for llmcxr: general knowledge,
writing and chest-radiology explanations, in Dolly's fields)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.tables import read_jsonl

BUILTIN = Path(__file__).with_name("builtin_instructions.jsonl")


@dataclass
class Instruction:
    """One Dolly record (databricks-dolly-15k fields)."""

    instruction: str
    response: str
    context: str = ""  # Dolly's optional input passage
    category: str = ""


def read_instructions(path: Path | None = None) -> list[Instruction]:
    """Read a Dolly-15k style JSONL (instruction, context, response, category); None: the built-in set."""
    path = Path(path) if path is not None else BUILTIN
    if not path.is_file():
        raise BadInputError(
            path, "instruction file not found", "give a databricks-dolly-15k.jsonl or leave it unset"
        )
    items: list[Instruction] = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if not row.get("instruction") or not row.get("response"):
            raise BadInputError(path, f"record {number} needs non-empty 'instruction' and 'response'")
        items.append(
            Instruction(
                instruction=str(row["instruction"]),
                response=str(row["response"]),
                context=str(row.get("context") or row.get("input") or ""),
                category=str(row.get("category") or ""),
            )
        )
    if not items:
        raise BadInputError(path, "no instructions in the file")
    return items


DISTILL_PROMPTS = Path(__file__).with_name("distill_prompts.json")


def distillation_prompts(path: Path | None = None) -> list[str]:
    """Instructions for the base to answer (``llmcxr base distill``): every template of
    ``distill_prompts.json`` with every topic, topic-major. Written for llmcxr, none of them in the
    language-retention benchmark's held-out set (benchmarks/data/language_retention.jsonl)."""
    spec = json.loads(Path(path or DISTILL_PROMPTS).read_text(encoding="utf-8"))
    return [template.format(t=topic) for topic in spec["topics"] for template in spec["templates"]]
