"""The learned report metrics of the ReXrank protocol, each run from a local folder the user gives.

None of these networks ships with llmcxr and none is ever downloaded: every function takes the folder
(or file) of the weights, and every result names them by SHA-256 (``weights_sha256``), since a
BERTScore from another backbone, or a SembScore from another CheXbert, is a different number.

- ``bertscore_f1``: BERTScore F1 (Zhang et al. 2020) by the ``bert-score`` package, as
  CXR-Report-Metric's ``add_bertscore_col`` calls it: distilroberta-base, its 5th layer (bert-score's
  default for that model), no idf, rescaled with the package's distilroberta-base baseline; runs of
  spaces collapsed first.
- ``chexbert_semb``: SembScore, the cosine of CheXbert [CLS] embeddings (``rexrank.semb_score``).
- ``radgraph_combined``: RadGraph (entity F1 + relation F1) / 2 from the RadGraph model's graphs.
- ``ratescore``: RaTEScore (Zhao et al. 2024) by the ``RaTEScore`` package, from a local NER model
  and a local synonym encoder (its defaults: Angelakeke/RaTE-NER-Deberta, FremyCompany/BioLORD-2023-C).

A metric that cannot run here raises ``MetricNotRun`` with the reason; the protocol lists it as not
run, never as zero.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmcxr.errors import BadInputError
from llmcxr.hashing import update_with_file
from llmcxr.metrics.radgraph import RadGraphModel, radgraph_annotations, tokenizer_methods_radgraph_calls
from llmcxr.metrics.rexrank import radgraph_entity_relation_f1, semb_score

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".th", ".pt", ".pth", ".ckpt")
BERTSCORE_MODEL = "distilroberta-base"
BERTSCORE_LAYER = 5  # bert_score.utils.model2layers["distilroberta-base"]


class MetricNotRun(Exception):
    """A metric that cannot run here; the message says why (missing weights, package, ...)."""


def weights_sha256(path: str | Path) -> str:
    """SHA-256 over a weights file, or over a folder's weight files (names and bytes, sorted)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise BadInputError(
            path, "no weight files here", f"give a folder holding {', '.join(WEIGHT_SUFFIXES)} files"
        )
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        update_with_file(digest, file)
    return digest.hexdigest()


def _local_folder(folder: str | Path | None, what: str) -> Path:
    if folder is None:
        raise MetricNotRun(f"no weights: give a local {what} folder")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BadInputError(folder, f"no config.json: not a local {what} folder", "give the model's folder")
    return folder


def bertscore_f1(
    predictions: Sequence[str],
    references: Sequence[str],
    folder: str | Path | None,
    num_layers: int = BERTSCORE_LAYER,
    baseline: str | Path | None = None,
) -> dict[str, object]:
    """(N,) BERTScore F1 per report, rescaled with a baseline (default: bert-score's distilroberta-base
    file, the protocol's), from a local model folder (distilroberta-base for the protocol)."""
    folder = _local_folder(folder, BERTSCORE_MODEL)
    try:
        import bert_score
        from bert_score import BERTScorer
    except ImportError as error:
        raise MetricNotRun(
            f"the bert-score package is not importable ({error}): pip install 'llmcxr[protocols]'"
        ) from error
    if baseline is None:
        baseline = Path(bert_score.__file__).parent / "rescale_baseline" / "en" / f"{BERTSCORE_MODEL}.tsv"
    if not Path(baseline).is_file():
        raise BadInputError(baseline, "BERTScore baseline file not found", "give the rescale baseline .tsv")
    squeeze = lambda texts: [re.sub(r" +", " ", text) for text in texts]  # noqa: E731  (as add_bertscore_col)
    scorer = BERTScorer(
        model_type=str(folder),
        num_layers=num_layers,
        lang="en",
        rescale_with_baseline=True,
        baseline_path=str(baseline),
        idf=False,
    )
    with (
        tokenizer_methods_radgraph_calls()
    ):  # bert-score encodes an empty report with a method transformers 5 dropped
        _, _, f1 = scorer.score(squeeze(predictions), squeeze(references))
    return {
        "per_report": f1.double().numpy(),
        "model": str(folder),
        "layer": num_layers,
        "baseline": Path(baseline).name,
        "weights_sha256": weights_sha256(folder),
    }


def chexbert_semb(predictions: Sequence[str], references: Sequence[str], chexbert) -> dict[str, object]:
    """(N,) SembScore per report with a loaded ``llmcxr.reports.CheXbertLabeler``."""
    return {"per_report": semb_score(chexbert.embed(list(predictions)), chexbert.embed(list(references)))}


def radgraph_combined(
    predictions: Sequence[str], references: Sequence[str], model: RadGraphModel | None
) -> dict[str, object]:
    """(N,) ReXrank RadGraph per report: (entity F1 + relation F1) / 2 of the two reports' graphs."""
    if model is None:
        raise MetricNotRun("no weights: give the extracted RadGraph model folder")
    graphs = radgraph_annotations([*predictions, *references], model)
    predicted, reference = graphs[: len(predictions)], graphs[len(predictions) :]
    return {
        "per_report": np.array(
            [radgraph_entity_relation_f1(r, p) for p, r in zip(predicted, reference, strict=True)]
        ),
        "model_type": model.model_type,
        "weights_sha256": weights_sha256(Path(model.folder) / "weights.th"),
    }


def ratescore(
    predictions: Sequence[str],
    references: Sequence[str],
    ner_folder: str | Path | None,
    encoder_folder: str | Path | None,
) -> dict[str, object]:
    """(N,) RaTEScore per report by the ``RaTEScore`` package on CPU, from two local folders."""
    if ner_folder is None or encoder_folder is None:
        raise MetricNotRun("no weights: give local RaTE-NER and BioLORD folders")
    ner, encoder = _local_folder(ner_folder, "RaTE-NER"), _local_folder(encoder_folder, "BioLORD")
    try:
        from RaTEScore import RaTEScore
    except ImportError as error:  # it needs medspacy, whose spaCy 3.7 pins numpy < 2
        raise MetricNotRun(f"the RaTEScore package is not importable ({error})") from error
    scorer = RaTEScore(bert_model=str(ner), eval_model=str(encoder), use_gpu=False)
    scores = scorer.compute_score(list(predictions), list(references))
    return {
        "per_report": np.asarray(scores, np.float64),
        "weights_sha256": {"ner": weights_sha256(ner), "encoder": weights_sha256(encoder)},
    }
