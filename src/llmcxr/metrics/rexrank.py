"""The ReXrank report metrics as the board computes them: pure formulas, no models.

ReXrank (Zhang et al. 2024, github rajpurkarlab/ReXrank) scores generated findings with the
CXR-Report-Metric code (github rajpurkarlab/CXR-Report-Metric, ``CXRMetric/run_eval.py``) plus
RaTEScore and GREEN. This module holds the parts of that code that are arithmetic, stated once:

- ``rexrank_tokens`` / ``bleu2``: BLEU-2 per report as ``add_bleu_col`` computes it: lower-case,
  ``"."`` -> ``" ."``, split on single spaces (newlines stay inside tokens, as there), then the
  ``fast_bleu`` package's BLEU with weights (1/2, 1/2), a C++ port of NLTK's BLEU with smoothing
  method 1 (a zero n-gram count becomes 0.1 / the n-gram total) and the closest reference length.
- ``radgraph_entity_relation_f1``: RadGraph F1 as ``radgraph_evaluate_model.py`` computes it:
  (F1 of the (tokens, label) entity sets + F1 of the (entity, entity, relation) sets) / 2.
- ``semb_score``: cosine of the two reports' CheXbert [CLS] embeddings (``add_semb_col``).
- ``radcliq_v1``: the composite, a linear model over the four per-report scores, standardised by
  the scaler fitted with it (``CXRMetric/radcliq-v1.pkl``). ReXrank publishes 1/mean(RadCliQ-v1).

The models that produce embeddings and graphs run in ``llmcxr.metrics.report_models``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

# RadCliQ-v1 (Yu et al. 2023, "Evaluating progress in automatic chest X-ray radiology report
# generation", Patterns): read from CXR-Report-Metric's CXRMetric/radcliq-v1.pkl (sklearn 1.1.1
# StandardScaler + coefficients) by disassembling the pickle's opcodes, never unpickling it; the same
# numbers stand in radeval's RadCliQv1/radcliq.py. Column order of run_eval.py's COLS.
RADCLIQ_V1_COLUMNS = ("radgraph", "bertscore", "semb_score", "bleu2")
RADCLIQ_V1_MEAN = (0.5379231241355762, 0.6175725628125001, 0.7647942121140658, 0.44738335396242174)
RADCLIQ_V1_SCALE = (0.3028258411486429, 0.22430938459304575, 0.2539439110169773, 0.2989271671041838)
RADCLIQ_V1_COEFS = (-0.37708368261038905, -0.37030009974480316, -0.25261621789593225, 4.315048405024756e-12)
RADCLIQ_V1_INTERCEPT = 2.466552561323256e-10


def rexrank_tokens(report: str) -> list[str]:
    """CXR-Report-Metric's ``prep_reports``: "No effusion.\\nMild edema." -> ["no", "effusion", ".\\nmild", "edema", "."]."""
    return [token for token in str(report).lower().replace(".", " .").split(" ") if token != ""]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu2(prediction: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """BLEU-2 of one tokenized prediction against its tokenized reference(s), as ``fast_bleu.BLEU``
    (weights (1/2, 1/2), smoothing method 1) scores one hypothesis: clipped n-gram precisions, the
    brevity penalty against the closest reference length (ties: the shorter)."""
    if not references:
        raise ValueError("bleu2 needs at least one reference")
    log_sum = 0.0
    for n in (1, 2):
        counts = _ngrams(prediction, n)
        most = Counter()
        for reference in references:
            for gram, count in _ngrams(reference, n).items():
                most[gram] = max(most[gram], count)
        matched = sum(min(count, most[gram]) for gram, count in counts.items())
        total = max(1, sum(counts.values()))
        if n == 1 and matched == 0:
            return 0.0
        log_sum += 0.5 * math.log((matched if matched else 0.1) / total)
    length = len(prediction)
    closest = min((abs(len(r) - length), len(r)) for r in references)[1]
    penalty = 1.0 if length > closest else math.exp(1 - closest / length)
    return penalty * math.exp(log_sum)


def rexrank_bleu2(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(N,) per-report BLEU-2 of report texts, tokenized as ReXrank does."""
    _same_length(predictions, references)
    return np.array(
        [bleu2(rexrank_tokens(p), [rexrank_tokens(r)]) for p, r in zip(predictions, references, strict=True)]
    )


def set_f1(reference: set, predicted: set) -> float:
    """F1 of two sets, 0 where precision + recall is 0 (``compute_f1`` of radgraph_evaluate_model.py)."""
    true_positives = len(reference & predicted)
    precision = true_positives / len(predicted) if predicted else 0.0
    recall = true_positives / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def graph_sets(annotation: Mapping) -> tuple[set, set]:
    """A RadGraph annotation ({"entities": {id: {"tokens", "label", "relations": [[relation, id]]}}})
    -> its entity set {(tokens, label)} and relation set {((tokens, label), (tokens, label), relation)}."""
    entities = annotation.get("entities") or {}

    def key(entity: Mapping) -> tuple[str, str]:
        return str(entity["tokens"]), str(entity["label"])

    relations = {
        (key(entity), key(entities[str(target)]), str(relation))
        for entity in entities.values()
        for relation, target in entity.get("relations", [])
        if str(target) in entities
    }
    return {key(entity) for entity in entities.values()}, relations


def radgraph_entity_relation_f1(reference: Mapping, predicted: Mapping) -> float:
    """ReXrank's RadGraph F1 of one report pair: (entity F1 + relation F1) / 2."""
    reference_entities, reference_relations = graph_sets(reference)
    predicted_entities, predicted_relations = graph_sets(predicted)
    return (
        set_f1(reference_entities, predicted_entities) + set_f1(reference_relations, predicted_relations)
    ) / 2


def semb_score(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) cosine of each pair of CheXbert embeddings (N, D); a zero vector scores 0."""
    predicted, reference = np.asarray(predicted, np.float64), np.asarray(reference, np.float64)
    if predicted.shape != reference.shape:
        raise ValueError(f"embedding shapes differ: {predicted.shape} vs {reference.shape}")
    norms = np.linalg.norm(predicted, axis=1) * np.linalg.norm(reference, axis=1)
    dots = np.einsum("nd,nd->n", predicted, reference)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def radcliq_v1(radgraph: np.ndarray, bertscore: np.ndarray, semb: np.ndarray, bleu: np.ndarray) -> np.ndarray:
    """RadCliQ-v1 per report (lower is better) from the four per-report scores, each (N,) or scalar.

    Linear in its inputs, so the mean of per-report scores equals RadCliQ-v1 of the mean inputs:
    the board's 1/RadCliQ-v1 follows from its published means (``inverse_radcliq_v1``)."""
    columns = np.broadcast_arrays(*(np.asarray(x, np.float64) for x in (radgraph, bertscore, semb, bleu)))
    standardised = [(x - m) / s for x, m, s in zip(columns, RADCLIQ_V1_MEAN, RADCLIQ_V1_SCALE, strict=True)]
    return sum(c * x for c, x in zip(RADCLIQ_V1_COEFS, standardised, strict=True)) + RADCLIQ_V1_INTERCEPT


def inverse_radcliq_v1(radgraph: float, bertscore: float, semb: float, bleu: float) -> float:
    """What ReXrank publishes as "1/RadCliQ-v1": 1 / mean RadCliQ-v1 (higher is better)."""
    return float(1.0 / radcliq_v1(radgraph, bertscore, semb, bleu))


def _same_length(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions vs {len(references)} references")
    if not predictions:
        raise ValueError("no reports to score")
