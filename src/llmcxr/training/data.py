"""Training data: records and instructions split for evaluation, drawn into the task mixture, encoded
and packed into rows (train set + one eval set per task)."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from llmcxr.datasets.instructions import Instruction
from llmcxr.errors import BadInputError
from llmcxr.prompt.dolly import INTRO_BLURB
from llmcxr.prompt.phrasings import PHRASINGS, phrasings_for
from llmcxr.records import CXRRecord
from llmcxr.training.config import TASKS, Mixture, TrainRecipe
from llmcxr.training.packing import PackedRow, pack_examples, single_rows
from llmcxr.training.tasks import SampleCounts, encode_samples, mix_tasks, select_stage, stage_report

EVAL_SPLITS = ("validate", "val", "valid", "validation")
DRAW_SEED_STRIDE = 1000  # mixture draw d uses seed + 1000 d (the eval samples use seed + 1)


class RowDataset(Dataset):
    """Packed (or single-example) rows as a map-style dataset."""

    def __init__(self, rows: Sequence[PackedRow]) -> None:
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> PackedRow:
        return self.rows[index]


def split_records(records: Sequence[CXRRecord]) -> tuple[list[CXRRecord], list[CXRRecord]]:
    """(train, eval): the records' own split when they have a validation split (else test), otherwise
    every 20th record is held out."""
    for wanted in (EVAL_SPLITS, ("test",)):
        held = [r for r in records if (r.split or "").lower() in wanted]
        if held:
            return [r for r in records if (r.split or "train").lower() == "train"], held
    return [r for i, r in enumerate(records) if i % 20 != 19], [
        r for i, r in enumerate(records) if i % 20 == 19
    ]


def split_instructions(items: Sequence[Instruction]) -> tuple[list[Instruction], list[Instruction]]:
    """Every 10th instruction is held out for the text task's eval loss."""
    return [x for i, x in enumerate(items) if i % 10 != 9], [x for i, x in enumerate(items) if i % 10 == 9]


def corpus_texts(records: Sequence[CXRRecord], instructions: Sequence[Instruction], stage: int) -> list[str]:
    """Text a from-scratch BPE is trained on: reports, QA, instructions and the prompt template."""
    texts = [INTRO_BLURB, "Input:\n", "\n\n"]
    texts += [p for phrasings in PHRASINGS.values() for p in phrasings]
    texts += [stage_report(r, stage) for r in records]
    texts += [f"{qa.question} {qa.answer}" for r in records for qa in r.qa]
    texts += [f"{x.instruction}\n{x.context}\n{x.response}" for x in instructions]
    return texts


def _rows(examples, recipe: TrainRecipe) -> list[PackedRow]:
    if recipe.packing:
        return pack_examples(examples, recipe.max_length, TASKS)
    return single_rows(examples, TASKS)


def build_datasets(recipe, records, instructions, tokenizer, image_tokens, stores):
    """(train dataset, {task: eval dataset}, SampleCounts of the training set)."""
    train_records, eval_records = split_records(select_stage(records, recipe.stage))
    train_text, eval_text = split_instructions(instructions)
    counts = SampleCounts()
    samples = [
        sample
        for draw in range(recipe.mixture_draws)
        for sample in mix_tasks(
            train_records,
            train_text,
            recipe.mixture,
            recipe.stage,
            recipe.seed + DRAW_SEED_STRIDE * draw,
            recipe.unconditional_fraction,
            recipe.unconditional_report_fraction,
            phrasings_for(image_tokens.prompt_layout),
        )
    ]
    train_examples = encode_samples(samples, tokenizer, image_tokens, stores, recipe.max_length, counts)
    if not train_examples:
        raise BadInputError("recipe", "no training samples", "check the data sources and their token stores")
    evals: dict[str, RowDataset] = {}
    for task in TASKS:
        if getattr(recipe.mixture, task) <= 0:
            continue
        only = Mixture(**{t: float(t == task) for t in TASKS})
        task_samples = mix_tasks(
            eval_records if task != "text" else [],
            eval_text,
            only,
            recipe.stage,
            recipe.seed + 1,
            phrasings=phrasings_for(image_tokens.prompt_layout),
        )
        examples = encode_samples(
            task_samples[: recipe.eval_samples_per_task], tokenizer, image_tokens, stores, recipe.max_length
        )
        if examples:
            evals[task] = RowDataset(_rows(examples, recipe))
    return RowDataset(_rows(train_examples, recipe)), evals, counts
