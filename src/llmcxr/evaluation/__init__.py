"""Evaluation pipelines above generation: they load models, generate, and score with ``llmcxr.metrics``.

- ``run``: ``llmcxr eval run``, generation on a split scored end to end beside the baselines, in
  stages: ``config`` (what is evaluated), ``run_folder`` (resume, timings), ``generate``,
  ``baselines``, ``score``, ``markdown`` and ``plots`` (eval.md and the figures).
- ``real_data`` (with ``real_images``): ``llmcxr eval run --source manifest|mimic|iu``, both
  directions on real CXRs and reports, resumable through the same ``run_folder`` and ``generate``.
- ``files``: the file-level evaluations of the other ``llmcxr eval`` verbs (reports, images, VQA,
  baselines, finding preservation, training the finding classifier), reading prediction files
  through ``prediction_files``.
"""

from llmcxr.evaluation.config import EvalRunConfig
from llmcxr.evaluation.files import (
    evaluate_finding_preservation,
    evaluate_image_folders,
    evaluate_report_baselines,
    evaluate_report_files,
    evaluate_vqa_files,
    train_classifier_on_manifest,
    train_classifier_on_world,
)
from llmcxr.evaluation.run import run_evaluation

__all__ = [
    "EvalRunConfig",
    "evaluate_finding_preservation",
    "evaluate_image_folders",
    "evaluate_report_baselines",
    "evaluate_report_files",
    "evaluate_vqa_files",
    "run_evaluation",
    "train_classifier_on_manifest",
    "train_classifier_on_world",
]
