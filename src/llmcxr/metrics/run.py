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

import hashlib
import io
import json
import os
import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmcxr import atomic
from llmcxr.config import to_dict
from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14
from llmcxr.generation.guidance import IMAGE_GUIDANCE
from llmcxr.metrics.clinical import (
    LabelConvention,
    auroc_per_class,
    binarize_labels,
    label_reports,
    labeler_name,
)
from llmcxr.metrics.eval_markdown import render_markdown
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    FindingClassifier,
    image_labels,
    load_finding_classifier,
    load_record_images,
    read_train_summary,
    torch_threads,
)
from llmcxr.metrics.intervals import (
    item_resamples,
    paired_difference,
    percentile_interval,
    report_f1_intervals,
)
from llmcxr.records import QA, CXRRecord
from llmcxr.reports import Labeler, RuleLabeler

TASKS = ("report", "image", "vqa")
SAMPLING_CHOICES = ("greedy", "top-p")
CONFIG_NAME = "eval_config.json"
# The settings the generated files (and the classifier trained here) depend on; the others (batch
# size, device, limit, tasks, a given classifier, scoring options) can change between a run and its
# resumption: scores are recomputed on every run.
GENERATION_KEYS = (
    "split",
    "guidance_scale",
    "report_guidance_scale",
    "seed",
    "text_sampling",
    "image_sampling",
    "image_candidates",
    "top_p",
    "max_report_tokens",
    "max_answer_tokens",
    "classifier_steps",
)
# Generation settings added later, in the identity only when not at their default: run folders made
# before they existed still resume.
LATER_GENERATION_KEYS = {"report_sampling": None, "report_candidates": 1}
# Baselines that read the images through a network trained on the world's labels: retrieval by a
# supervised classifier's features is close to that classifier itself, a much stronger reference
# than "a model that learned nothing"; the headline gives the margin over the others as well.
SUPERVISED_BASELINES = ("nearest_neighbour_classifier",)
# Targets of the tiny synthetic model (issue 6), recorded beside the headline so eval.json is self-describing.
TARGETS = {
    "report_micro_f1_14_margin_over_best_baseline": 0.2,
    "image_macro_auroc_drawn": 0.85,
    "preservation_auroc_drop_max": 0.03,
}


@dataclass
class EvalRunConfig:
    """What ``llmcxr eval run`` evaluates and how."""

    model: Path
    """Model folder (``llmcxr train``), with its VQ-GAN in ``vq/``."""
    data: Path
    """Synthetic world folder (``llmcxr data synth``): the split to score and the train split for baselines."""
    out: Path
    """Folder for everything the run writes (resumable)."""
    split: str = "test"
    classifier: Path | None = None
    """Finding classifier folder; None = train one on the world's train split (cached in out/classifier)."""
    limit: int | None = None
    """Score the first N records of the split only (items generated so far are kept if it grows)."""
    guidance_scale: float = IMAGE_GUIDANCE
    """Classifier-free guidance for report -> CXR (1 = none)."""
    report_guidance_scale: float = 1.0
    """Classifier-free guidance for CXR -> report (1 = none; needs ``unconditional_report_fraction`` in training)."""
    batch_size: int = 16
    seed: int = 0
    """Item i of the split samples with seed + i."""
    tasks: tuple[str, ...] = TASKS
    text_sampling: str = "greedy"
    """Reports and VQA answers: "greedy" or "top-p"."""
    report_sampling: str | None = None
    """Reports only, overriding ``text_sampling`` for them: "greedy" or "top-p"."""
    report_candidates: int = 1
    """Each report the best of this many drafts by the model's own log p(image | report) (top-p only)."""
    image_sampling: str = "top-p"
    """Image tokens: "top-p" (LLM-CXR) or "greedy"."""
    image_candidates: int = 1
    """Each image the best of this many draws by the model's own log p(report | image) (top-p only)."""
    top_p: float = 0.92
    max_report_tokens: int = 160
    max_answer_tokens: int = 24
    classifier_steps: int = 1000
    """Training steps of the classifier trained here (``ClassifierTrainConfig.steps``)."""
    uncertain: str = "positive"
    """How uncertain labels count (``LabelConvention``)."""
    meteor: bool = False
    """Score METEOR too (needs java, ~15 s per system)."""
    samples: int = 8
    """Items shown in samples.png."""
    device: str | None = None
    """torch device; None = cuda where present, else cpu."""
    threads: int = 1
    """torch CPU threads (1 is fastest for small models on a busy machine; 0 = torch's default)."""
    restart: bool = False
    """Discard what an earlier run in ``out`` generated (needed to change generation settings)."""

    def check(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise BadInputError("tasks", f"unknown or no tasks {list(self.tasks)}", f"choose from {TASKS}")
        for name, value in (
            ("text_sampling", self.text_sampling),
            ("image_sampling", self.image_sampling),
            ("report_sampling", self.reports_sampled),
        ):
            if value not in SAMPLING_CHOICES:
                raise BadInputError(name, f"{value!r} is not one of {SAMPLING_CHOICES}")
        for name, candidates, sampling_name, sampling in (
            ("image_candidates", self.image_candidates, "image_sampling", self.image_sampling),
            ("report_candidates", self.report_candidates, "report_sampling", self.reports_sampled),
        ):
            if candidates < 1:
                raise BadInputError(name, f"must be at least 1, got {candidates}")
            if candidates > 1 and sampling != "top-p":
                raise BadInputError(
                    name,
                    "best-of-k needs sampled draws (greedy draws are all the same)",
                    f"use {sampling_name} top-p",
                )
        if self.batch_size < 1:
            raise BadInputError("batch_size", f"must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise BadInputError("limit", f"must be at least 1, got {self.limit}")
        LabelConvention(self.uncertain)  # raises on a bad value

    @property
    def reports_sampled(self) -> str:
        """How reports are drawn: ``report_sampling``, else ``text_sampling``."""
        return self.report_sampling or self.text_sampling


# --- small pieces -------------------------------------------------------------------------------


def file_sha256(paths: Sequence[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` in order (streamed: model weights can be large)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_weights(folder: Path) -> list[Path]:
    """The weight files that define a model folder's outputs: the LM's safetensors and the VQ-GAN's."""
    files = sorted(folder.glob("*.safetensors")) + sorted((folder / "vq").glob("*.safetensors"))
    if not files:
        raise BadInputError(
            folder, "no .safetensors weights in this model folder", "give `llmcxr train`'s model/"
        )
    return files


def contiguous_batches(indices: Sequence[int], size: int) -> list[list[int]]:
    """Split sorted indices into runs of consecutive items inside one ``size``-aligned chunk of the
    full list, so a resumed run batches (and pads) the remaining items as an uninterrupted run did."""
    batches: list[list[int]] = []
    for i in indices:
        if batches and i == batches[-1][-1] + 1 and i % size != 0:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def read_jsonl_rows(path: Path, key: str) -> dict[str, dict]:
    """{row[key]: row} of a JSONL file this module wrote; {} if it does not exist."""
    if not path.is_file():
        return {}
    rows: dict[str, dict] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[str(row[key])] = row
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BadInputError(
                f"{path}:{number}", f"not a row this run wrote ({err})", "rerun with --restart"
            ) from None
    return rows


def write_jsonl_rows(path: Path, rows: Sequence[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def safe_image_id(image_id: str) -> str:
    """An image id usable as a file name (generated/<id>.png)."""
    if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
        raise BadInputError(image_id, "image id is not a plain file name", "give records with plain ids")
    return image_id


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def most_common_answers(train: Sequence[CXRRecord], asked: Sequence[QA]) -> list[str]:
    """VQA baseline: the training split's most frequent answer to the same question (same text),
    else to questions of the same kind, else "no"."""
    by_question: dict[str, Counter] = {}
    by_kind: dict[str, Counter] = {}
    for record in train:
        for qa in record.qa:
            by_question.setdefault(" ".join(qa.question.lower().split()), Counter())[qa.answer] += 1
            by_kind.setdefault(qa.kind, Counter())[qa.answer] += 1
    answers = []
    for qa in asked:
        counts = by_question.get(" ".join(qa.question.lower().split())) or by_kind.get(qa.kind)
        answers.append(counts.most_common(1)[0][0] if counts else "no")
    return answers


# --- the folder: config, resume, timings ------------------------------------------------------


class RunFolder:
    """``out``: claims it for a config (refusing one with other generation settings), sums timings."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.reports = self.out / "reports.jsonl"
        self.generated = self.out / "generated"
        self.vqa = self.out / "vqa.jsonl"
        self.baselines = self.out / "baselines"
        self.classifier = self.out / "classifier"
        self.timings_path = self.out / "timings.json"

    def generated_image(self, image_id: str) -> Path:
        return self.generated / f"{safe_image_id(image_id)}.png"

    def claim(self, config: EvalRunConfig, identity: dict) -> None:
        saved = self.out / CONFIG_NAME
        if saved.is_file():
            previous = json.loads(saved.read_text(encoding="utf-8")).get("identity", {})
            changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            if changed and not config.restart:
                detail = "; ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in changed[:4])
                raise BadInputError(
                    saved,
                    f"this folder holds a run with other generation settings ({detail})",
                    "use another --out, or pass --restart to discard its generated results",
                )
        if config.restart:
            self.clear()
        atomic.write_json(saved, {"config": to_dict(config), "identity": identity})

    def clear(self) -> None:
        """Remove what an earlier run generated (only the files this module writes)."""
        for folder in (self.generated, self.baselines, self.classifier):
            if folder.is_dir():
                shutil.rmtree(folder)
        for name in ("reports.jsonl", "vqa.jsonl", "timings.json", "eval.json", "eval.md"):
            (self.out / name).unlink(missing_ok=True)

    def add_seconds(self, stage: str, seconds: float) -> None:
        """Generation seconds per stage summed over invocations (a resumed run's total is the sum)."""
        timings = self.timings()
        timings[stage] = round(timings.get(stage, 0.0) + seconds, 3)
        atomic.write_json(self.timings_path, timings)

    def timings(self) -> dict[str, float]:
        return (
            json.loads(self.timings_path.read_text(encoding="utf-8")) if self.timings_path.is_file() else {}
        )


@contextmanager
def progress_bars(show: bool) -> Iterator[Progress]:
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True, quiet=not show),
        disable=not show,
    )
    with bars:
        yield bars


# --- generation stages -------------------------------------------------------------------------


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


def cache_dir() -> Path:
    """Where results that outlive one run are kept: $LLMCXR_CACHE, else $XDG_CACHE_HOME/llmcxr, else ~/.cache/llmcxr."""
    if os.environ.get("LLMCXR_CACHE"):
        return Path(os.environ["LLMCXR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmcxr"


def train_tokens_cache(vq_folder: Path, train: Sequence[CXRRecord]) -> Path:
    """The cache file of the training images' VQ codes. Keyed by each VQ-GAN file and each image:
    path, size and modification time (not contents: the run identity has hashed the VQ weights
    already), so every eval run with this VQ-GAN on these images (any LM, any output folder, a
    validation sweep) encodes them once, and a changed file is never trusted."""
    key = hashlib.sha256()
    files = sorted(p for p in Path(vq_folder).iterdir() if p.is_file())
    for name, path in [(p.name, p) for p in files] + [(r.image_id, Path(r.image_path)) for r in train]:
        path = path.resolve()
        stat = path.stat()
        key.update(f"{name}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return cache_dir() / "train-tokens" / f"{key.hexdigest()}.safetensors"


@torch.inference_mode()
def train_token_grids(
    vq, vq_folder: Path, train: Sequence[CXRRecord], folder: RunFolder, batch_size: int, advance
) -> torch.Tensor:
    """(N, g, g) VQ codes of the training images by the model's VQ-GAN (``train_tokens_cache``)."""
    from safetensors.torch import load_file, save

    cache = train_tokens_cache(vq_folder, train)
    if cache.is_file():
        advance(len(train))
        return load_file(cache)["codes"]
    started = time.perf_counter()
    grids = []
    device = next(vq.parameters()).device
    for i in range(0, len(train), batch_size):
        chunk = train[i : i + batch_size]
        grids.append(vq.encode(load_record_images(chunk, vq.cfg.resolution).to(device)).cpu())
        advance(len(chunk))
    codes = torch.cat(grids).long().contiguous()
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(cache, save({"codes": codes}))
    folder.add_seconds("baseline_tokens", time.perf_counter() - started)
    return codes


# --- scoring -------------------------------------------------------------------------------------


def _load_png_set(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Generated PNGs (this run's own, at the VQ-GAN's resolution: may be below the size limit for
    input CXRs) -> (N, 1, size, size) in [-1, 1]."""
    from llmcxr.imaging import load_cxr
    from llmcxr.imaging.limits import ImageLimits

    return torch.stack([load_cxr(p, size, limits=ImageLimits(min_side=1)) for p in paths])


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
    from llmcxr.metrics.evaluate import report_baseline_predictions, score_reports

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
    from llmcxr.metrics.evaluate import drawn_findings, vq_round_trip
    from llmcxr.metrics.images import preservation_of_probabilities

    size = classifier.config.image_size
    device = next(vq.parameters()).device
    reference = load_record_images(items, size)
    originals = load_record_images(items, vq.cfg.resolution)
    round_trips = vq_round_trip(vq, originals.to(device)).cpu()
    manifest = Path(config.data) / "manifest.jsonl"
    drawn = [c for c in drawn_findings(manifest) if c in classifier.config.classes]
    systems = {
        "model": _load_png_set([folder.generated_image(r.image_id) for r in items], size),
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


def _headline(result: dict) -> dict:
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


# --- the whole run -------------------------------------------------------------------------------


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
    from llmcxr.metrics.evaluate import train_classifier_on_world

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
    from llmcxr.imaging import to_pil
    from llmcxr.metrics.baselines import mode_token_map
    from llmcxr.metrics.images import FindingClassifierFeatures, network_identity

    config.check()
    started_all = time.perf_counter()
    seconds: dict[str, float] = {}
    train, items = _records(config)
    model_dir = Path(config.model)
    if not model_dir.is_dir():
        raise BadInputError(model_dir, "model folder not found", "give the folder `llmcxr train` wrote")
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
        torch_threads(config.threads) if config.threads > 0 else _nothing(),
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

        stages = [
            ("report", "reports", "CXR -> report", len(items), generate_reports),
            ("image", "images", "report -> CXR", len(items), generate_images),
            ("vqa", "vqa", "VQA", len(vqa_items(items)), generate_answers),
        ]
        for task, stage, description, total, generate in stages:
            if task in config.tasks:
                start = time.perf_counter()
                generated_now[stage] = generate(llm, items, config, folder, bar(description, total))
                seconds[stage] = time.perf_counter() - start

        start = time.perf_counter()
        mode_image = None
        if "image" in config.tasks:
            grids = train_token_grids(
                vq, model_dir / "vq", train, folder, config.batch_size, bar("encode train images", len(train))
            )
            with torch.inference_mode():
                mode_image = vq.decode(mode_token_map(grids)[None].to(llm.device)).cpu()[0]
            atomic.write_bytes(folder.baselines / "mode_token_map.png", png_bytes(to_pil(mode_image)))
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
                "n_vqa": len(vqa_items(items)),
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
        result["headline"] = _headline(result)
        result["targets"] = TARGETS
        seconds["scoring"] = time.perf_counter() - start

        start = time.perf_counter()
        _write_plots(
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
    result["timings"] = {
        "this_run_s": {k: round(v, 2) for k, v in seconds.items()},
        "generation_s_all_runs": folder.timings(),
        "items_per_s": {
            stage: round(_count(result, stage) / s, 3)
            for stage, s in folder.timings().items()
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


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _count(result: dict, stage: str) -> int:
    data = result["data"]
    return {
        "reports": data["n_items"],
        "images": data["n_items"],
        "vqa": data["n_vqa"],
        "baseline_tokens": data["n_train"],
    }.get(stage, 0)


def _write_plots(
    result: dict,
    items: Sequence[CXRRecord],
    folder: RunFolder,
    probabilities: dict[str, np.ndarray],
    classes: Sequence[str],
    convention: LabelConvention,
    mode_image: torch.Tensor | None,
    samples: int,
) -> None:
    """f1_per_class.png, roc_curves.png (drawn findings with both label values), samples.png."""
    from PIL import Image

    from llmcxr.imaging import to_pil
    from llmcxr.metrics import plots

    if "cxr_to_report" in result:
        f1 = {
            name: {c: v["f1"] for c, v in scores["clinical"]["chexpert_14"]["per_class"].items()}
            for name, scores in result["cxr_to_report"]["systems"].items()
        }
        plots.plot_f1_per_class(f1, CHEXPERT_14, folder.out / "f1_per_class.png")
    if "report_to_cxr" in result:
        images = result["report_to_cxr"]
        curves: dict[str, dict] = {}
        for finding in images["scored_findings"]:
            targets = binarize_labels([r.labels for r in items], [finding], convention)[:, 0]
            if targets.min() == targets.max():
                continue
            column = list(classes).index(finding)
            curves[finding] = {
                name: (
                    probabilities[name][:, column],
                    targets,
                    images["systems"][name]["finding_agreement"]["per_class"][finding]["auroc"],
                )
                for name in ("model", "mode_token_map", "reference_images")
            }
        plots.plot_roc_curves(curves, folder.out / "roc_curves.png")
        shown = []
        for record in items[:samples]:
            generated = Image.open(folder.generated_image(record.image_id))
            reference = Image.open(record.image_path)
            shown.append(
                (
                    record.image_id,
                    record.report,
                    [("generated", generated), ("reference", reference), ("mode map", to_pil(mode_image))],
                )
            )
        plots.plot_samples(shown, folder.out / "samples.png")


__all__ = ["EvalRunConfig", "TASKS", "render_markdown", "run_evaluation"]
