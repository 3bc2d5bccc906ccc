"""Clinical efficacy of generated reports: label both reports, then score the labels as a classifier.

A labeler turns each report into CheXpert labels (``llmcxr.findings``: 1 positive, 0 negative,
-1 uncertain, key absent = not mentioned). A ``LabelConvention`` turns those into 0/1, and the
generated report's labels are scored against the reference report's labels per class
(precision/recall/F1 + support) and averaged micro and macro over the 14 CheXpert classes and over
the 5 common ones (``CHEXPERT_5``) -- the "micro-F1-14, macro-F1-14, micro-F1-5, macro-F1-5" of
the literature.

Conventions, as the published code does them:
- blank (not mentioned) and negative are 0; positive is 1 -- everyone agrees;
- uncertain is the split: f1chexbert's ``get_label(mode="rrg")`` (the CheXbert F1 used by ViLMedic
  and the RRG scorers) maps uncertain to 1 ("uncertain-as-positive", our default); R2Gen /
  R2GenCMN ``compute_ce.py`` set ``-1 -> 0`` before ``compute_mlc`` ("uncertain-as-negative").
- macro averages follow sklearn (what both codes call): a class with no positives on either side
  has precision = recall = F1 = 0 and still counts in the mean; we list such classes as
  ``undefined`` so a reader can see why a macro score is low.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_5, CHEXPERT_14, Mention
from llmcxr.reports import Labeler, RuleLabeler

UNCERTAIN_CHOICES = ("positive", "negative")


@dataclass(frozen=True)
class LabelConvention:
    """How a report's mention of a finding becomes the 0/1 a metric counts."""

    uncertain: str = "positive"
    """"positive" (uncertain-as-positive, f1chexbert / CheXbert F1) or "negative" (R2Gen compute_ce.py)."""

    def __post_init__(self) -> None:
        if self.uncertain not in UNCERTAIN_CHOICES:
            raise BadInputError(
                "label convention", f"uncertain={self.uncertain!r} is not one of {UNCERTAIN_CHOICES}"
            )

    def binarize(self, value: int | None) -> int:
        """1 for positive (and uncertain when counted as positive); 0 for negative, blank or uncertain-as-negative."""
        if value is None:
            return 0
        if value == Mention.POSITIVE:
            return 1
        if value == Mention.UNCERTAIN:
            return int(self.uncertain == "positive")
        return 0

    def describe(self) -> str:
        return (
            f"positive=1, negative=0, not mentioned=0, uncertain={1 if self.uncertain == 'positive' else 0}"
        )


def binarize_labels(
    labels: Sequence[Mapping[str, int]], classes: Sequence[str], convention: LabelConvention
) -> np.ndarray:
    """(N,) label dicts -> (N, C) int array of 0/1 under ``convention``."""
    out = np.zeros((len(labels), len(classes)), dtype=np.int64)
    for i, row in enumerate(labels):
        for j, name in enumerate(classes):
            out[i, j] = convention.binarize(row.get(name))
    return out


def _ratio(numerator: float, denominator: float) -> float:
    """sklearn's zero_division=0: an undefined ratio counts as 0."""
    return float(numerator / denominator) if denominator else 0.0


@dataclass
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int  # positives in the reference reports
    predicted: int  # positives in the generated reports


def precision_recall_f1(
    reference: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict[str, object]:
    """Per-class and micro/macro precision, recall, F1 of 0/1 predictions.

    reference, predicted: (N, C) arrays of 0/1, columns in ``classes`` order.
    Micro pools true/false positives/negatives over classes; macro is the unweighted mean of the
    per-class values (sklearn ``average="macro"``), undefined values counting as 0.
    """
    if reference.shape != predicted.shape or reference.shape[1] != len(classes):
        raise ValueError(
            f"shapes differ: reference {reference.shape}, predicted {predicted.shape}, {len(classes)} classes"
        )
    ref, pred = reference.astype(bool), predicted.astype(bool)
    tp = (ref & pred).sum(axis=0)
    fp = (~ref & pred).sum(axis=0)
    fn = (ref & ~pred).sum(axis=0)
    per_class = {
        name: ClassScore(
            precision=_ratio(tp[j], tp[j] + fp[j]),
            recall=_ratio(tp[j], tp[j] + fn[j]),
            f1=_ratio(2 * tp[j], 2 * tp[j] + fp[j] + fn[j]),
            support=int(tp[j] + fn[j]),
            predicted=int(tp[j] + fp[j]),
        )
        for j, name in enumerate(classes)
    }
    t, p, n = tp.sum(), fp.sum(), fn.sum()
    micro = {"precision": _ratio(t, t + p), "recall": _ratio(t, t + n), "f1": _ratio(2 * t, 2 * t + p + n)}
    macro = {
        key: float(np.mean([getattr(score, key) for score in per_class.values()]))
        for key in ("precision", "recall", "f1")
    }
    undefined = [name for name, score in per_class.items() if score.support == 0 and score.predicted == 0]
    return {
        "per_class": {name: asdict(score) for name, score in per_class.items()},
        "micro": micro,
        "macro": macro,
        "undefined": undefined,
        "n_reports": int(reference.shape[0]),
    }


def clinical_efficacy(
    predicted_labels: Sequence[Mapping[str, int]],
    reference_labels: Sequence[Mapping[str, int]],
    convention: LabelConvention = LabelConvention(),
) -> dict[str, object]:
    """Score generated-report labels against reference-report labels, over CheXpert-14 and -5.

    Returns the headline numbers (``micro_f1_14``, ``macro_f1_14``, ``micro_f1_5``, ``macro_f1_5``),
    the full tables under ``chexpert_14`` / ``chexpert_5`` and the convention used.
    """
    if len(predicted_labels) != len(reference_labels):
        raise ValueError(f"{len(predicted_labels)} predicted vs {len(reference_labels)} reference label rows")
    result: dict[str, object] = {"convention": convention.describe(), "uncertain": convention.uncertain}
    for tag, classes in (("14", CHEXPERT_14), ("5", CHEXPERT_5)):
        ref = binarize_labels(reference_labels, classes, convention)
        pred = binarize_labels(predicted_labels, classes, convention)
        table = precision_recall_f1(ref, pred, classes)
        result[f"micro_f1_{tag}"] = table["micro"]["f1"]  # type: ignore[index]
        result[f"macro_f1_{tag}"] = table["macro"]["f1"]  # type: ignore[index]
        result[f"chexpert_{tag}"] = table
    return result


def auroc_per_class(scores: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict[str, object]:
    """Per-class AUROC of scores (N, C) against 0/1 targets (N, C), and their macro mean.

    A class whose targets hold one value only has no AUROC: it is skipped (listed under ``skipped``
    with the reason) and left out of the macro mean. Ties count one half (Mann-Whitney), as
    torchmetrics' ``binary_auroc`` does.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(
            f"scores {scores.shape} and targets {targets.shape} must both be (N, {len(classes)})"
        )
    per_class: dict[str, dict[str, object]] = {}
    skipped: dict[str, str] = {}
    for j, name in enumerate(classes):
        positives = int(targets[:, j].sum())
        negatives = int(targets.shape[0] - positives)
        auroc = None
        if positives == 0 or negatives == 0:
            skipped[name] = f"only one label value ({positives} positive, {negatives} negative)"
        else:
            auroc = float(
                binary_auroc(torch.from_numpy(scores[:, j]), torch.from_numpy(targets[:, j]).long())
            )
        per_class[name] = {"auroc": auroc, "positives": positives, "negatives": negatives}
    defined = [v["auroc"] for v in per_class.values() if v["auroc"] is not None]
    return {
        "per_class": per_class,
        "macro_auroc": float(np.mean(defined)) if defined else None,
        "n_classes_scored": len(defined),
        "skipped": skipped,
    }


def labeler_name(labeler: Labeler) -> str:
    """How a result names its labeler: "llmcxr-rules", "chexbert", or the class name."""
    names = {"RuleLabeler": "llmcxr-rules", "CheXbertLabeler": "chexbert"}
    return getattr(labeler, "name", None) or names.get(type(labeler).__name__, type(labeler).__name__)


def label_reports(labeler: Labeler, reports: Sequence[str]) -> list[dict[str, int]]:
    """Report texts -> CheXpert label dicts (name -> Mention int) with any ``llmcxr.reports`` labeler."""
    return [
        {name: int(value) for name, value in labeled.labels.items()}
        for labeled in labeler.label(list(reports))
    ]


def chexpert_14_labels(
    reports: Sequence[str], labeler: Labeler | None = None, convention: LabelConvention = LabelConvention()
) -> np.ndarray:
    """Report texts -> (N, 14) 0/1 CheXpert labels (default: the project's rules, uncertain as positive),
    the rows micro-F1-14 is counted on. Each distinct text is labelled once: template reports repeat."""
    distinct = sorted(set(reports))
    rows = binarize_labels(label_reports(labeler or RuleLabeler(), distinct), CHEXPERT_14, convention)
    row_of = {report: number for number, report in enumerate(distinct)}
    return rows[[row_of[report] for report in reports]]


def score_report_labels(
    predictions: Sequence[str],
    references: Sequence[str],
    labeler: Labeler | None = None,
    convention: LabelConvention = LabelConvention(),
    labels: tuple[Sequence[Mapping[str, int]], Sequence[Mapping[str, int]]] | None = None,
) -> dict[str, object]:
    """Label both sides with ``labeler`` (default: the project's rules; ``CheXbertLabeler`` where the
    user has CheXbert weights) and score with ``clinical_efficacy``. ``labels`` = (predicted,
    reference) label rows that ``labeler`` already made, for callers that need them too."""
    labeler = labeler or RuleLabeler()
    predicted, reference = labels or (label_reports(labeler, predictions), label_reports(labeler, references))
    return {"labeler": labeler_name(labeler), **clinical_efficacy(predicted, reference, convention)}
