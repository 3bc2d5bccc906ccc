"""RadGraph F1 where the user has the model: clear errors without it, and the scores of the package."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmcxr.cli import app
from llmcxr.errors import BadInputError
from llmcxr.metrics.radgraph import RadGraphModel, radgraph_f1

BERT_NAME = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract-fulltext"  # what the release names


def released_layout(folder: Path, bert_name: str = BERT_NAME) -> Path:
    """A folder with the release's three entries (contents are not read before the package runs)."""
    (folder / "vocabulary").mkdir(parents=True)
    (folder / "weights.th").write_bytes(b"")
    bert = {"bert": {"model_name": bert_name}}
    config = {"dataset_reader": {"token_indexers": bert}, "model": {"embedder": {"token_embedders": bert}}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_missing_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="weights.th, vocabulary missing"):
        (tmp_path / "config.json").write_text("{}")
        radgraph_f1(["a"], ["b"], RadGraphModel(tmp_path))
    with pytest.raises(BadInputError, match="not a chest X-ray RadGraph model"):
        radgraph_f1(["a"], ["b"], RadGraphModel(released_layout(tmp_path / "m"), "echograph"))
    (tmp_path / "bad").mkdir()
    released_layout(tmp_path / "bad" / "m")
    (tmp_path / "bad" / "m" / "config.json").write_text('{"model": {}}')
    with pytest.raises(BadInputError, match="not a RadGraph"):
        radgraph_f1(["a"], ["b"], RadGraphModel(tmp_path / "bad" / "m"))
    with pytest.raises(BadInputError, match="1 predictions for 2 references"):
        radgraph_f1(["a"], ["b", "c"], RadGraphModel(released_layout(tmp_path / "n")))


def test_without_the_package_or_its_bert_the_error_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    model = RadGraphModel(released_layout(tmp_path / "m"))
    monkeypatch.setitem(sys.modules, "radgraph", None)  # import fails as if not installed
    with pytest.raises(BadInputError, match=r'pip install "llmcxr\[radgraph\]"'):
        radgraph_f1(["a"], ["b"], model)
    monkeypatch.setitem(sys.modules, "radgraph", types.SimpleNamespace(F1RadGraph=None))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # never a download: a clear error
    with pytest.raises(BadInputError, match="not in the local Hugging Face cache"):
        radgraph_f1(["a"], ["b"], model)
    with pytest.raises(BadInputError, match="BERT folder not found"):
        radgraph_f1(["a"], ["b"], RadGraphModel(model.folder, bert_folder=tmp_path / "nowhere"))


def test_the_package_runs_on_a_staged_copy_naming_the_local_bert(tmp_path: Path, monkeypatch) -> None:
    """What llmcxr hands the package (a cache folder whose config names the local BERT, the user's
    weights linked, not copied) and how its (means, per-pair) answer becomes the result."""
    seen = install_fake_package(monkeypatch)
    (tmp_path / "bert").mkdir()
    model = RadGraphModel(released_layout(tmp_path / "m"), "radgraph-xl", tmp_path / "bert")
    result = radgraph_f1(["hyp 1", "hyp 2"], ["ref 1", "ref 2"], model)
    assert seen["config"]["model"]["embedder"]["token_embedders"]["bert"]["model_name"] == str(
        tmp_path / "bert"
    )
    assert seen["config"]["dataset_reader"]["token_indexers"]["bert"]["model_name"] == str(tmp_path / "bert")
    assert seen["weights"] == (tmp_path / "m" / "weights.th").resolve()
    assert (seen["reward_level"], seen["pairs"]) == ("all", [("hyp 1", "ref 1"), ("hyp 2", "ref 2")])
    assert (result["simple"], result["partial"], result["complete"]) == (0.75, 0.625, 0.25)
    assert result["radgraph_f1"] == result["partial"]
    assert result["per_report"][1] == {"simple": 0.5, "partial": 0.25, "complete": 0.0}
    assert (result["model_type"], result["n"]) == ("radgraph-xl", 2)


def test_eval_reports_adds_radgraph_f1(tmp_path: Path, monkeypatch) -> None:
    install_fake_package(monkeypatch)
    rows = [{"id": "a", "report": "Small left effusion."}, {"id": "b", "report": "No edema."}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    files = ["eval", "reports", "--pred", str(tmp_path / "r.jsonl"), "--ref", str(tmp_path / "r.jsonl")]
    out = tmp_path / "eval.json"
    (tmp_path / "bert").mkdir()
    model = ["--radgraph", str(released_layout(tmp_path / "m")), "--radgraph-bert", str(tmp_path / "bert")]
    result = CliRunner().invoke(app, [*files, "--no-meteor", *model, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "radgraph_partial" in result.output
    assert json.loads(out.read_text())["radgraph"]["partial"] == 0.625
    result = CliRunner().invoke(app, [*files, "--no-meteor", "--radgraph", str(tmp_path / "none")])
    assert isinstance(result.exception, BadInputError) and "config.json" in str(result.exception)
    assert not (tmp_path / "none").exists()


def install_fake_package(monkeypatch) -> dict:
    """A stand-in ``radgraph`` package that records what it was handed and answers fixed scores."""
    seen = {}

    class FakeF1RadGraph:
        def __init__(self, reward_level, model_type, model_cache_dir):
            staged = Path(model_cache_dir) / model_type
            seen["config"] = json.loads((staged / "config.json").read_text())
            seen["weights"] = (staged / "weights.th").resolve()
            seen["reward_level"] = reward_level

        def __call__(self, refs, hyps):
            seen["pairs"] = list(zip(hyps, refs, strict=True))
            per_pair = ([1.0, 0.5], [1.0, 0.25], [0.5, 0.0])  # simple, partial, complete
            return tuple(sum(v) / 2 for v in per_pair), per_pair, [], []

    monkeypatch.setitem(sys.modules, "radgraph", types.SimpleNamespace(F1RadGraph=FakeF1RadGraph))
    return seen


def test_a_tiny_random_radgraph_model_scores_end_to_end(tmp_path: Path) -> None:
    """The real package on a tiny random model (tests/_tiny_radgraph.py), offline: what llmcxr reports
    is what the package itself gives on the same model; identical reports score 1, empty ones 0."""
    if importlib.util.find_spec("radgraph") is None:  # installed but not importable is a failure
        pytest.skip('the optional radgraph package is not installed (pip install "llmcxr[radgraph]")')
    import radgraph
    from transformers import PreTrainedTokenizerBase

    from _tiny_radgraph import make_tiny_radgraph
    from llmcxr.metrics.radgraph import tokenizer_methods_radgraph_calls

    model = make_tiny_radgraph(tmp_path / "tiny")
    predictions = ["no acute cardiopulmonary process", "unchanged mild pulmonary edema", ""]
    references = [
        "no acute cardiopulmonary process",
        "mild pulmonary edema and moderate cardiomegaly",
        "edema",
    ]
    result = radgraph_f1(predictions, references, RadGraphModel(model))
    assert result["per_report"][0] == {"simple": 1.0, "partial": 1.0, "complete": 1.0}
    assert 0 < result["per_report"][1]["simple"] < 1
    assert result["per_report"][2] == {"simple": 0.0, "partial": 0.0, "complete": 0.0}
    with tokenizer_methods_radgraph_calls():
        scorer = radgraph.F1RadGraph(
            reward_level="all", model_type="radgraph", model_cache_dir=str(tmp_path / "tiny")
        )
        means, per_pair, _, _ = scorer(refs=references, hyps=predictions)
    assert [result[level] for level in ("simple", "partial", "complete")] == pytest.approx(list(means))
    assert [r["partial"] for r in result["per_report"]] == pytest.approx(per_pair[1])
    assert not hasattr(PreTrainedTokenizerBase, "encode_plus")  # the shims do not outlive the call

    silent = make_tiny_radgraph(tmp_path / "silent", "radgraph-xl", no_entities=True)
    nothing = radgraph_f1(predictions[:2], references[:2], RadGraphModel(silent, "radgraph-xl"))
    assert (nothing["simple"], nothing["partial"], nothing["complete"]) == (0.0, 0.0, 0.0)
