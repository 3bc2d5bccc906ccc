"""Scoring plain-text instructions with checkable answers, and how far a tuned LM's next-token
distributions have moved from its base's (the language the paper's 20% text share is meant to keep).

An item is one JSON line: ``{"id", "category", "instruction", "check"}``, where ``check`` is one of

- ``{"kind": "contains", "all": [[alt, ...], ...]}``: every group has one alternative in the answer
  (case-insensitive, at a word start: "lung" matches "lungs", not "plunge");
- ``{"kind": "number", "value": 42}``: the last number in the answer equals the value (GSM8K's rule,
  Cobbe et al. 2021: "11 * 2 = 22" is right, "49 - 18 = 15" wrong; the first number would be the question's);
- ``{"kind": "exact", "values": [...], "case_sensitive": false}``: the whole answer, stripped of
  surrounding space and a final full stop, equals one of the values;
- ``{"kind": "format", "pattern": regex}``: the whole answer matches (``re.fullmatch``, DOTALL, case-insensitive).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmcxr.errors import BadInputError
from llmcxr.metrics.intervals import item_resamples, percentile_interval

CHECK_KINDS = ("contains", "number", "exact", "format")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def load_instruction_items(path: Path) -> list[dict[str, Any]]:
    """The items of a JSONL instruction set, each checked to have a known, well-formed check."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "instruction set not found")
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item["check"]["kind"]
            item["instruction"], item["id"]  # noqa: B018 (required keys)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BadInputError(path, f"line {line_no} is not an instruction item: {err}") from None
        if kind not in CHECK_KINDS:
            raise BadInputError(
                path, f"line {line_no}: unknown check kind {kind!r}", f"use one of {CHECK_KINDS}"
            )
        items.append(item)
    return items


def _contains(answer: str, alternative: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(alternative.lower())}", answer.lower()) is not None


def check_answer(answer: str, check: dict[str, Any]) -> bool:
    """Whether ``answer`` passes ``check`` (module docstring)."""
    kind = check["kind"]
    if kind == "contains":
        return all(any(_contains(answer, alt) for alt in group) for group in check["all"])
    if kind == "number":
        found = _NUMBER.findall(answer)
        return bool(found) and float(found[-1]) == float(check["value"])
    if kind == "exact":
        said = answer.strip().removesuffix(".").strip()
        if check.get("case_sensitive", False):
            return said in check["values"]
        return said.lower() in {value.lower() for value in check["values"]}
    if kind == "format":
        return re.fullmatch(check["pattern"], answer.strip(), re.DOTALL | re.IGNORECASE) is not None
    raise ValueError(f"unknown check kind {kind!r}")


def accuracy_with_interval(correct: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """{accuracy, interval (95% item bootstrap), n} of a 0/1 vector of item results."""
    correct = np.asarray(correct, dtype=float)
    rows = item_resamples(len(correct), seed=seed)
    return {
        "accuracy": float(correct.mean()),
        "interval": percentile_interval(lambda r: float(correct[r].mean()), rows),
        "n": len(correct),
    }


def mean_token_kl(base_logits: torch.Tensor, tuned_logits: torch.Tensor) -> torch.Tensor:
    """(n,) KL(base || tuned) in nats at each of n positions, over the base's vocabulary.

    base_logits: (n, V); tuned_logits: (n, V') with V' >= V, the tuned model's first V ids being the
    base's tokens. The tuned softmax runs over all V' ids and is *not* renormalised over the first V:
    probability the tuned model moves onto its new (image, control) tokens counts as drift from the base."""
    vocab = base_logits.shape[-1]
    if tuned_logits.shape[-1] < vocab:
        raise ValueError(f"the tuned model has {tuned_logits.shape[-1]} ids, fewer than the base's {vocab}")
    base = torch.log_softmax(base_logits.float(), dim=-1)
    tuned = torch.log_softmax(tuned_logits.float(), dim=-1)[:, :vocab]
    return (base.exp() * (base - tuned)).sum(dim=-1)
