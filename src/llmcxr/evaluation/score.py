"""Scoring stages of ``llmcxr eval run``: each task's systems (model, baselines, ceilings) scored with
intervals, and the headline that sets the model beside the best baseline and the targets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmcxr.evaluation.baselines import most_common_answers
from llmcxr.evaluation.config import SUPERVISED_BASELINES, TARGETS, EvalRunConfig
from llmcxr.evaluation.generate import vqa_items
from llmcxr.evaluation.run_folder import RunFolder, load_generated_images, read_jsonl_rows
from llmcxr.findings import CHEXPERT_14
from llmcxr.metrics.clinical import (
    LabelConvention,
    auroc_per_class,
    binarize_labels,
    label_reports,
)
from llmcxr.metrics.finding_classifier import (
    FindingClassifier,
    image_labels,
    load_record_images,
)
from llmcxr.metrics.intervals import (
    item_resamples,
    paired_difference,
    percentile_interval,
    report_f1_intervals,
)
from llmcxr.records import CXRRecord
from llmcxr.reports import Labeler


def score_images(
    systems: dict[str, torch.Tensor],
    reference: torch.Tensor,
    labels: Sequence[dict[str, int]],
    classifier: FindingClassifier,
    score_classes: Sequence[str],
    convention: LabelConvention,
    seed: int,
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Finding agreement (and FID/KID vs ``reference``, except for the reference itself) of each
    system's images; returns (scores by system, classifier probabilities by system)."""
    from llmcxr.metrics.images import FindingClassifierFeatures, fid_kid, finding_agreement

    network = FindingClassifierFeatures(classifier)
    scores: dict[str, dict] = {}
    probabilities: dict[str, np.ndarray] = {}
    for name, images in systems.items():
        probabilities[name] = classifier.predict(images).numpy()
        scores[name] = {
            "finding_agreement": finding_agreement(
                probabilities[name],
                labels,
                classifier.config.classes,
                convention,
                score_classes=score_classes,
            )
        }
        if images is not reference:
            scores[name]["distribution"] = fid_kid(images, reference, network, seed=seed)
    return scores, probabilities


def score_report_task(
    items: Sequence[CXRRecord],
    train: Sequence[CXRRecord],
    folder: RunFolder,
    classifier: FindingClassifier,
    labeler: Labeler,
    convention: LabelConvention,
    meteor: bool,
    seed: int = 0,
) -> dict:
    """CXR -> report: the model's reports and the report baselines, each scored against the items'
    reports, with bootstrap intervals (``intervals.py``) of the micro-F1-14s and of the model's margins."""
    from llmcxr.evaluation.files import report_baseline_predictions, score_reports

    reports = read_jsonl_rows(folder.reports, "image_id")
    systems = {"model": [reports[r.image_id]["report"] for r in items]}
    systems |= report_baseline_predictions(list(train), list(items), classifier)
    references = [r.report for r in items]
    reference_labels = label_reports(labeler, references)
    labels = {name: label_reports(labeler, predictions) for name, predictions in systems.items()}

    def chexpert_14(rows: Sequence[dict[str, int]]) -> np.ndarray:
        return binarize_labels(rows, CHEXPERT_14, convention)

    return {
        "n": len(items),
        "stopped_at_end": sum(bool(reports[r.image_id]["stopped"]) for r in items),
        "systems": {
            name: score_reports(
                predictions, references, labeler, convention, meteor, (labels[name], reference_labels)
            )
            for name, predictions in systems.items()
        },
        "intervals_micro_f1_14": report_f1_intervals(
            chexpert_14(reference_labels),
            {name: chexpert_14(rows) for name, rows in labels.items()},
            item_resamples(len(items), seed=seed),
        ),
    }


def score_image_task(
    items: Sequence[CXRRecord],
    config: EvalRunConfig,
    folder: RunFolder,
    classifier: FindingClassifier,
    vq,
    mode_image: torch.Tensor,
    convention: LabelConvention,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Report -> CXR: the generated images, the mode-map baseline and the two ceilings (the items' own
    images, their VQ round trips), plus the VQ-GAN's finding preservation; and the classifier's
    probabilities by system (for the ROC plot)."""
    from llmcxr.evaluation.files import drawn_findings, vq_round_trip
    from llmcxr.metrics.images import preservation_of_probabilities

    size = classifier.config.image_size
    device = next(vq.parameters()).device
    reference = load_record_images(items, size)
    originals = load_record_images(items, vq.cfg.resolution)
    round_trips = vq_round_trip(vq, originals.to(device)).cpu()
    manifest = Path(config.data) / "manifest.jsonl"
    drawn = [c for c in drawn_findings(manifest) if c in classifier.config.classes]
    systems = {
        "model": load_generated_images([folder.generated_image(r.image_id) for r in items], size),
        "mode_token_map": mode_image[None].expand(len(items), -1, -1, -1).contiguous(),
        "vq_round_trip": round_trips,
        "reference_images": reference,
    }
    labels = [r.labels for r in items]
    scores, probabilities = score_images(
        systems, reference, labels, classifier, drawn, convention, config.seed
    )
    drawn_labels = [image_labels(r) for r in items]
    on_originals = classifier.predict(originals).numpy()  # at the VQ-GAN's resolution, as the round trips
    preservation = preservation_of_probabilities(
        on_originals,
        probabilities["vq_round_trip"],
        drawn_labels,
        classifier.config.classes,
        drawn,
        convention,
    )
    columns = [classifier.config.classes.index(c) for c in drawn]
    rows = item_resamples(len(items), seed=config.seed)

    def macro(probs: np.ndarray, targets: np.ndarray):  # row indices -> macro-AUROC of those items
        return lambda r: auroc_per_class(probs[r][:, columns], targets[r], drawn)["macro_auroc"]

    report_targets = binarize_labels(labels, drawn, convention)
    drawn_targets = binarize_labels(drawn_labels, drawn, convention)
    intervals = {
        "model_macro_auroc_drawn": percentile_interval(macro(probabilities["model"], report_targets), rows),
        "preservation_auroc_drop": paired_difference(
            macro(on_originals, drawn_targets), macro(probabilities["vq_round_trip"], drawn_targets), rows
        ),
    }
    section = {
        "n": len(items),
        "guidance_scale": config.guidance_scale,
        "image_sampling": config.image_sampling,
        "image_candidates": config.image_candidates,
        "scored_findings": drawn,
        "labels": "the CheXpert labels of the report each image was generated from",
        "systems": scores,
        "finding_preservation": {
            "labels": "what the renderer drew (report labels less extra.undrawn)",
            **preservation,
        },
        "intervals": intervals,
    }
    return section, probabilities


def score_vqa_task(items: Sequence[CXRRecord], train: Sequence[CXRRecord], folder: RunFolder) -> dict:
    """VQA accuracy by question kind of the model's answers and of the most-common-answer baseline."""
    from llmcxr.metrics.vqa import vqa_accuracy

    answers = read_jsonl_rows(folder.vqa, "key")
    asked = vqa_items(items)
    qas = [qa for _, _, qa in asked]
    return {
        "systems": {
            "model": vqa_accuracy([answers[key]["answer"] for key, _, _ in asked], qas),
            "most_common_answer": vqa_accuracy(most_common_answers(train, qas), qas),
        }
    }


def headline(result: dict) -> dict:
    headline: dict[str, Any] = {}
    reports = result.get("cxr_to_report")
    if reports:
        model = reports["systems"]["model"]["clinical"]["micro_f1_14"]
        baselines = {k: v["clinical"]["micro_f1_14"] for k, v in reports["systems"].items() if k != "model"}
        best = max(baselines, key=baselines.get)
        margin = model - baselines[best]
        label_free = {k: v for k, v in baselines.items() if k not in SUPERVISED_BASELINES}
        best_free = max(label_free, key=label_free.get)
        intervals = reports.get("intervals_micro_f1_14", {})
        headline["cxr_to_report"] = {
            "micro_f1_14": model,
            "micro_f1_14_95ci": intervals.get("micro_f1", {}).get("model"),
            "best_baseline": best,
            "best_baseline_micro_f1_14": baselines[best],
            "margin": margin,
            "margin_95ci": intervals.get("margin", {}).get(best),
            "best_label_free_baseline": best_free,
            "margin_over_label_free": model - label_free[best_free],
            "margin_over_label_free_95ci": intervals.get("margin", {}).get(best_free),
            "target_margin": TARGETS["report_micro_f1_14_margin_over_best_baseline"],
            "meets_target": margin >= TARGETS["report_micro_f1_14_margin_over_best_baseline"],
        }
    images = result.get("report_to_cxr")
    if images:
        systems = images["systems"]
        auroc = systems["model"]["finding_agreement"]["macro_auroc"]
        headline["report_to_cxr"] = {
            "macro_auroc_drawn": auroc,
            "macro_auroc_drawn_95ci": images.get("intervals", {}).get("model_macro_auroc_drawn"),
            "baseline_macro_auroc_drawn": systems["mode_token_map"]["finding_agreement"]["macro_auroc"],
            "ceiling_macro_auroc_drawn": systems["reference_images"]["finding_agreement"]["macro_auroc"],
            "fid": systems["model"]["distribution"]["fid"],
            "baseline_fid": systems["mode_token_map"]["distribution"]["fid"],
            "target": TARGETS["image_macro_auroc_drawn"],
            "meets_target": auroc is not None and auroc >= TARGETS["image_macro_auroc_drawn"],
        }
        preservation = images["finding_preservation"]
        drop = preservation["auroc_drop"]
        headline["finding_preservation"] = {
            "original_macro_auroc": preservation["original_macro_auroc"],
            "round_trip_macro_auroc": preservation["round_trip_macro_auroc"],
            "auroc_drop": drop,
            "auroc_drop_95ci": images.get("intervals", {}).get("preservation_auroc_drop"),
            "target_drop_max": TARGETS["preservation_auroc_drop_max"],
            "meets_target": drop is not None and drop <= TARGETS["preservation_auroc_drop_max"],
        }
    vqa = result.get("vqa")
    if vqa:
        headline["vqa"] = {
            "accuracy": vqa["systems"]["model"]["accuracy"],
            "baseline_accuracy": vqa["systems"]["most_common_answer"]["accuracy"],
        }
    return headline
