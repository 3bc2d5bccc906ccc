"""Generation stages of ``llmcxr eval run``: reports, images and answers for a split, resumable by batch."""

from __future__ import annotations

import time
from collections.abc import Sequence

from llmcxr import atomic
from llmcxr.evaluation.config import EvalRunConfig
from llmcxr.evaluation.run_folder import (
    RunFolder,
    contiguous_batches,
    png_bytes,
    read_jsonl_rows,
    write_jsonl_rows,
)
from llmcxr.records import QA, CXRRecord


def _sampling(config: EvalRunConfig, kind: str, max_new_tokens: int, seed: int):
    from llmcxr.generation import SamplingConfig

    return SamplingConfig(
        do_sample=kind == "top-p", top_p=config.top_p, max_new_tokens=max_new_tokens, seed=seed
    )


def generate_reports(
    llm, items: Sequence[CXRRecord], config: EvalRunConfig, folder: RunFolder, advance
) -> int:
    """CXR -> report for every item not in reports.jsonl yet; returns how many were generated."""
    done = read_jsonl_rows(folder.reports, "image_id")
    todo = [i for i, r in enumerate(items) if r.image_id not in done]
    advance(len(items) - len(todo))
    for batch in contiguous_batches(todo, config.batch_size):
        started = time.perf_counter()
        sampling = _sampling(config, config.reports_sampled, config.max_report_tokens, config.seed + batch[0])
        results = llm.report(
            [items[i].image_path for i in batch],
            sampling=sampling,
            batch_size=config.batch_size,  # drafts per forward pass: batch_size // k images at a time
            guidance_scale=config.report_guidance_scale,
            candidates=config.report_candidates,
        )
        for i, result in zip(batch, results, strict=True):
            done[items[i].image_id] = {
                "image_id": items[i].image_id,
                "report": result.text,
                "stopped": result.stopped,
            }
        write_jsonl_rows(folder.reports, list(done.values()))
        folder.add_seconds("reports", time.perf_counter() - started)
        advance(len(batch))
    return len(todo)


def generate_images(
    llm, items: Sequence[CXRRecord], config: EvalRunConfig, folder: RunFolder, advance
) -> int:
    """Report -> CXR for every item without generated/<image_id>.png; returns how many were generated."""
    todo = [i for i, r in enumerate(items) if not folder.generated_image(r.image_id).is_file()]
    advance(len(items) - len(todo))
    sampling = _sampling(config, config.image_sampling, 0, config.seed)
    for batch in contiguous_batches(todo, config.batch_size):
        started = time.perf_counter()
        results = llm.generate_image(
            [items[i].report for i in batch],
            guidance_scale=config.guidance_scale,
            seed=config.seed + batch[0],
            sampling=sampling,
            batch_size=config.batch_size,  # draws per forward pass: batch_size // k images at a time
            candidates=config.image_candidates,
        )
        for i, result in zip(batch, results, strict=True):
            atomic.write_bytes(folder.generated_image(items[i].image_id), png_bytes(result.image))
        folder.add_seconds("images", time.perf_counter() - started)
        advance(len(batch))
    return len(todo)


def vqa_items(items: Sequence[CXRRecord]) -> list[tuple[str, CXRRecord, QA]]:
    """(key, record, QA) for every VQA pair of the items, in order; key = "<image_id>#<n>"."""
    return [(f"{r.image_id}#{n}", r, qa) for r in items for n, qa in enumerate(r.qa)]


def generate_answers(
    llm, items: Sequence[CXRRecord], config: EvalRunConfig, folder: RunFolder, advance
) -> int:
    """An answer for every VQA pair not in vqa.jsonl yet; returns how many were generated."""
    asked = vqa_items(items)
    done = read_jsonl_rows(folder.vqa, "key")
    todo = [i for i, (key, _, _) in enumerate(asked) if key not in done]
    advance(len(asked) - len(todo))
    for batch in contiguous_batches(todo, config.batch_size):
        started = time.perf_counter()
        sampling = _sampling(config, config.text_sampling, config.max_answer_tokens, config.seed + batch[0])
        results = llm.answer(
            [asked[i][1].image_path for i in batch],
            [asked[i][2].question for i in batch],
            sampling=sampling,
            batch_size=len(batch),
        )
        for i, result in zip(batch, results, strict=True):
            key, record, qa = asked[i]
            done[key] = {
                "key": key,
                "image_id": record.image_id,
                "question": qa.question,
                "kind": qa.kind,
                "finding": qa.finding,
                "reference": qa.answer,
                "answer": result.text,
            }
        write_jsonl_rows(folder.vqa, list(done.values()))
        folder.add_seconds("vqa", time.perf_counter() - started)
        advance(len(batch))
    return len(todo)
