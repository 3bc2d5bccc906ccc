"""``llmcxr eval run --source manifest|mimic|iu``: CXR -> report on real data, scored by the ReXrank
protocol beside the same label-free baselines, in one run.

Data: a manifest (``llmcxr.datasets.manifest``: image, report, optional labels and split), a
MIMIC-CXR-JPG root (its official split), or the IU X-ray reports (with R2Gen's split file, the
standard test split; images optional). Rows without a split are split by patient (else image id)
with a hash: ``test_fraction`` of them are the test split, the rest train the baselines.

Systems, each scored with ``rexrank_report_scores`` (every learned metric from the local weights the
user gives, else listed as not run) and the rule labeler's CheXpert F1 under both conventions:

- ``model``: the LLM-CXR model's greedy report of each test image (where images and a model exist);
- ``most_common_report``: the train split's most common report, for every test study;
- ``nearest_neighbour_pixels``: the report of the train image nearest by pooled pixels (images only).

Not here yet: report -> CXR on real data (FD/KD/PRDC, finding agreement); ``eval images --protocol
chexgenbench`` scores generated image folders.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.metrics.protocols import ReXrankWeights, chexbert_f1, rexrank_report_scores
from llmcxr.records import CXRRecord

SOURCES = ("manifest", "mimic", "iu")


@dataclass
class RealEvalConfig:
    data: Path
    """A manifest (.csv/.jsonl), a MIMIC-CXR-JPG root, or the IU reports (.tgz or XML folder)."""
    out: Path
    source: str = "manifest"
    model: Path | None = None
    """An llmcxr model folder; without one only the baselines are scored."""
    split: str = "test"
    iu_split: Path | None = None
    """R2Gen's IU X-ray split file (annotation.json): the standard test split."""
    images: Path | None = None
    """IU X-ray images folder (optional: without it, reports only)."""
    test_fraction: float = 0.2
    limit: int | None = None
    batch_size: int = 8
    max_report_tokens: int = 160
    weights: ReXrankWeights = field(default_factory=ReXrankWeights)


def _hashed_split(records: list[CXRRecord], test_fraction: float) -> None:
    for record in records:
        if record.split is None:
            key = (record.patient_id or record.image_id).encode()
            record.split = (
                "test"
                if int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF < test_fraction
                else "train"
            )


def load_real_records(config: RealEvalConfig) -> list[CXRRecord]:
    """The records of ``config.data`` with a split on every one (``validate`` counts as train here)."""
    if config.source == "manifest":
        from llmcxr.datasets.manifest import read_manifest

        records = read_manifest(Path(config.data))
    elif config.source == "mimic":
        from llmcxr.datasets.mimic import read_mimic

        records = read_mimic(Path(config.data))
    elif config.source == "iu":
        from llmcxr.datasets.iu_xray import iu_records

        if config.iu_split is None:
            raise BadInputError(
                config.data, "IU X-ray needs its split file", "give --iu-split (R2Gen annotation.json)"
            )
        # the standard split only: reports R2Gen left out (no usable image pair) are not drawn into any split
        records = [r for r in iu_records(config.data, config.images, config.iu_split, label=False) if r.split]
    else:
        raise BadInputError("source", f"{config.source!r} is not one of {SOURCES}")
    _hashed_split(records, config.test_fraction)
    for record in records:
        if record.split == "val" or record.split == "validate":
            record.split = "validate"
    return [r for r in records if r.report]


def _with_images(records: list[CXRRecord]) -> bool:
    return all(r.image_path and Path(r.image_path).is_file() for r in records)


def model_reports(model: Path, test: list[CXRRecord], config: RealEvalConfig) -> list[str]:
    from llmcxr.generation import LLMCXR, SamplingConfig

    llm = LLMCXR.from_pretrained(model, device="cpu")
    sampling = SamplingConfig(do_sample=False, max_new_tokens=config.max_report_tokens)
    results = llm.report([r.image_path for r in test], sampling=sampling, batch_size=config.batch_size)
    return [result.text for result in results]


def baseline_reports(train: list[CXRRecord], test: list[CXRRecord]) -> dict[str, list[str]]:
    from llmcxr.metrics.baselines import most_common_report, nearest_neighbour_reports, pixel_features
    from llmcxr.metrics.finding_classifier import load_record_images

    reports = [r.report for r in train]
    systems = {"most_common_report": [most_common_report(reports)] * len(test)}
    if _with_images(train) and _with_images(test):
        train_images, test_images = load_record_images(train, 64), load_record_images(test, 64)
        systems["nearest_neighbour_pixels"] = nearest_neighbour_reports(
            pixel_features(train_images), reports, pixel_features(test_images)
        )
    return systems


def run_real_evaluation(config: RealEvalConfig) -> dict[str, object]:
    """Generate (where a model and images exist), score every system, write ``out/eval.json`` and
    ``out/reports.jsonl``; returns the result."""
    from llmcxr.reports import RuleLabeler

    started = time.perf_counter()
    records = load_real_records(config)
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == config.split][: config.limit]
    if not train or not test:
        raise BadInputError(
            config.data, f"needs train and {config.split!r} studies, found {len(train)} and {len(test)}"
        )
    timings: dict[str, float] = {}
    systems = baseline_reports(train, test)
    timings["baselines_s"] = round(time.perf_counter() - started, 2)
    not_run: dict[str, str] = {}
    if config.model is None:
        not_run["model"] = "no --model given"
    elif not _with_images(test):
        not_run["model"] = "the test studies have no images here (reports only)"
    else:
        began = time.perf_counter()
        systems = {"model": model_reports(config.model, test, config), **systems}
        timings["generation_s"] = round(time.perf_counter() - began, 2)
    references = [r.report for r in test]
    began = time.perf_counter()
    scored = {
        name: {
            **rexrank_report_scores(reports, references, config.weights),
            "rule_labeler_f1": chexbert_f1(reports, references, RuleLabeler(), "llmcxr-rules (not CheXbert)"),
        }
        for name, reports in systems.items()
    }
    timings["scoring_s"] = round(time.perf_counter() - began, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    result = {
        "task": "cxr_to_report",
        "data": {"source": config.source, "path": str(config.data), "split": config.split},
        "n_test": len(test),
        "n_train": len(train),
        "model": str(config.model) if config.model else None,
        "systems": scored,
        "not_run": not_run,
        "timings": timings,
    }
    out = Path(config.out)
    atomic.write_json(out / "eval.json", result)
    rows = [
        {"image_id": r.image_id, "reference": r.report, **{name: systems[name][i] for name in systems}}
        for i, r in enumerate(test)
    ]
    atomic.write_text(out / "reports.jsonl", "".join(atomic_json_line(row) for row in rows))
    return result


def atomic_json_line(row: dict) -> str:
    import json

    return json.dumps(row, ensure_ascii=False) + "\n"
