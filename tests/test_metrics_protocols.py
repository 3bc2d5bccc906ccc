"""The ReXrank report protocol: formulas pinned to published values, every metric run on tiny stand-ins,
and a metric without weights listed as not run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from _tiny_protocol_models import tiny_bert, tiny_chexbert, tiny_judge
from llmcxr.metrics.green import error_counts, green_from_assessment, green_prompt, matched_findings
from llmcxr.metrics.protocols import ReXrankWeights, rexrank_report_scores
from llmcxr.metrics.radgraph import RadGraphModel
from llmcxr.metrics.rexrank import (
    bleu2,
    inverse_radcliq_v1,
    radcliq_v1,
    radgraph_entity_relation_f1,
    rexrank_tokens,
    semb_score,
)

# Rows of ReXrank's results/findings_result_mimiccxr.csv (gh-pages branch of rajpurkarlab/ReXrank):
# model, BLEU, BertScore, SembScore, RadGraph, 1/RadCliQ-v1, as published (3 decimals).
REXRANK_ROWS = [
    ("CheXagent", 0.113, 0.346, 0.347, 0.148, 0.741),
    ("CheXpertPlus-MIMIC", 0.145, 0.361, 0.375, 0.17, 0.788),
    ("MedVersa", 0.209, 0.448, 0.466, 0.273, 1.103),
    ("RadFM", 0.087, 0.313, 0.259, 0.109, 0.65),
    ("LLM-CXR", 0.037, 0.181, 0.156, 0.046, 0.516),
    ("GPT4V", 0.068, 0.207, 0.214, 0.084, 0.558),
    ("Libra", 0.232, 0.402, 0.403, 0.218, 0.898),
    ("UniRG-CXR", 0.248, 0.493, 0.487, 0.265, 1.217),
]


@pytest.mark.parametrize("row", REXRANK_ROWS, ids=[r[0] for r in REXRANK_ROWS])
def test_inverse_radcliq_v1_equals_the_board_from_its_four_inputs(row) -> None:
    _, bleu, bertscore, semb, radgraph, published = row
    assert abs(inverse_radcliq_v1(radgraph, bertscore, semb, bleu) - published) < 0.003


def test_radcliq_v1_is_linear_so_the_mean_of_reports_follows_from_the_means() -> None:
    rng = np.random.default_rng(0)
    columns = rng.uniform(0, 1, size=(4, 50))
    per_report = radcliq_v1(*columns)
    assert per_report.shape == (50,)
    assert np.isclose(per_report.mean(), radcliq_v1(*columns.mean(axis=1)))
    # better inputs, lower RadCliQ-v1
    assert radcliq_v1(0.9, 0.9, 0.9, 0.9) < radcliq_v1(0.1, 0.1, 0.1, 0.1)


def test_bleu2_matches_fast_bleus_published_example() -> None:
    """fast_bleu's README (the BLEU CXR-Report-Metric calls): BLEU-2 0.7453559924999299 and
    0.0191380231127159 for its two hypotheses against three references."""
    ref1 = "It is a guide to action that ensures that the military will forever heed Party commands".split()
    ref2 = "It is the guiding principle which guarantees the military forces always being under the command of the Party".split()
    ref3 = "It is the practical guide for the army always to heed the directions of the party".split()
    hyp1 = "It is a guide to action which ensures that the military always obeys the commands of the party".split()
    hyp2 = "he read the book because he was interested in world history".split()
    assert bleu2(hyp1, [ref1, ref2, ref3]) == pytest.approx(0.7453559924999299, abs=1e-12)
    assert bleu2(hyp2, [ref1, ref2, ref3]) == pytest.approx(0.0191380231127159, abs=1e-12)


def test_bleu2_by_hand_and_against_fast_bleu_where_installed() -> None:
    # "a c" vs "a b c": unigram 2/2, bigram 0/1 -> smoothed 0.1/1, brevity exp(1 - 3/2)
    assert bleu2(["a", "c"], [["a", "b", "c"]]) == pytest.approx(math.exp(-0.5) * math.sqrt(0.1))
    assert bleu2([], [["a"]]) == 0.0 and bleu2(["x"], [["a"]]) == 0.0
    assert rexrank_tokens("No effusion.\nMild  edema.") == ["no", "effusion", ".\nmild", "edema", "."]
    fast_bleu = pytest.importorskip("fast_bleu")
    sentences = [
        "The lungs are clear. No pleural effusion.",
        "Mild cardiomegaly.\nSmall left pleural effusion.",
        "No acute cardiopulmonary process.",
        "",
        "Heart size is normal. The lungs are clear bilaterally, no effusion.",
    ]
    for prediction in sentences:
        for reference in sentences[:3] + sentences[4:]:
            p, r = rexrank_tokens(prediction), rexrank_tokens(reference)
            expected = fast_bleu.BLEU([r], {"b": (0.5, 0.5)}).get_score([p])["b"][0]
            assert bleu2(p, [r]) == pytest.approx(expected, abs=1e-12)


def test_radgraph_entity_relation_f1_by_hand() -> None:
    def graph(*entities):
        return {"entities": {str(i): e for i, e in enumerate(entities, 1)}}

    effusion = {"tokens": "effusion", "label": "OBS-DP", "relations": [["located_at", "2"]]}
    left = {"tokens": "left", "label": "ANAT-DP", "relations": []}
    reference = graph(effusion, left)
    # same entities, no relation: entity F1 1, relation F1 0
    assert radgraph_entity_relation_f1(reference, graph({**effusion, "relations": []}, left)) == 0.5
    assert radgraph_entity_relation_f1(reference, reference) == 1.0
    # one of two entities: P 1, R 1/2 -> F1 2/3; relations none -> 0
    assert radgraph_entity_relation_f1(reference, graph(left)) == pytest.approx(1 / 3)
    assert radgraph_entity_relation_f1(graph(), graph()) == 0.0


def test_semb_score_is_the_cosine() -> None:
    scores = semb_score(
        np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    )
    assert scores == pytest.approx([1.0, 1 / math.sqrt(2), 0.0])


def test_green_reads_the_judges_counts() -> None:
    assessment = (
        "[Explanation]:\nThe candidate misses the effusion.\n\n"
        "[Clinically Significant Errors]:\n(a) False report of a finding in the candidate: 1. Edema\n"
        "(b) Missing a finding present in the reference: 2. Effusion; nodule\n(c) Misidentification: 0.\n\n"
        "[Clinically Insignificant Errors]:\n(a) False report: 3. x\n\n"
        "[Matched Findings]:\n3. Cardiomegaly; tube; line\n"
    )
    assert error_counts(assessment) == [1, 2, 0, 0, 0, 0]
    assert matched_findings(assessment) == 3
    assert green_from_assessment(assessment) == pytest.approx(3 / 6)
    assert green_from_assessment("[Matched Findings]:\n0. none") == 0.0
    assert green_from_assessment("no format at all") == 0.0
    prompt = green_prompt("Left effusion. " * 400, "No effusion.")
    assert "2. Reference Report:\n" in prompt and "f) Omitting a comparison" in prompt
    assert prompt.count("Left effusion.") == 150  # the first 300 words only (2 per sentence)


def test_without_weights_only_bleu_runs_and_the_rest_say_why() -> None:
    result = rexrank_report_scores(["No effusion."], ["Small left effusion."])
    metrics = result["metrics"]
    assert metrics["bleu2"]["value"] == pytest.approx(
        bleu2(["no", "effusion", "."], [rexrank_tokens("Small left effusion.")])
    )
    for name in ("bertscore", "semb_score", "radgraph", "ratescore", "green"):
        assert metrics[name]["value"] is None and metrics[name]["not_run"].startswith("no weights"), name
    assert "needs radgraph, bertscore, semb_score, not run" == metrics["inverse_radcliq_v1"]["not_run"]
    assert result["chexbert_f1"]["not_run"].startswith("no weights")


@pytest.mark.slow
def test_every_metric_runs_on_tiny_stand_ins(tmp_path: Path, monkeypatch) -> None:
    from _tiny_radgraph import make_tiny_radgraph

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    chexbert, chexbert_bert = tiny_chexbert(tmp_path / "chexbert")
    weights = ReXrankWeights(
        bertscore=tiny_bert(tmp_path / "bertscore"),
        bertscore_layer=2,
        chexbert=chexbert,
        chexbert_bert=chexbert_bert,
        radgraph=RadGraphModel(make_tiny_radgraph(tmp_path / "radgraph")),
        green=tiny_judge(tmp_path / "judge"),
    )
    from llmcxr.metrics import green as green_module

    original = green_module.green_scores
    monkeypatch.setattr(green_module, "green_scores", lambda p, r, f: original(p, r, f, max_new_tokens=4))
    references = ["mild pulmonary edema and cardiomegaly.", "no acute cardiopulmonary process."]
    predictions = ["mild pulmonary edema and cardiomegaly.", "moderate pleural effusion"]
    result = rexrank_report_scores(predictions, references, weights, keep_per_report=True)
    metrics, per_report = result["metrics"], result["per_report"]
    for name in ("bleu2", "bertscore", "semb_score", "radgraph"):
        assert per_report[name][0] == pytest.approx(1.0), name  # the identical pair
        assert per_report[name][1] < 1.0, name
        assert len(metrics[name].get("weights_sha256", "x" * 64)) == 64
    means = [np.mean(per_report[name]) for name in ("radgraph", "bertscore", "semb_score", "bleu2")]
    assert metrics["inverse_radcliq_v1"]["value"] == pytest.approx(inverse_radcliq_v1(*means))
    assert 0.0 <= metrics["green"]["value"] <= 1.0  # a random judge writes no counts: 0
    assert "not_run" in metrics["ratescore"]
    f1 = result["chexbert_f1"]
    assert set(f1["uncertain_positive"]) >= {"micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5"}
    assert f1["uncertain_negative"]["convention"].endswith("uncertain=0")
