"""VQA accuracy by question type, on normalised answers.

Question kinds are those of ``llmcxr.reports.generate_qa`` (presence, laterality, abnormalities,
heart_size, devices). An answer is right when its normal form equals the reference's:
- yes/no questions (presence, devices): the leading yes/no word ("Yes, there is." -> "yes");
- laterality: the side word ("on the left" -> "left"; "both sides", "left and right" -> "bilateral");
- heart_size: "enlarged" (enlarged, large, cardiomegaly; not after "not") or "normal";
- list questions (abnormalities): the set of findings, order, commas and "and" ignored; each item
  is mapped to its CheXpert name by the project's labeler where it names exactly one finding
  ("pulmonary edema" == "edema"); "none", "no abnormality", "normal" are the empty set;
- anything else: lowercase, punctuation and articles dropped, spaces collapsed (the VQA v2
  evaluation's normalisation, without its number-word table).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

from llmcxr.findings import Mention
from llmcxr.records import QA
from llmcxr.reports import label_report

# Question kinds whose answers are lists compared as sets (kinds as ``llmcxr.records.QA.kind``).
SET_KINDS: frozenset[str] = frozenset({"abnormalities", "findings"})

_YES = {"yes", "yeah", "true", "present", "positive"}
_NO = {"no", "false", "absent", "negative"}
_EMPTY_SET = {
    "no",
    "none",
    "nothing",
    "no abnormalities",
    "no abnormality",
    "no findings",
    "no finding",
    "normal",
    "no devices",
    "no device",
    "",
}
_ARTICLES = {"a", "an", "the"}
_SIDE_WORDS = {
    "left": "left",
    "right": "right",
    "bilateral": "bilateral",
    "both": "bilateral",
    "bilaterally": "bilateral",
}


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse spaces."""
    return " ".join(w for w in _words(text) if w not in _ARTICLES)


def _yes_no(text: str) -> str | None:
    words = _words(text)
    if words and words[0] in _YES:
        return "yes"
    if words and words[0] in _NO:
        return "no"
    return None


def _side(text: str) -> str | None:
    sides = {_SIDE_WORDS[w] for w in _words(text) if w in _SIDE_WORDS}
    if not sides:
        return None
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return sides.pop()


def _heart_size(text: str) -> str | None:
    words = set(_words(text))
    if {"enlarged", "large", "cardiomegaly", "enlargement"} & words:
        return "normal" if {"not", "no"} & words else "enlarged"
    return "normal" if "normal" in words else None


@lru_cache(maxsize=4096)
def _finding_name(item: str) -> str:
    """A list item -> its CheXpert name where the labeler finds exactly one positive finding in it."""
    positive = [name for name, value in label_report(item).labels.items() if value == Mention.POSITIVE]
    return positive[0] if len(positive) == 1 else item


def _item_set(text: str) -> frozenset[str]:
    """'Cardiomegaly, pleural effusion and edema.' -> {"Cardiomegaly", "Pleural Effusion", "Edema"}."""
    if normalize_text(text) in _EMPTY_SET:
        return frozenset()
    parts = re.split(r",|;|/|\band\b|\n", text.lower())
    return frozenset(_finding_name(item) for item in (normalize_text(p) for p in parts) if item)


def normalize_answer(answer: str, kind: str, set_kinds: frozenset[str] = SET_KINDS) -> str | frozenset[str]:
    """The normal form two answers to a question of ``kind`` are compared in."""
    if kind in set_kinds:
        return _item_set(answer)
    if kind == "heart_size":
        size = _heart_size(answer)
        if size is not None:
            return size
    for reader in (_yes_no, _side):
        form = reader(answer)
        if form is not None:
            return form
    return normalize_text(answer)


def answers_match(predicted: str, reference: str, kind: str, set_kinds: frozenset[str] = SET_KINDS) -> bool:
    return normalize_answer(predicted, kind, set_kinds) == normalize_answer(reference, kind, set_kinds)


def vqa_accuracy(
    predictions: Sequence[str], references: Sequence[QA], set_kinds: frozenset[str] = SET_KINDS
) -> dict[str, object]:
    """Accuracy overall and per question kind. predictions[i] answers references[i].question."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted answers vs {len(references)} reference questions")
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for predicted, qa in zip(predictions, references, strict=True):
        total[qa.kind] += 1
        correct[qa.kind] += answers_match(predicted, qa.answer, qa.kind, set_kinds)
    n = sum(total.values())
    return {
        "accuracy": sum(correct.values()) / n if n else None,
        "n": n,
        "by_kind": {
            kind: {"accuracy": correct[kind] / total[kind], "correct": correct[kind], "n": total[kind]}
            for kind in sorted(total)
        },
    }
