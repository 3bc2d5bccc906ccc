"""Public protocols: score reports as ReXrank does, so the numbers sit beside the board's.

``rexrank_report_scores`` runs the ReXrank metric set on (prediction, reference) report pairs with
the learned metrics' weights the user has (``ReXrankWeights``: local folders only). Every metric
appears in the result: with its mean, its conventions and its weights' SHA-256, or with
``"not_run"`` and the reason (no weights, package missing) -- never a silent zero. 1/RadCliQ-v1 runs
where its four inputs (BLEU-2, BERTScore, SembScore, RadGraph) all ran.

CheXbert F1 is given under both conventions papers use for "uncertain" (``LabelConvention``):
positive (f1chexbert, the CheXbert F1 of the RRG scorers) and negative (R2Gen's compute_ce.py),
micro and macro over the 14 CheXpert classes and the 5 common ones.

Image protocols (CheXGenBench) are ``llmcxr.metrics.chexgenbench``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmcxr.metrics.clinical import UNCERTAIN_CHOICES, LabelConvention, clinical_efficacy, label_reports
from llmcxr.metrics.radgraph import RadGraphModel
from llmcxr.metrics.report_models import (
    MetricNotRun,
    bertscore_f1,
    chexbert_semb,
    radgraph_combined,
    ratescore,
    weights_sha256,
)
from llmcxr.metrics.rexrank import inverse_radcliq_v1, rexrank_bleu2

# What each metric is, as the result states it.
DEFINITIONS = {
    "bleu2": "BLEU-2 per report (fast_bleu / NLTK, weights 1/2 1/2, smoothing method 1) on "
    "CXR-Report-Metric's tokens (lower-case, '.' split off, split on spaces), averaged over reports",
    "bertscore": "BERTScore F1, distilroberta-base layer 5, no idf, baseline-rescaled (bert-score), mean",
    "semb_score": "cosine of CheXbert [CLS] embeddings, mean",
    "radgraph": "RadGraph (entity F1 + relation F1) / 2 per report (CXR-Report-Metric), mean",
    "inverse_radcliq_v1": "1 / mean RadCliQ-v1 over reports (CXR-Report-Metric radcliq-v1.pkl), higher is better",
    "ratescore": "RaTEScore (RaTEScore package, long affinity matrix), mean",
    "green": "GREEN = matched / (matched + clinically significant errors) by the GREEN judge LM, mean",
}
RADCLIQ_INPUTS = ("radgraph", "bertscore", "semb_score", "bleu2")


@dataclass(frozen=True)
class ReXrankWeights:
    """Local weights of the protocol's learned metrics; a metric whose weights are None is not run."""

    bertscore: Path | None = None
    """A distilroberta-base folder (config, weights, tokenizer)."""
    bertscore_layer: int = 5
    """Which layer BERTScore reads: 5 for distilroberta-base (bert-score's table)."""
    chexbert: Path | None = None
    """CheXbert weights converted to safetensors (``llmcxr data convert-chexbert``)."""
    chexbert_bert: Path | None = None
    """The bert-base-uncased folder (config + tokenizer) CheXbert was trained from."""
    radgraph: RadGraphModel | None = None
    """The extracted RadGraph model (the original ``radgraph`` release for the protocol)."""
    ratescore_ner: Path | None = None
    ratescore_encoder: Path | None = None
    green: Path | None = None
    """A local GREEN judge folder (StanfordAIMI/GREEN-RadLlama2-7b)."""


def _mean_entry(name: str, per_report: np.ndarray, extra: dict) -> dict[str, object]:
    return {
        "value": float(np.mean(per_report)),
        "definition": DEFINITIONS[name],
        **{k: v for k, v in extra.items() if k != "per_report"},
    }


def _attempt(name: str, run: Callable[[], dict], per_report: dict, metrics: dict) -> None:
    """Run one metric: its entry in ``metrics`` (and per-report scores), or the reason it did not run."""
    try:
        result = run()
    except MetricNotRun as reason:
        metrics[name] = {"value": None, "not_run": str(reason), "definition": DEFINITIONS[name]}
        return
    per_report[name] = np.asarray(result["per_report"], np.float64)
    metrics[name] = _mean_entry(name, per_report[name], result)


def chexbert_f1(
    predictions: Sequence[str], references: Sequence[str], labeler, labeler_name: str
) -> dict[str, object]:
    """CheXbert F1 (micro/macro, 14 and 5 classes) under both uncertain conventions, labels made once."""
    predicted, reference = label_reports(labeler, predictions), label_reports(labeler, references)
    out: dict[str, object] = {"labeler": labeler_name}
    for uncertain in UNCERTAIN_CHOICES:
        scores = clinical_efficacy(predicted, reference, LabelConvention(uncertain))
        out[f"uncertain_{uncertain}"] = {
            key: scores[key]
            for key in ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5", "convention")
        }
    return out


def rexrank_report_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    weights: ReXrankWeights = ReXrankWeights(),
    keep_per_report: bool = False,
) -> dict[str, object]:
    """The ReXrank metric set of generated findings vs reference findings (paired by position)."""
    predictions, references = [str(p) for p in predictions], [str(r) for r in references]
    per_report: dict[str, np.ndarray] = {}
    metrics: dict[str, object] = {}
    _attempt("bleu2", lambda: {"per_report": rexrank_bleu2(predictions, references)}, per_report, metrics)
    _attempt(
        "bertscore",
        lambda: bertscore_f1(predictions, references, weights.bertscore, weights.bertscore_layer),
        per_report,
        metrics,
    )
    chexbert = _chexbert(weights)
    chexbert_sha256 = None if isinstance(chexbert, MetricNotRun) else weights_sha256(weights.chexbert)
    _attempt(
        "semb_score",
        lambda: {
            **chexbert_semb(predictions, references, _loaded(chexbert)),
            "weights_sha256": chexbert_sha256,
        },
        per_report,
        metrics,
    )
    _attempt(
        "radgraph", lambda: radgraph_combined(predictions, references, weights.radgraph), per_report, metrics
    )
    if all(name in per_report for name in RADCLIQ_INPUTS):
        means = [float(np.mean(per_report[name])) for name in RADCLIQ_INPUTS]
        metrics["inverse_radcliq_v1"] = {
            "value": inverse_radcliq_v1(*means),
            "definition": DEFINITIONS["inverse_radcliq_v1"],
        }
    else:
        missing = [name for name in RADCLIQ_INPUTS if name not in per_report]
        metrics["inverse_radcliq_v1"] = {
            "value": None,
            "not_run": f"needs {', '.join(missing)}, not run",
            "definition": DEFINITIONS["inverse_radcliq_v1"],
        }
    _attempt(
        "ratescore",
        lambda: ratescore(predictions, references, weights.ratescore_ner, weights.ratescore_encoder),
        per_report,
        metrics,
    )
    from llmcxr.metrics.green import green_scores

    _attempt("green", lambda: green_scores(predictions, references, weights.green), per_report, metrics)
    result: dict[str, object] = {"protocol": "rexrank", "n": len(predictions), "metrics": metrics}
    if isinstance(chexbert, MetricNotRun):
        result["chexbert_f1"] = {"not_run": str(chexbert)}
    else:
        result["chexbert_f1"] = {
            **chexbert_f1(predictions, references, chexbert, "chexbert"),
            "weights_sha256": chexbert_sha256,
        }
    if keep_per_report:
        result["per_report"] = {name: values.tolist() for name, values in per_report.items()}
    return result


def _chexbert(weights: ReXrankWeights):
    """The loaded CheXbert, or the ``MetricNotRun`` that says why there is none."""
    if weights.chexbert is None or weights.chexbert_bert is None:
        return MetricNotRun("no weights: give CheXbert (safetensors) and its bert-base-uncased folder")
    from llmcxr.reports import CheXbertLabeler

    return CheXbertLabeler(weights.chexbert, weights.chexbert_bert)


def _loaded(chexbert):
    if isinstance(chexbert, MetricNotRun):
        raise chexbert
    return chexbert
