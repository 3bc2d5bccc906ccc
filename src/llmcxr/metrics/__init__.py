"""Evaluation metrics: clinical efficacy, language scores, generated-image quality, VQA accuracy.

- ``clinical``: CheXpert labels of generated vs reference reports -> per-class P/R/F1, micro/macro
  F1 over 14 and 5 classes (``LabelConvention`` says how uncertain counts); per-class AUROC.
- ``language``: BLEU-1..4, METEOR (where java runs), ROUGE-L, CIDEr (pycocoevalcap).
- ``images``: FID/KID in a CXR feature network, finding agreement of generated images.
- ``finding_classifier``: the small CXR finding classifier the project trains for ``images``.
- ``vqa``: VQA accuracy by question kind on normalised answers.
- ``reconstruction``: PSNR/SSIM of VQ round trips.
- ``baselines``: most common report, nearest-neighbour retrieval, the mode token map.
- ``intervals``: bootstrap intervals over items, paired differences.
- ``radgraph``: RadGraph F1 where the user has the RadGraph model.

Scoring functions only: they take predictions and references and return numbers. The pipelines that
load a model, generate and score (``llmcxr eval ...``) are ``llmcxr.evaluation``, above generation.
"""

from llmcxr.metrics.baselines import (
    mode_token_map,
    most_common_report,
    nearest_neighbour_reports,
    pixel_features,
)
from llmcxr.metrics.clinical import (
    LabelConvention,
    auroc_per_class,
    binarize_labels,
    chexpert_14_labels,
    clinical_efficacy,
    precision_recall_f1,
    score_report_labels,
)
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    FindingClassifier,
    FindingClassifierConfig,
    load_finding_classifier,
    save_finding_classifier,
    train_finding_classifier,
)
from llmcxr.metrics.images import (
    FindingClassifierFeatures,
    XRVDenseNetFeatures,
    fid_kid,
    fid_kid_from_features,
    finding_agreement,
    finding_preservation,
)
from llmcxr.metrics.language import language_scores, tokenize_report
from llmcxr.metrics.vqa import normalize_answer, vqa_accuracy

__all__ = [
    "ClassifierTrainConfig",
    "FindingClassifier",
    "FindingClassifierConfig",
    "FindingClassifierFeatures",
    "LabelConvention",
    "XRVDenseNetFeatures",
    "auroc_per_class",
    "binarize_labels",
    "chexpert_14_labels",
    "clinical_efficacy",
    "fid_kid",
    "fid_kid_from_features",
    "finding_agreement",
    "finding_preservation",
    "language_scores",
    "load_finding_classifier",
    "mode_token_map",
    "most_common_report",
    "nearest_neighbour_reports",
    "normalize_answer",
    "pixel_features",
    "precision_recall_f1",
    "save_finding_classifier",
    "score_report_labels",
    "tokenize_report",
    "train_finding_classifier",
    "vqa_accuracy",
]
