"""The RaTEScore wiring, with a stand-in ``RaTEScore`` module in place of the package (which needs
medspacy, whose spaCy pins numpy < 2): the local folders reach the scorer, per-report scores are
averaged, the weights are hashed, and missing folders are listed as not run."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from llmcxr.errors import BadInputError
from llmcxr.metrics.protocols import ReXrankWeights, rexrank_report_scores
from llmcxr.metrics.report_models import MetricNotRun, ratescore, weights_sha256

PREDICTIONS = ["no effusion", "mild cardiomegaly with edema", "normal"]
REFERENCES = ["small effusion", "cardiomegaly", "normal chest"]


class StandInScorer:
    """The interface the wrapper calls: ``RaTEScore(bert_model, eval_model, use_gpu)`` and
    ``compute_score(candidates, references) -> list[float]``; a word-overlap score stands in."""

    made: list[dict] = []

    def __init__(self, bert_model: str, eval_model: str, use_gpu: bool = True) -> None:
        StandInScorer.made.append({"bert_model": bert_model, "eval_model": eval_model, "use_gpu": use_gpu})

    def compute_score(self, candidates: list[str], references: list[str]) -> list[float]:
        def overlap(a: str, b: str) -> float:
            left, right = set(a.split()), set(b.split())
            return len(left & right) / len(left | right)

        return [overlap(c, r) for c, r in zip(candidates, references, strict=True)]


def _folder(path: Path, weights: bytes) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


@pytest.fixture
def stand_in(monkeypatch):
    module = types.ModuleType("RaTEScore")
    module.RaTEScore = StandInScorer
    monkeypatch.setitem(sys.modules, "RaTEScore", module)
    StandInScorer.made.clear()
    return StandInScorer


def test_ratescore_passes_folders_and_averages(stand_in, tmp_path: Path) -> None:
    ner, encoder = _folder(tmp_path / "ner", b"ner"), _folder(tmp_path / "biolord", b"enc")
    result = ratescore(PREDICTIONS, REFERENCES, ner, encoder)
    assert stand_in.made == [{"bert_model": str(ner), "eval_model": str(encoder), "use_gpu": False}]
    expected = [1 / 3, 1 / 4, 1 / 2]  # word overlaps, by hand
    np.testing.assert_allclose(result["per_report"], expected)
    assert result["weights_sha256"] == {"ner": weights_sha256(ner), "encoder": weights_sha256(encoder)}
    assert result["weights_sha256"]["ner"] != result["weights_sha256"]["encoder"]
    protocol = rexrank_report_scores(
        PREDICTIONS, REFERENCES, ReXrankWeights(ratescore_ner=ner, ratescore_encoder=encoder)
    )
    entry = protocol["metrics"]["ratescore"]
    assert entry["value"] == pytest.approx(np.mean(expected))
    assert entry["weights_sha256"]["ner"] == weights_sha256(ner) and "not_run" not in entry


def test_ratescore_without_folders_or_package_is_not_run(stand_in, tmp_path: Path, monkeypatch) -> None:
    ner = _folder(tmp_path / "ner", b"ner")
    entry = rexrank_report_scores(PREDICTIONS, REFERENCES, ReXrankWeights(ratescore_ner=ner))["metrics"]
    assert entry["ratescore"]["value"] is None and "no weights" in entry["ratescore"]["not_run"]
    assert stand_in.made == []
    with pytest.raises(BadInputError, match="no config.json"):
        ratescore(PREDICTIONS, REFERENCES, ner, tmp_path)
    monkeypatch.setitem(sys.modules, "RaTEScore", None)  # import fails, as without the package
    with pytest.raises(MetricNotRun, match="not importable"):
        ratescore(PREDICTIONS, REFERENCES, ner, ner)
