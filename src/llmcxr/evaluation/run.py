"""``llmcxr eval run``: generate for every task on a split, score it beside the baselines, write the report.

On a synthetic world (``llmcxr data synth``) and a model folder (``llmcxr train``):

1. CXR -> report for each image of the split, report -> CXR for each of its reports (classifier-free
   guidance), an answer for each of its VQA pairs. Text instructions have no reference to score
   against and are not run.
2. Baselines from the world's train split, scored with the same metrics: the most common report,
   nearest-neighbour retrieval (by pixels and by the finding classifier's features), for images the
   VQ-GAN decoding of the training token grids' per-position mode ("mean" image in token space), for
   VQA the most common training answer to each question. Ceilings beside them: the split's own images
   and their VQ round trips, scored like generated ones.
3. Scores: CheXpert F1 (micro/macro, 14 and 5 classes, per class) and language scores for reports;
   finding agreement (per class AUROC/F1, macro-AUROC over the findings the renderer draws) and
   FID/KID vs the split's images in the finding classifier's features for images; VQA accuracy by
   question kind; the finding preservation of the model's VQ-GAN.

Resumable: generation writes its results per batch (JSONL rewritten atomically, one PNG per image),
and a restart skips what is there. Row i of the split samples with seed ``seed + i`` whatever the
batch size or the point of interruption, so a resumed run equals an uninterrupted one. What the
generated files depend on is saved in ``eval_config.json``; a run with other settings in the same
folder is refused unless ``restart`` clears it first. Scores and the report are recomputed on every
run (seconds). Folder layout (``docs/evaluation.md``)::

    out/eval_config.json               the config and what the generated files depend on
    out/classifier/                    the finding classifier trained here (none given)
    out/reports.jsonl                  {image_id, report, stopped}
    out/generated/<image_id>.png       report -> CXR
    out/vqa.jsonl                      {key, image_id, question, kind, finding, reference, answer}
    out/baselines/mode_token_map.png   (the training images' codes: cache_dir()/train-tokens/, shared)
    out/timings.json                   generation seconds per stage, summed over invocations
    out/eval.json, out/eval.md, out/f1_per_class.png, out/roc_curves.png, out/samples.png
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmcxr import atomic
from llmcxr.config import to_dict
from llmcxr.errors import BadInputError
from llmcxr.evaluation.baselines import mode_token_image
from llmcxr.evaluation.config import GENERATION_KEYS, LATER_GENERATION_KEYS, TARGETS, TASKS, EvalRunConfig
from llmcxr.evaluation.generate import generate_answers, generate_images, generate_reports, vqa_items
from llmcxr.evaluation.markdown import render_markdown
from llmcxr.evaluation.plots import write_run_plots
from llmcxr.evaluation.run_folder import (
    RunFolder,
    model_weights,
    progress_bars,
    safe_image_id,
)
from llmcxr.evaluation.score import headline, score_image_task, score_report_task, score_vqa_task
from llmcxr.hashing import file_sha256
from llmcxr.metrics.clinical import (
    LabelConvention,
    labeler_name,
)
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    FindingClassifier,
    load_finding_classifier,
    read_train_summary,
    torch_threads,
)
from llmcxr.records import CXRRecord
from llmcxr.reports import RuleLabeler


def _records(config: EvalRunConfig) -> tuple[list[CXRRecord], list[CXRRecord]]:
    from llmcxr.datasets.synthetic import read_synthetic_world

    records = read_synthetic_world(config.data)
    train = [r for r in records if r.split == "train"]
    items = [r for r in records if r.split == config.split][: config.limit]
    if not train or len(items) < 2:
        raise BadInputError(
            config.data,
            f"needs train records and at least 2 {config.split!r} records, found {len(train)} and {len(items)}",
            "pick a split the world has (train/validate/test) or build a larger world",
        )
    for record in items:
        safe_image_id(record.image_id)
    return train, items


def _finding_classifier(
    config: EvalRunConfig, folder: RunFolder, log: Callable[[str], None]
) -> tuple[FindingClassifier, dict]:
    """The given classifier, else the one trained here (cached), else train it now."""
    from llmcxr.evaluation.files import train_classifier_on_world

    if config.classifier is not None:
        return load_finding_classifier(config.classifier), {"source": str(config.classifier)}
    summary = read_train_summary(folder.classifier)
    if not summary:  # the summary is written last: its absence means no finished classifier here
        log(
            f"training the finding classifier on {config.data} (train split, {config.classifier_steps} steps)"
        )
        started = time.perf_counter()
        train = ClassifierTrainConfig(steps=config.classifier_steps, seed=config.seed)
        summary = train_classifier_on_world(config.data, folder.classifier, train=train, log=log)
        folder.add_seconds("classifier", time.perf_counter() - started)
    return load_finding_classifier(folder.classifier), {
        "source": f"trained by this run on {config.data} (train split), {folder.classifier}",
        "train_seconds": summary.get("train_seconds"),
        "eval_macro_auroc": (summary.get("eval_auroc") or {}).get("macro_auroc"),
    }


def run_evaluation(config: EvalRunConfig, show_progress: bool = True) -> dict:
    """Generate, score and report (see the module docstring); returns what eval.json holds."""
    from llmcxr.generation import LLMCXR
    from llmcxr.metrics.images import FindingClassifierFeatures, network_identity

    config.check()
    started_all = time.perf_counter()
    seconds: dict[str, float] = {}
    train, items = _records(config)
    model_dir = Path(config.model)
    if not model_dir.is_dir():
        raise BadInputError(model_dir, "model folder not found", "give the folder `llmcxr train` wrote")
    config = config.with_recommended_guidance()
    world_summary = json.loads((Path(config.data) / "world.json").read_text(encoding="utf-8"))
    model_sha = file_sha256(model_weights(model_dir))
    identity = {k: to_dict(config)[k] for k in GENERATION_KEYS}
    identity |= {
        k: getattr(config, k) for k, default in LATER_GENERATION_KEYS.items() if getattr(config, k) != default
    }
    identity["model_weights_sha256"] = model_sha
    identity["world"] = world_summary.get("config")
    if config.classifier is not None:  # scoring only: nothing generated here depends on it
        del identity["classifier_steps"]
    folder = RunFolder(config.out)
    folder.claim(config, identity)
    convention = LabelConvention(config.uncertain)
    labeler = RuleLabeler()
    generated_now: dict[str, int] = {}

    with (
        torch_threads(config.threads) if config.threads > 0 else nullcontext(),
        progress_bars(show_progress) as bars,
    ):
        log = bars.console.print
        start = time.perf_counter()
        classifier, classifier_info = _finding_classifier(config, folder, log)
        seconds["classifier"] = time.perf_counter() - start

        start = time.perf_counter()
        llm = LLMCXR.from_pretrained(model_dir, device=config.device)
        vq = llm.vq
        if vq is None:
            raise BadInputError(
                model_dir, "has no vq/ subfolder (VQ-GAN)", "export the model with its VQ-GAN"
            )
        seconds["load_model"] = time.perf_counter() - start

        def bar(description: str, total: int):
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)

        n_vqa = len(vqa_items(items))
        stages = [
            ("report", "reports", "CXR -> report", len(items), generate_reports),
            ("image", "images", "report -> CXR", len(items), generate_images),
            ("vqa", "vqa", "VQA", n_vqa, generate_answers),
        ]
        for task, stage, description, total, generate in stages:
            if task in config.tasks:
                start = time.perf_counter()
                generated_now[stage] = generate(llm, items, config, folder, bar(description, total))
                seconds[stage] = time.perf_counter() - start

        start = time.perf_counter()
        mode_image = None
        if "image" in config.tasks:
            mode_image = mode_token_image(
                vq, model_dir / "vq", train, folder, config.batch_size, bar("encode train images", len(train))
            )
        seconds["baselines"] = time.perf_counter() - start

        start = time.perf_counter()
        log("scoring")
        network = network_identity(FindingClassifierFeatures(classifier))
        result: dict[str, Any] = {
            "kind": "llmcxr-eval-run",
            "model": {
                "folder": str(model_dir),
                "parameters": int(sum(p.numel() for p in llm.model.parameters())),
                "weights_sha256": model_sha,
                "tokens_per_image": llm.image_tokens.tokens_per_image,
                "codebook_size": llm.image_tokens.codebook_size,
                "vq_resolution": vq.cfg.resolution,
            },
            "data": {
                "world": str(config.data),
                "world_config": world_summary.get("config"),
                "split": config.split,
                "n_items": len(items),
                "n_train": len(train),
                "n_vqa": n_vqa,
            },
            "config": to_dict(config),
            "labeler": labeler_name(labeler),
            "convention": convention.describe(),
            "feature_network": {**network, **classifier_info},
        }
        if "report" in config.tasks:
            result["cxr_to_report"] = {
                "guidance_scale": config.report_guidance_scale,
                "sampling": config.reports_sampled,
                "candidates": config.report_candidates,
                **score_report_task(
                    items, train, folder, classifier, labeler, convention, config.meteor, config.seed
                ),
            }
        probabilities: dict[str, np.ndarray] = {}
        if "image" in config.tasks:
            result["report_to_cxr"], probabilities = score_image_task(
                items, config, folder, classifier, vq, mode_image, convention
            )
        if "vqa" in config.tasks:
            result["vqa"] = score_vqa_task(items, train, folder)
        result["headline"] = headline(result)
        result["targets"] = TARGETS
        seconds["scoring"] = time.perf_counter() - start

        start = time.perf_counter()
        write_run_plots(
            result,
            items,
            folder,
            probabilities,
            classifier.config.classes,
            convention,
            mode_image,
            config.samples,
        )
        seconds["plots"] = time.perf_counter() - start

    seconds["total"] = time.perf_counter() - started_all
    result["generated_this_run"] = generated_now
    generation_seconds = folder.timings()
    result["timings"] = {
        "this_run_s": {k: round(v, 2) for k, v in seconds.items()},
        "generation_s_all_runs": generation_seconds,
        "items_per_s": {
            stage: round(_count(result, stage) / s, 3)
            for stage, s in generation_seconds.items()
            if s > 0 and _count(result, stage)
        },
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "device": str(llm.device),
            "dtype": str(llm.model.dtype),
            "torch_threads": torch.get_num_threads() if config.threads <= 0 else config.threads,
        },
    }
    written = ("eval.json", "eval.md", "f1_per_class.png", "roc_curves.png", "samples.png")
    result["files"] = [
        str(folder.out / name) for name in written if name.startswith("eval") or (folder.out / name).is_file()
    ]
    atomic.write_json(folder.out / "eval.json", result)
    atomic.write_text(folder.out / "eval.md", render_markdown(result))
    return result


def _count(result: dict, stage: str) -> int:
    data = result["data"]
    return {
        "reports": data["n_items"],
        "images": data["n_items"],
        "vqa": data["n_vqa"],
        "baseline_tokens": data["n_train"],
    }.get(stage, 0)


__all__ = ["EvalRunConfig", "TASKS", "render_markdown", "run_evaluation"]
