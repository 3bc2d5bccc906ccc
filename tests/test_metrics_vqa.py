"""VQA accuracy by question kind on normalised answers."""

from __future__ import annotations

import pytest

from llmcxr.metrics.vqa import answers_match, normalize_answer, vqa_accuracy
from llmcxr.records import QA


def test_normal_forms() -> None:
    assert normalize_answer("Yes, there is a pleural effusion.", "presence") == "yes"
    assert normalize_answer("No.", "presence") == "no"
    assert normalize_answer("On the LEFT side", "laterality") == "left"
    assert normalize_answer("both sides", "laterality") == "bilateral"
    assert normalize_answer("left and right", "laterality") == "bilateral"
    assert normalize_answer(
        "Cardiomegaly, pleural effusion and pulmonary edema.", "abnormalities"
    ) == frozenset({"Cardiomegaly", "Pleural Effusion", "Edema"})
    assert normalize_answer("None.", "abnormalities") == frozenset()
    assert normalize_answer("no abnormality", "abnormalities") == frozenset()
    assert normalize_answer("The heart is Enlarged!", "heart_size") == "enlarged"
    assert normalize_answer("The heart is not enlarged.", "heart_size") == "normal"
    assert normalize_answer("Yes, a central line.", "devices") == "yes"
    assert normalize_answer("Mild Opacity", "other") == "mild opacity"


def test_sets_ignore_order_and_case() -> None:
    assert answers_match("Edema and cardiomegaly", "cardiomegaly, edema", "abnormalities")
    assert answers_match("pulmonary edema", "edema", "abnormalities")
    assert not answers_match("Edema", "cardiomegaly, edema", "abnormalities")
    assert answers_match("no abnormalities", "None", "abnormalities")


def test_accuracy_by_kind() -> None:
    references = [
        QA("Is there a pleural effusion?", "yes", "presence", "Pleural Effusion"),
        QA("Is there edema?", "no", "presence", "Edema"),
        QA("Which side is the effusion on?", "left", "laterality", "Pleural Effusion"),
        QA("What abnormalities are seen?", "Pleural effusion, cardiomegaly", "abnormalities"),
    ]
    predictions = ["Yes.", "Yes, there is.", "On the left.", "cardiomegaly and pleural effusion"]
    result = vqa_accuracy(predictions, references)
    assert result["n"] == 4 and result["accuracy"] == pytest.approx(3 / 4)
    assert result["by_kind"]["presence"] == {"accuracy": 0.5, "correct": 1, "n": 2}
    assert result["by_kind"]["laterality"]["accuracy"] == 1.0
    assert result["by_kind"]["abnormalities"]["accuracy"] == 1.0
    with pytest.raises(ValueError):
        vqa_accuracy(predictions[:2], references)
