"""Clinical efficacy metrics pinned to hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_5, CHEXPERT_14
from llmcxr.metrics.clinical import (
    LabelConvention,
    auroc_per_class,
    binarize_labels,
    chexpert_14_labels,
    clinical_efficacy,
    precision_recall_f1,
    score_report_labels,
)

CLASSES = ("A", "B", "C")
# Four reports, three classes. C has no positives anywhere (no support, no predictions).
REFERENCE = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
PREDICTED = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]])


def test_per_class_scores_by_hand() -> None:
    table = precision_recall_f1(REFERENCE, PREDICTED, CLASSES)
    a, b, c = (table["per_class"][name] for name in CLASSES)
    # A: tp 1 (report 1), fn 1 (report 2), fp 1 (report 4).
    assert (a["precision"], a["recall"], a["f1"], a["support"], a["predicted"]) == (0.5, 0.5, 0.5, 2, 2)
    # B: tp 2 (reports 2, 3), fp 1 (report 1), fn 0.
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == 1.0 and b["f1"] == pytest.approx(0.8)
    # C: undefined everywhere -> 0 (sklearn zero_division=0), and listed.
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 0)
    assert table["undefined"] == ["C"]


def test_micro_and_macro_differ_as_computed_by_hand() -> None:
    table = precision_recall_f1(REFERENCE, PREDICTED, CLASSES)
    # micro pools tp=3, fp=2, fn=1.
    assert table["micro"]["precision"] == pytest.approx(3 / 5)
    assert table["micro"]["recall"] == pytest.approx(3 / 4)
    assert table["micro"]["f1"] == pytest.approx(6 / 9)
    # macro is the mean over the three classes, the unsupported one counting 0.
    assert table["macro"]["precision"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert table["macro"]["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert table["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_convention_decides_uncertain() -> None:
    reference = [{"Edema": -1}, {"Cardiomegaly": 1}]
    predicted = [{"Edema": 1}, {"Cardiomegaly": 1, "Edema": 0}]
    as_positive = clinical_efficacy(predicted, reference, LabelConvention("positive"))
    as_negative = clinical_efficacy(predicted, reference, LabelConvention("negative"))
    # uncertain-as-positive: both findings are hits.
    assert as_positive["micro_f1_5"] == 1.0
    # uncertain-as-negative: Edema becomes a false positive -> tp 1, fp 1 -> F1 2/3.
    assert as_negative["micro_f1_5"] == pytest.approx(2 / 3)
    # macro-5 averages five classes, three of which never occur (0 each).
    assert as_positive["macro_f1_5"] == pytest.approx(2 / 5)
    assert as_positive["macro_f1_14"] == pytest.approx(2 / 14)
    assert set(as_positive["chexpert_5"]["per_class"]) == set(CHEXPERT_5)
    assert "uncertain=1" in as_positive["convention"] and "uncertain=0" in as_negative["convention"]


def test_binarize_blank_negative_uncertain() -> None:
    rows = [{"Edema": 1, "Cardiomegaly": 0, "Atelectasis": -1}]
    assert binarize_labels(
        rows, ("Edema", "Cardiomegaly", "Atelectasis", "Fracture"), LabelConvention()
    ).tolist() == [[1, 0, 1, 0]]
    with pytest.raises(BadInputError):
        LabelConvention("maybe")


def test_auroc_hand_case_and_skipped_class() -> None:
    scores = np.array([[0.1, 0.9], [0.4, 0.2], [0.35, 0.5], [0.8, 0.3]])
    targets = np.array([[0, 0], [0, 0], [1, 0], [1, 0]])
    result = auroc_per_class(scores, targets, ("A", "B"))
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered right.
    assert result["per_class"]["A"]["auroc"] == pytest.approx(0.75)
    assert result["per_class"]["B"]["auroc"] is None and "one label value" in result["skipped"]["B"]
    assert result["macro_auroc"] == pytest.approx(0.75) and result["n_classes_scored"] == 1


def test_auroc_ties_count_half() -> None:
    result = auroc_per_class(np.array([[0.5], [0.5], [0.5], [0.8]]), np.array([[0], [1], [0], [1]]), ("A",))
    assert result["per_class"]["A"]["auroc"] == pytest.approx(0.75)


def test_report_labels_with_the_project_labeler() -> None:
    references = ["Cardiomegaly. Small left pleural effusion.", "There is pulmonary edema."]
    same = score_report_labels(references, references)
    assert same["labeler"] == "llmcxr-rules"
    assert same["micro_f1_14"] == 1.0
    wrong = score_report_labels(["No pleural effusion. Heart size is normal.", "No edema."], references)
    assert wrong["chexpert_5"]["per_class"]["Pleural Effusion"]["f1"] == 0.0
    assert wrong["chexpert_5"]["per_class"]["Edema"]["recall"] == 0.0
    assert set(wrong["chexpert_14"]["per_class"]) == set(CHEXPERT_14)


def test_chexpert_14_labels_rows_follow_the_class_order() -> None:
    rows = chexpert_14_labels(
        ["Moderate right pleural effusion. Possible cardiomegaly.", "No acute disease."]
    )
    assert rows.shape == (2, 14)
    positive = {CHEXPERT_14[j] for j in np.flatnonzero(rows[0])}
    assert positive == {"Pleural Effusion", "Cardiomegaly"}  # uncertain counts as positive by default
    assert CHEXPERT_14[int(np.flatnonzero(rows[1])[0])] == "No Finding" and rows[1].sum() == 1
