"""Records -> task samples -> tokenized examples: stage selection, the task mixture, truncation counts.

Tasks (LLM-CXR, Lee et al. 2023, Sec. 3):
- ``report_generation``: CXR -> report (image block in the input, report in the response);
- ``image_generation``: report -> CXR (report in the input, 256 image tokens in the response);
- a fraction of either carries an empty input (no report, no image), so that generation can use
  classifier-free guidance (Ho & Salimans 2022; the unconditional prompt is the same one with
  ``Input:`` left empty; ``llmcxr.generation.guidance``);
- ``vqa``: the question is the instruction, the CXR the input, the answer the response;
- ``text``: plain Dolly-style instructions that keep the language ability.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmcxr.datasets.instructions import Instruction
from llmcxr.model.vocab import ImageTokenMap
from llmcxr.prompt.dolly import IMAGE_PLACEHOLDER, NULL_REPORT, PromptParts
from llmcxr.prompt.examples import Example, Field, encode_parts
from llmcxr.prompt.phrasings import PHRASINGS
from llmcxr.records import CXRRecord
from llmcxr.training.config import TASKS, Mixture

FRONTAL_VIEWS = ("PA", "AP")


@dataclass
class TaskSample:
    """One sample before tokenization: prompt text with ``<image>`` where the image's tokens go."""

    task: str
    parts: PromptParts
    image_id: str | None = None  # token-store key of the image, if the sample has one
    image_field: Field | None = None  # "input" or "response": the part holding the image
    shorten_field: Field | None = None  # the report part, cut when the sample is too long


@dataclass
class SampleCounts:
    """What happened to samples on the way to tokens, per task (reported in the training log)."""

    kept: Counter = field(default_factory=Counter)
    shortened: Counter = field(default_factory=Counter)  # kept, with the report cut to fit max_length
    dropped_too_long: Counter = field(default_factory=Counter)
    dropped_no_tokens: Counter = field(default_factory=Counter)  # image not in the token store

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {name: dict(getattr(self, name)) for name in self.__dataclass_fields__}


def is_frontal(record: CXRRecord) -> bool:
    """PA or AP; a record with no view (a manifest without one) is taken as frontal."""
    return record.view is None or record.view.upper() in FRONTAL_VIEWS


def earliest_study_per_patient(records: Sequence[CXRRecord]) -> list[CXRRecord]:
    """Records of each patient's earliest study (by study_date, then study_id); records without a
    patient id count as their own patient."""
    first: dict[str, tuple[str, str]] = {}
    for r in records:
        patient = r.patient_id or f"record:{r.image_id}"
        key = (r.study_date or "", r.study_id or r.image_id)
        if patient not in first or key < first[patient]:
            first[patient] = key
    return [
        r
        for r in records
        if first[r.patient_id or f"record:{r.image_id}"] == (r.study_date or "", r.study_id or r.image_id)
    ]


def stage_report(record: CXRRecord, stage: int) -> str:
    """The report text a stage trains on: stage 1 findings + impression, stage 2 impression only."""
    return record.report if stage == 1 else record.impression.strip()


def select_stage(records: Sequence[CXRRecord], stage: int) -> list[CXRRecord]:
    """Stage 1: frontal images with a report. Stage 2 (the paper's fine-tuning stage): PA/AP only,
    each patient's earliest study, and an impression to train on."""
    if stage == 1:
        return [r for r in records if is_frontal(r) and stage_report(r, 1)]
    chosen = [r for r in records if r.view is not None and r.view.upper() in FRONTAL_VIEWS]
    return [r for r in earliest_study_per_patient(chosen) if stage_report(r, 2)]


def _image_sample(
    task: str,
    record: CXRRecord,
    stage: int,
    rng: random.Random,
    uncond: float,
    uncond_report: float,
    phrasings: dict[str, tuple[str, ...]],
) -> TaskSample:
    instruction = rng.choice(phrasings[task])
    report = stage_report(record, stage)
    if task == "report_generation":
        if uncond_report > 0 and rng.random() < uncond_report:  # no draw at 0: old recipes keep their samples
            return TaskSample(task, PromptParts(instruction, NULL_REPORT, report), None, None, "response")
        parts = PromptParts(instruction, IMAGE_PLACEHOLDER, report)
        return TaskSample(task, parts, record.image_id, "input", "response")
    if rng.random() < uncond:
        report = NULL_REPORT
    parts = PromptParts(instruction, report, IMAGE_PLACEHOLDER)
    return TaskSample(task, parts, record.image_id, "response", "input" if report else None)


def _vqa_sample(record: CXRRecord, rng: random.Random) -> TaskSample:
    qa = rng.choice(record.qa)
    return TaskSample("vqa", PromptParts(qa.question, IMAGE_PLACEHOLDER, qa.answer), record.image_id, "input")


def _text_sample(item: Instruction) -> TaskSample:
    return TaskSample("text", PromptParts(item.instruction, item.context or None, item.response))


def mix_tasks(
    records: Sequence[CXRRecord],
    instructions: Sequence[Instruction],
    mixture: Mixture,
    stage: int,
    seed: int,
    unconditional_fraction: float = 0.0,
    unconditional_report_fraction: float = 0.0,
    phrasings: dict[str, tuple[str, ...]] = PHRASINGS,
) -> list[TaskSample]:
    """One epoch of samples: every record once, as one image task drawn by the mixture weights
    (VQA only for records that have QA), plus text samples in the ratio text : image tasks
    (drawn without repeats until the instruction set runs out, then again: the paper's
    ``interleave_datasets(..., stopping_strategy="all_exhausted")``). Shuffled, deterministic in ``seed``.
    ``phrasings``: the instruction lists of the model's prompt layout (``llmcxr.prompt.phrasings_for``)."""
    rng = random.Random(seed)
    weights = {t: float(getattr(mixture, t)) for t in TASKS}
    image_tasks = [t for t in ("report_generation", "image_generation", "vqa") if weights[t] > 0]
    samples: list[TaskSample] = []
    for record in records:
        allowed = [t for t in image_tasks if t != "vqa" or record.qa]
        if not allowed:
            continue
        task = rng.choices(allowed, weights=[weights[t] for t in allowed])[0]
        samples.append(
            _vqa_sample(record, rng)
            if task == "vqa"
            else _image_sample(
                task, record, stage, rng, unconditional_fraction, unconditional_report_fraction, phrasings
            )
        )
    image_weight = sum(weights[t] for t in image_tasks)
    if instructions and weights["text"] > 0:
        wanted = round(len(samples) * weights["text"] / image_weight) if image_weight else len(instructions)
        order: list[Instruction] = []
        while len(order) < wanted:
            order += rng.sample(list(instructions), len(instructions))
        samples += [_text_sample(item) for item in order[:wanted]]
    rng.shuffle(samples)
    return samples


def encode_samples(
    samples: Sequence[TaskSample],
    tokenizer,
    image_tokens: ImageTokenMap,
    token_store,
    max_length: int,
    counts: SampleCounts | None = None,
) -> list[Example]:
    """Tokenize ``samples``; images come from ``token_store`` (``llmcxr.vq.TokenStore`` or any
    mapping-like object with ``in`` and ``get``). Dropped samples are counted in ``counts``."""
    counts = counts if counts is not None else SampleCounts()
    examples: list[Example] = []
    tokenizer = MemoTokenizer(tokenizer)  # the intro, phrasings and headers recur in every sample
    for sample in samples:
        codes = None
        if sample.image_id is not None:
            if sample.image_id not in token_store:
                counts.dropped_no_tokens[sample.task] += 1
                continue
            codes = token_store.get(sample.image_id)
        example = encode_parts(
            sample.parts,
            tokenizer,
            image_tokens,
            image_codes=codes,
            image_field=sample.image_field,
            max_length=max_length,
            shorten_field=sample.shorten_field,
            task=sample.task,
        )
        if example is None:
            counts.dropped_too_long[sample.task] += 1
            continue
        counts.kept[sample.task] += 1
        counts.shortened[sample.task] += int(example.shortened)
        examples.append(example)
    return examples


class MemoTokenizer:
    """A tokenizer that remembers the ids of each text it has tokenized (and hands out copies, since
    callers extend and cut the lists); anything else goes to the tokenizer it wraps."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: dict[tuple, list[int]] = {}

    def __call__(self, text: str, **kwargs):
        key = (text, *sorted(kwargs.items()))
        if key not in self.ids:
            self.ids[key] = self.tokenizer(text, **kwargs)["input_ids"]
        return {"input_ids": list(self.ids[key])}

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)
