"""``llmcxr eval reports --protocol rexrank`` and ``eval images --protocol chexgenbench`` on files:
read the predictions, score them with ``llmcxr.metrics.protocols`` / ``metrics.chexgenbench``, and say
plainly which metrics ran and which did not (and why)."""

from __future__ import annotations

import time
from pathlib import Path

from llmcxr.evaluation.prediction_files import pair_by_id, report_text, rows_for_ids
from llmcxr.metrics.chexgenbench import chexgenbench_scores
from llmcxr.metrics.protocols import ReXrankWeights, rexrank_report_scores

PROTOCOLS = {"reports": ("llmcxr", "rexrank"), "images": ("llmcxr", "chexgenbench")}


def report_pairs(
    pred_path: str | Path, ref_path: str | Path | None
) -> tuple[list[str], list[str], list[str]]:
    """(ids, predictions, references): a ReXrank prediction JSON alone (``model_prediction`` vs
    ``section_findings``), or a predictions file and a references file paired by id."""
    if ref_path is None:
        from llmcxr.datasets.rexrank import rexrank_pairs

        return rexrank_pairs(pred_path)
    pairs = pair_by_id(pred_path, ref_path)
    return (
        [study for study, _, _ in pairs],
        [report_text(pred, pred_path) for _, pred, _ in pairs],
        [report_text(ref, ref_path) for _, _, ref in pairs],
    )


def evaluate_reports_rexrank(
    pred_path: str | Path, ref_path: str | Path | None, weights: ReXrankWeights = ReXrankWeights()
) -> dict[str, object]:
    """The ReXrank metric set of a predictions file (see ``report_pairs``)."""
    ids, predictions, references = report_pairs(pred_path, ref_path)
    started = time.perf_counter()
    result = rexrank_report_scores(predictions, references, weights)
    return {
        "task": "cxr_to_report",
        "predictions": str(pred_path),
        "references": str(ref_path) if ref_path else "section_findings of the same file",
        "study_ids": len(ids),
        **result,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _image_files(folder: str | Path) -> dict[str, Path]:
    from llmcxr.evaluation.files import image_entries

    return dict(image_entries(folder))


def image_prompts(image_files: dict[str, Path], prompts: str | Path) -> list[str]:
    """Each image's prompt (its source report), in the images' order; an image without one is an error."""
    rows = rows_for_ids(prompts, list(image_files), "generated image(s) have no prompt", "give one per image")
    return [report_text(row, prompts) for row in rows]


def evaluate_images_chexgenbench(
    generated: str | Path,
    reference: str | Path,
    rad_dino: str | Path | None,
    inception_weights: str | Path | None = None,
    biovil_t: str | Path | None = None,
    prompts: str | Path | None = None,
) -> dict[str, object]:
    """CheXGenBench's metrics of every generated image vs every reference image (distributions: no
    pairing); with ``prompts`` (JSONL/CSV: each generated image's id and report) and a BioViL-T folder,
    the image-text alignment of each generated image with its own prompt."""
    generated_files, reference_files = _image_files(generated), _image_files(reference)
    started = time.perf_counter()
    result = chexgenbench_scores(
        list(generated_files.values()),
        list(reference_files.values()),
        rad_dino,
        inception_weights,
        biovil_t=biovil_t,
        prompts=None if prompts is None else image_prompts(generated_files, prompts),
    )
    return {
        "task": "report_to_cxr",
        "generated": str(generated),
        "reference": str(reference),
        **result,
        "seconds": round(time.perf_counter() - started, 2),
    }


def protocol_rows(result: dict) -> tuple[dict[str, object], dict[str, str]]:
    """({metric: value}, {metric: why not run}) of a protocol result, for a table."""
    values, not_run = {}, {}
    for name, entry in result["metrics"].items():
        if entry.get("not_run"):
            not_run[name] = entry["not_run"]
        elif name == "prdc":
            values.update({f"prdc_{k}": entry[k] for k in ("precision", "recall", "density", "coverage")})
        else:
            values[name] = entry["value"]
    f1 = result.get("chexbert_f1")
    if f1 is not None and "not_run" in f1:
        not_run["chexbert_f1"] = f1["not_run"]
    elif f1 is not None:
        for uncertain in ("positive", "negative"):
            for key, value in f1[f"uncertain_{uncertain}"].items():
                if key != "convention":
                    values[f"chexbert_{key}_u{uncertain[:3]}"] = value
    return values, not_run
