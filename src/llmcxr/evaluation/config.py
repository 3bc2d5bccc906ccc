"""The configuration of ``llmcxr eval run``: what it evaluates and how, and what its generated files depend on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.metrics.clinical import (
    LabelConvention,
)

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
    guidance_scale: float | None = None
    """Classifier-free guidance for report -> CXR (1 = none; None = the model folder's recommendation)."""
    report_guidance_scale: float | None = None
    """Classifier-free guidance for CXR -> report (1 = none; needs ``unconditional_report_fraction`` in
    training; None = the model folder's recommendation)."""
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

    def with_recommended_guidance(self) -> EvalRunConfig:
        """Guidance scales left as None take the model folder's ``llmcxr_generation.json`` values."""
        from dataclasses import replace

        from llmcxr.model import GenerationDefaults

        recommended = GenerationDefaults.load(self.model)
        image = self.guidance_scale
        report = self.report_guidance_scale
        return replace(
            self,
            guidance_scale=recommended.image_guidance_scale if image is None else image,
            report_guidance_scale=recommended.report_guidance_scale if report is None else report,
        )

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
