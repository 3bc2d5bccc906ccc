"""``llmcxr eval run --source manifest|mimic|iu``: both directions on real data, each beside its
baselines, in one resumable run.

Data: a manifest (``llmcxr.datasets.manifest``: image, report, optional labels and split), a
MIMIC-CXR-JPG root (its official split), or the IU X-ray reports (with R2Gen's split file, the
standard test split; images optional). Rows without a split are split by patient (else image id)
with a hash: ``test_fraction`` of them are the test split, the rest train the baselines.

CXR -> report. Systems, each scored with ``rexrank_report_scores`` (every learned metric from the
local weights the user gives, else listed as not run) and the rule labeler's CheXpert F1 under both
conventions:

- ``model``: the LLM-CXR model's greedy report of each test image (where images and a model exist);
- ``most_common_report``: the train split's most common report, for every test study;
- ``nearest_neighbour_pixels``: the report of the train image nearest by pooled pixels (images only).

Report -> CXR (``real_images.py``): the model draws an image from each test study's report with the
model's recommended guidance; FD/KD/PRDC against the test images (RAD-DINO features, else the finding
classifier's) and finding agreement with the finding classifier, beside the mode-token-map baseline
and the VQ round-trip and real-image ceilings. Studies without images skip it with the reason.

Resumable as ``eval run`` on a synthetic world (``run.py``, the same ``generate.py`` and
``RunFolder``): reports and images are written per batch and a rerun generates only what is missing;
a rerun with other generation settings is refused unless ``restart``. Files::

    out/eval_config.json          the config and what the generated files depend on
    out/reports.jsonl             the model's reports {image_id, report, stopped}
    out/generated/<image_id>.png  the model's images
    out/classifier/               the finding classifier trained here (none given)
    out/baselines/                mode_token_map.png, vq_round_trip/<image_id>.png
    out/reports_by_system.jsonl   {image_id, reference, <system>: report} for every test study
    out/timings.json, out/eval.json
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmcxr.config import to_dict
from llmcxr.errors import BadInputError
from llmcxr.evaluation.config import GENERATION_KEYS, EvalRunConfig
from llmcxr.evaluation.files import has_image, report_baseline_predictions, split_by_patient_hash
from llmcxr.evaluation.generate import generate_images, generate_reports
from llmcxr.evaluation.real_images import (
    fill_labels,
    real_finding_classifier,
    score_real_images,
    write_baseline_images,
)
from llmcxr.evaluation.run_folder import (
    RunFolder,
    model_weights,
    progress_bars,
    read_jsonl_rows,
    write_jsonl_rows,
)
from llmcxr.hashing import file_sha256
from llmcxr.metrics.finding_classifier import ClassifierTrainConfig, torch_threads
from llmcxr.metrics.protocols import ReXrankWeights, chexbert_f1, rexrank_report_scores
from llmcxr.records import CXRRecord

SOURCES = ("manifest", "mimic", "iu")
REAL_TASKS = ("report", "image", "vqa")


@dataclass
class RealEvalConfig:
    """What ``llmcxr eval run --source manifest|mimic|iu`` evaluates and how."""

    data: Path
    """A manifest (.csv/.jsonl), a MIMIC-CXR-JPG root, or the IU reports (.tgz or XML folder)."""
    out: Path
    """Folder for everything the run writes (resumable)."""
    source: str = "manifest"
    model: Path | None = None
    """An llmcxr model folder; without one only the report baselines are scored."""
    split: str = "test"
    iu_split: Path | None = None
    """R2Gen's IU X-ray split file (annotation.json): the standard test split."""
    images: Path | None = None
    """IU X-ray images folder (optional: without it, reports only)."""
    test_fraction: float = 0.2
    limit: int | None = None
    """Score the first N test studies only (what was generated for more is kept)."""
    tasks: tuple[str, ...] = ("report", "image")
    batch_size: int = 8
    max_report_tokens: int = 160
    guidance_scale: float | None = None
    """Report -> CXR classifier-free guidance; None = the model folder's (``llmcxr_generation.json``)."""
    report_guidance_scale: float | None = None
    """CXR -> report classifier-free guidance; None = the model folder's."""
    image_sampling: str = "top-p"
    """Image tokens: "top-p" (LLM-CXR) or "greedy"."""
    seed: int = 0
    """Test study i draws its image with seed + i."""
    classifier: Path | None = None
    """Finding classifier folder; None = train one on the train split's images (cached in out/classifier)."""
    classifier_steps: int = 1000
    classifier_size: int = 128
    """Image side the classifier trained here sees (``train-classifier --manifest``'s default)."""
    rad_dino: Path | None = None
    """A local microsoft/rad-dino folder: FD/KD/PRDC in its features (else the classifier's)."""
    device: str | None = None
    threads: int = 1
    """torch CPU threads (1 is fastest for small models on a busy machine)."""
    restart: bool = False
    """Discard what an earlier run in ``out`` generated (needed to change generation settings)."""
    weights: ReXrankWeights = field(default_factory=ReXrankWeights)

    def check(self) -> None:
        if self.source not in SOURCES:
            raise BadInputError("source", f"{self.source!r} is not one of {SOURCES}")
        unknown = [t for t in self.tasks if t not in REAL_TASKS]
        if unknown or not self.tasks:
            raise BadInputError(
                "tasks", f"unknown or no tasks {list(self.tasks)}", f"choose from {REAL_TASKS}"
            )
        self.generation().check()  # sampling names, batch size, limit

    def generation(self) -> EvalRunConfig:
        """The same settings as the synthetic pipeline's generation stages read them (greedy reports),
        guidance scales left as None taken from the model folder's recommendation."""
        settings = EvalRunConfig(
            model=self.model or Path(), data=self.data, out=self.out, split=self.split, limit=self.limit,
            guidance_scale=self.guidance_scale, report_guidance_scale=self.report_guidance_scale,
            batch_size=self.batch_size, seed=self.seed, text_sampling="greedy", image_sampling=self.image_sampling,
            max_report_tokens=self.max_report_tokens, classifier_steps=self.classifier_steps,
        )  # fmt: skip
        return settings.with_recommended_guidance() if self.model is not None else settings


def load_real_records(config: RealEvalConfig) -> list[CXRRecord]:
    """The records of ``config.data`` with a split on every one (``val`` is named ``validate``)."""
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
    split_by_patient_hash(records, config.test_fraction, "test")
    for record in records:
        if record.split == "val" or record.split == "validate":
            record.split = "validate"
    return [r for r in records if r.report]


def _with_images(records: list[CXRRecord]) -> bool:
    return all(has_image(r) for r in records)


def _identity(config: RealEvalConfig, generation: EvalRunConfig) -> dict:
    """What the generated files (and the classifier trained here) depend on."""
    identity = {k: to_dict(generation)[k] for k in GENERATION_KEYS if k != "max_answer_tokens"}
    identity |= {"source": config.source, "data": str(Path(config.data).resolve())}
    identity |= {"test_fraction": config.test_fraction, "iu_split": str(config.iu_split)}
    if config.model is not None:
        identity["model_weights_sha256"] = file_sha256(model_weights(Path(config.model)))
    if config.classifier is None:
        identity["classifier_size"] = config.classifier_size
    else:  # scoring only: nothing generated here depends on it
        del identity["classifier_steps"]
    return identity


def _score_reports(systems: dict[str, list[str]], test: list[CXRRecord], config: RealEvalConfig) -> dict:
    from llmcxr.reports import RuleLabeler

    references, labeler = [r.report for r in test], RuleLabeler()
    return {
        name: {
            **rexrank_report_scores(reports, references, config.weights),
            "rule_labeler_f1": chexbert_f1(reports, references, labeler, "llmcxr-rules (not CheXbert)"),
        }
        for name, reports in systems.items()
    }


def _guidance_from(given: float | None, option: str) -> str:
    return option if given is not None else "the model folder's llmcxr_generation.json (1 where it has none)"


class _Run:
    """One invocation: the folder, the model (if any), what was generated and how long each stage took."""

    def __init__(self, config: RealEvalConfig, folder: RunFolder, log: Callable[[str], None], bar) -> None:
        self.config, self.folder, self.log, self.bar = config, folder, log, bar
        self.generation = config.generation()
        self.seconds: dict[str, float] = {}
        self.generated: dict[str, int] = {}
        self.not_run: dict[str, str] = {}
        self.llm = None
        if config.model is not None:
            from llmcxr.generation import LLMCXR

            started = time.perf_counter()
            self.llm = LLMCXR.from_pretrained(config.model, device=config.device)
            self.seconds["load_model"] = time.perf_counter() - started

    def reports(self, train: list[CXRRecord], test: list[CXRRecord]) -> dict:
        """CXR -> report: the model's reports (generated per batch) and the baselines', all scored."""
        started = time.perf_counter()
        systems = report_baseline_predictions(train, test)
        self.seconds["report_baselines"] = time.perf_counter() - started
        if self.llm is None:
            self.not_run["cxr_to_report/model"] = "no --model given"
        elif not _with_images(test):
            self.not_run["cxr_to_report/model"] = "the test studies have no images here (reports only)"
        else:
            started = time.perf_counter()
            advance = self.bar("CXR -> report", len(test))
            self.generated["reports"] = generate_reports(
                self.llm, test, self.generation, self.folder, advance
            )
            self.seconds["reports"] = time.perf_counter() - started
            done = read_jsonl_rows(self.folder.reports, "image_id")
            systems = {"model": [done[r.image_id]["report"] for r in test], **systems}
        rows = [
            {"image_id": r.image_id, "reference": r.report, **{name: systems[name][i] for name in systems}}
            for i, r in enumerate(test)
        ]
        write_jsonl_rows(self.folder.out / "reports_by_system.jsonl", rows)
        started = time.perf_counter()
        scored = _score_reports(systems, test, self.config)
        self.seconds["report_scoring"] = time.perf_counter() - started
        section = {"n": len(test), "systems": scored}
        if "reports" in self.generated:
            section["guidance_scale"] = self.generation.report_guidance_scale
            section["guidance_from"] = _guidance_from(
                self.config.report_guidance_scale, "--report-guidance-scale"
            )
        return section

    def images(self, records: list[CXRRecord], test: list[CXRRecord]) -> dict | None:
        """Report -> CXR on the test studies with images (``real_images.py``); None where it cannot run."""
        items = [r for r in test if has_image(r)]
        if self.llm is None:
            self.not_run["report_to_cxr"] = "no --model given"
        elif len(items) < 2:
            self.not_run["report_to_cxr"] = (
                "the test studies have no images here (reports only)"
                if not items
                else f"{len(items)} of {len(test)} test studies have an image; FD and AUROC need 2 or more"
            )
        elif self.llm.vq is None:
            self.not_run["report_to_cxr"] = "the model folder has no vq/ (VQ-GAN) to draw images with"
        if "report_to_cxr" in self.not_run:
            return None
        config, folder = self.config, self.folder
        with_images = [r for r in records if r.split in ("train", "validate") and has_image(r)]
        labels_source = fill_labels([*with_images, *items])
        started = time.perf_counter()
        train_config = ClassifierTrainConfig(steps=config.classifier_steps, seed=config.seed)
        classifier, classifier_info = real_finding_classifier(
            config.classifier, with_images, folder, train_config, config.classifier_size, self.log
        )
        self.seconds["classifier"] = time.perf_counter() - started

        started = time.perf_counter()
        advance = self.bar("report -> CXR", len(items))
        self.generated["images"] = generate_images(self.llm, items, self.generation, folder, advance)
        self.seconds["images"] = time.perf_counter() - started

        started = time.perf_counter()
        train = [r for r in with_images if r.split == "train"]
        advance = self.bar("encode train images", len(train))
        write_baseline_images(self.llm.vq, Path(config.model) / "vq", train, items, folder, advance)
        self.seconds["image_baselines"] = time.perf_counter() - started

        started = time.perf_counter()
        self.log("scoring images")
        scores = score_real_images(items, folder, classifier, config.rad_dino, config.seed)
        self.seconds["image_scoring"] = time.perf_counter() - started
        return {
            "n": len(items),
            "n_without_image": len(test) - len(items),
            "guidance_scale": self.generation.guidance_scale,
            "guidance_from": _guidance_from(config.guidance_scale, "--guidance-scale"),
            "image_sampling": config.image_sampling,
            "labels": labels_source,
            "finding_classifier": classifier_info,
            **scores,
        }


def run_real_evaluation(config: RealEvalConfig, show_progress: bool = False) -> dict[str, object]:
    """Generate what is missing, score every system of each task, write ``out/eval.json``; returns it."""
    from llmcxr import atomic

    config.check()
    started = time.perf_counter()
    records = load_real_records(config)
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == config.split][: config.limit]
    if not train or not test:
        raise BadInputError(
            config.data, f"needs train and {config.split!r} studies, found {len(train)} and {len(test)}"
        )
    folder = RunFolder(config.out)
    run_config = config.generation()
    folder.claim(config, _identity(config, run_config))
    result: dict[str, object] = {
        "kind": "llmcxr-eval-run-real",
        "data": {"source": config.source, "path": str(config.data), "split": config.split},
        "n_test": len(test),
        "n_train": len(train),
        "model": str(config.model) if config.model else None,
    }
    threads = torch_threads(config.threads) if config.threads > 0 else nullcontext()
    with threads, progress_bars(show_progress) as bars:

        def bar(description: str, total: int):
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)

        run = _Run(config, folder, bars.console.print, bar)
        if "report" in config.tasks:
            result["cxr_to_report"] = run.reports(train, test)
        if "image" in config.tasks:
            images = run.images(records, test)
            if images is not None:
                result["report_to_cxr"] = images
        if "vqa" in config.tasks:
            run.not_run["vqa"] = "real-data sources carry no VQA pairs here"
    run.seconds["total"] = time.perf_counter() - started
    result["not_run"] = run.not_run
    result["generated_this_run"] = run.generated
    result["timings"] = {
        "this_run_s": {k: round(v, 2) for k, v in run.seconds.items()},
        "generation_s_all_runs": folder.timings(),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "device": str(run.llm.device) if run.llm is not None else "cpu",
            "torch_threads": torch.get_num_threads() if config.threads <= 0 else config.threads,
        },
    }
    atomic.write_json(folder.out / "eval.json", result)
    return result
