"""Language scores pinned to hand-computed values on fixed strings."""

from __future__ import annotations

import shutil

import pytest

from llmcxr.metrics import language
from llmcxr.metrics.language import language_scores, tokenize_report


def test_tokenizer_lowercases_and_drops_punctuation() -> None:
    assert (
        tokenize_report("Mild cardiomegaly. No effusion, 2.5 cm!") == "mild cardiomegaly no effusion 2.5 cm"
    )
    assert tokenize_report("  \n") == ""


def test_bleu_and_rouge_by_hand() -> None:
    scores = language_scores(["The cat sat on the mat."], ["the cat is on the mat"], meteor=False)
    # 1-grams: the x2, cat, on, mat match of 6 -> 5/6; 2-grams 3/5; 3-grams 1/4; 4-grams 0/3; equal lengths: BP 1.
    assert scores["bleu_1"] == pytest.approx(5 / 6)
    assert scores["bleu_2"] == pytest.approx((5 / 6 * 3 / 5) ** 0.5)
    assert scores["bleu_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert scores["bleu_4"] < 1e-3
    # LCS "the cat on the mat" = 5 of 6 both ways: P = R = F = 5/6.
    assert scores["rouge_l"] == pytest.approx(5 / 6)


def test_rouge_l_uses_beta_1_2() -> None:
    scores = language_scores(["a b c"], ["a b c d e"], meteor=False)
    precision, recall, beta2 = 1.0, 0.6, 1.2**2
    assert scores["rouge_l"] == pytest.approx((1 + beta2) * precision * recall / (recall + beta2 * precision))


def test_bleu_brevity_penalty() -> None:
    scores = language_scores(["a b c"], ["a b c d e"], meteor=False)
    # all 1-grams match; BP = exp(1 - 5/3).
    assert scores["bleu_1"] == pytest.approx(2.718281828 ** (1 - 5 / 3), rel=1e-6)


def test_cider_of_perfect_and_wrong_reports() -> None:
    references = ["heart size is normal", "small left pleural effusion", "lungs are clear bilaterally"]
    # Every n-gram occurs in one reference only: idf = log(3) > 0, cosine 1, no length penalty: 10 * 1.
    assert language_scores(references, references, meteor=False)["cider"] == pytest.approx(10.0)
    shuffled = references[1:] + references[:1]
    assert language_scores(shuffled, references, meteor=False)["cider"] == pytest.approx(0.0)


def test_several_references_per_report() -> None:
    scores = language_scores(["no acute disease"], [["no acute disease", "normal chest"]], meteor=False)
    assert scores["bleu_1"] == pytest.approx(1.0) and scores["rouge_l"] == pytest.approx(1.0)


def test_meteor_missing_without_java(monkeypatch) -> None:
    monkeypatch.setattr(language.shutil, "which", lambda name: None)
    scores = language_scores(["no effusion"], ["no effusion"])
    assert scores["meteor"] is None
    assert "java" in scores["missing"]["meteor"]
    assert scores["bleu_1"] == pytest.approx(1.0)


@pytest.mark.slow  # the METEOR jar loads a 60 MB paraphrase table: ~15 s on 2 busy cores
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")
def test_meteor_with_java() -> None:
    exact = language_scores(["The heart is normal in size."], ["the heart is normal in size"])
    assert exact["missing"] == {}
    assert exact["meteor"] == pytest.approx(1.0)  # METEOR 1.5 scores an exact match 1


def test_counts_must_agree() -> None:
    with pytest.raises(ValueError):
        language_scores(["a"], ["a", "b"], meteor=False)
