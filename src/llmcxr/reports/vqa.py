"""Visual question-answer pairs generated from a report's CheXpert labels.

LLM-CXR's VQA set (``mimic-cxr-jpg_medvqa_v1``) was never released; this builds an equivalent one
from labels, so that any labeled CXR set (MIMIC-CXR via the labeler, IU X-ray, the synthetic world)
gets VQA pairs. Question kinds (``QA.kind``):

- ``presence``: "Is there a pleural effusion?" -> "yes"/"no". Asked in yes/no *pairs*: for every
  finding asked about that is present, one that is absent (negative or not mentioned) is asked too,
  so yes and no answers are exactly balanced per report. "No Finding" counts as a finding here
  ("Is this chest X-ray normal?"), so normal studies get pairs too. Uncertain findings are never
  asked about: their answer is unknown.
- ``laterality``: "Which side is the pleural effusion on?" -> "left"/"right"/"bilateral".
- ``abnormalities``: "What abnormalities are seen?" -> positive findings in CheXpert order
  (support devices left out), or "no abnormality".
- ``heart_size``: -> "enlarged"/"normal" (only where the report states it or the study is normal).
- ``devices``: "Are there any tubes or lines?" -> "yes"/"no".

Every kind has at least five phrasings, chosen at random; the same (labels, sides, seed) always
give the same pairs (``random.Random(seed)``; ``qa_seed`` derives a stable per-image seed).
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14, Mention, Side
from llmcxr.records import QA, CXRRecord
from llmcxr.tables import read_jsonl

# How a finding reads inside a question ("Is there {article phrase}?") and inside an answer.
_PHRASE: dict[str, tuple[str, str]] = {
    "Enlarged Cardiomediastinum": ("an enlarged cardiomediastinum", "enlarged cardiomediastinum"),
    "Cardiomegaly": ("cardiomegaly", "cardiomegaly"),
    "Lung Lesion": ("a lung lesion", "lung lesion"),
    "Lung Opacity": ("a lung opacity", "lung opacity"),
    "Edema": ("pulmonary edema", "edema"),
    "Consolidation": ("consolidation", "consolidation"),
    "Pneumonia": ("pneumonia", "pneumonia"),
    "Atelectasis": ("atelectasis", "atelectasis"),
    "Pneumothorax": ("a pneumothorax", "pneumothorax"),
    "Pleural Effusion": ("a pleural effusion", "pleural effusion"),
    # CheXpert's "Pleural Other" is mostly pleural thickening/scarring; the answer phrase is one that
    # the labeler reads back as Pleural Other (metrics score answers with it).
    "Pleural Other": ("pleural thickening", "pleural thickening"),
    "Fracture": ("a fracture", "fracture"),
    "Support Devices": ("a support device", "support devices"),
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "presence": (
        "Is there {finding} in this chest X-ray?",
        "Does this image show {finding}?",
        "Can you see {finding} on this radiograph?",
        "Is there evidence of {finding}?",
        "Does this chest radiograph demonstrate {finding}?",
        "Is {finding} present in this image?",
    ),
    "normal": (
        "Is this chest X-ray normal?",
        "Is this a normal chest radiograph?",
        "Is this study within normal limits?",
        "Does this chest X-ray look normal?",
        "Would you call this radiograph normal?",
    ),
    "laterality": (
        "Which side is the {finding} on?",
        "Is the {finding} on the left, the right, or both sides?",
        "On which side do you see the {finding}?",
        "What is the laterality of the {finding}?",
        "Where is the {finding}: left, right, or bilateral?",
    ),
    "abnormalities": (
        "What abnormalities are seen in this chest X-ray?",
        "Which findings are present in this image?",
        "List the abnormal findings on this radiograph.",
        "What does this chest X-ray show?",
        "What are the abnormal findings in this image?",
    ),
    "heart_size": (
        "How is the heart size?",
        "Is the heart size normal or enlarged?",
        "Describe the size of the cardiac silhouette.",
        "What is the size of the heart on this image?",
        "Does the heart appear normal in size or enlarged?",
    ),
    "devices": (
        "Are there any support devices in this image?",
        "Are any tubes or lines visible?",
        "Is there a medical device on this chest X-ray?",
        "Do you see any lines, tubes, or devices?",
        "Are support devices present on this radiograph?",
    ),
}

_SIDE_ANSWER = {Side.LEFT: "left", Side.RIGHT: "right", Side.BILATERAL: "bilateral"}
# Findings a presence question may be about ("No Finding" is asked with the "normal" phrasings).
ASKABLE: tuple[str, ...] = ("No Finding", *_PHRASE)


def qa_seed(image_id: str, seed: int) -> int:
    """A per-image seed that is stable across runs and machines (unlike ``hash``)."""
    return zlib.crc32(f"{seed}:{image_id}".encode())


def _as_mentions(labels: Mapping[str, Mention | int]) -> dict[str, Mention]:
    return {name: Mention(int(value)) for name, value in labels.items()}


def _presence_question(rng: random.Random, finding: str, answer: str) -> QA:
    if finding == "No Finding":
        return QA(rng.choice(TEMPLATES["normal"]), answer, "presence", finding)
    question = rng.choice(TEMPLATES["presence"]).format(finding=_PHRASE[finding][0])
    return QA(question[0].upper() + question[1:], answer, "presence", finding)


def _presence_pairs(
    rng: random.Random, labels: dict[str, Mention], askable: Sequence[str], pairs: int
) -> list[QA]:
    present = [f for f in askable if labels.get(f) is Mention.POSITIVE]
    absent = [f for f in askable if f not in labels or labels[f] is Mention.NEGATIVE]
    if "No Finding" in absent and "No Finding" not in labels and not present:
        absent.remove("No Finding")  # nothing positive and no "normal" label: normality is unknown
    n = min(len(present), len(absent), pairs)
    chosen = [(f, "yes") for f in rng.sample(present, n)] + [(f, "no") for f in rng.sample(absent, n)]
    rng.shuffle(chosen)
    return [_presence_question(rng, f, answer) for f, answer in chosen]


def generate_qa(
    labels: Mapping[str, Mention | int],
    sides: Mapping[str, Side | int] | None = None,
    seed: int = 0,
    *,
    pairs: int = 2,
    askable: Sequence[str] = ASKABLE,
    kinds: Sequence[str] = ("presence", "laterality", "abnormalities", "heart_size", "devices"),
) -> list[QA]:
    """QA pairs about one image from its labels (CheXpert names -> Mention) and sides.

    ``pairs``: at most this many yes/no presence pairs; ``askable``: the findings a presence or
    abnormality question may name (e.g. only those a renderer draws).
    """
    rng = random.Random(seed)
    mentions = _as_mentions(labels)
    side_of = {name: Side(int(s)) for name, s in (sides or {}).items()}
    out: list[QA] = []
    if "presence" in kinds:
        out += _presence_pairs(rng, mentions, askable, pairs)
    if "laterality" in kinds:
        lateral = [
            f
            for f in askable
            if mentions.get(f) is Mention.POSITIVE
            and f in side_of
            and f in _PHRASE
            and f != "Support Devices"
        ]
        if lateral:
            finding = rng.choice(lateral)
            question = rng.choice(TEMPLATES["laterality"]).format(finding=_PHRASE[finding][1])
            out.append(QA(question, _SIDE_ANSWER[side_of[finding]], "laterality", finding))
    if "abnormalities" in kinds and mentions:
        found = [
            _PHRASE[f][1]
            for f in CHEXPERT_14
            if f in _PHRASE
            and f != "Support Devices"
            and f in askable
            and mentions.get(f) is Mention.POSITIVE
        ]
        if found or mentions.get("No Finding") is Mention.POSITIVE:
            answer = ", ".join(found) if found else "no abnormality"
            out.append(QA(rng.choice(TEMPLATES["abnormalities"]), answer, "abnormalities"))
    if "heart_size" in kinds:
        heart = mentions.get("Cardiomegaly")
        if (
            heart is Mention.POSITIVE
            or heart is Mention.NEGATIVE
            or mentions.get("No Finding") is Mention.POSITIVE
        ):
            answer = "enlarged" if heart is Mention.POSITIVE else "normal"
            out.append(QA(rng.choice(TEMPLATES["heart_size"]), answer, "heart_size", "Cardiomegaly"))
    if "devices" in kinds and "Support Devices" in askable and mentions:
        answer = "yes" if mentions.get("Support Devices") is Mention.POSITIVE else "no"
        if mentions.get("Support Devices") is not Mention.UNCERTAIN:
            out.append(QA(rng.choice(TEMPLATES["devices"]), answer, "devices", "Support Devices"))
    return out


def write_vqa_jsonl(path: str | Path, records: Iterable[CXRRecord]) -> int:
    """Write every record's QA pairs, one JSON object per line (image_id, question, answer, kind,
    finding), atomically. Returns the number of pairs written."""
    lines = []
    for record in records:
        for qa in record.qa:
            row = {"image_id": record.image_id, "question": qa.question, "answer": qa.answer}
            row |= {"kind": qa.kind, "finding": qa.finding}
            lines.append(json.dumps(row))
    atomic.write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_vqa_jsonl(path: str | Path) -> dict[str, list[QA]]:
    """The inverse of ``write_vqa_jsonl``: image_id -> its QA pairs, in file order."""
    by_image: dict[str, list[QA]] = {}
    for number, row in enumerate(read_jsonl(path), 1):
        try:
            qa = QA(row["question"], row["answer"], row["kind"], row.get("finding"))
            by_image.setdefault(row["image_id"], []).append(qa)
        except (KeyError, TypeError) as err:
            raise BadInputError(
                path, f"line {number} is not a VQA pair ({err})", "expected image_id, question, answer, kind"
            ) from err
    return by_image
