"""Reading prediction/reference files: formats, pairing by id, and the errors a user sees."""

from __future__ import annotations

import pytest

from llmcxr.errors import BadInputError
from llmcxr.evaluation.prediction_files import pair_by_id, read_rows, report_text
from llmcxr.tables import row_labels


def test_pairing_follows_reference_order_across_formats(tmp_path) -> None:
    (tmp_path / "pred.jsonl").write_text(
        '{"image_id": "b", "report": "B"}\n\n{"image_id": "a", "report": "A"}\n'
    )
    (tmp_path / "ref.csv").write_text('study_id,findings,impression\na,clear,normal\nb,"effusion, left",\n')
    pairs = pair_by_id(tmp_path / "pred.jsonl", tmp_path / "ref.csv")
    assert [key for key, _, _ in pairs] == ["a", "b"]
    assert report_text(pairs[0][2], "ref.csv") == "FINDINGS: clear IMPRESSION: normal"
    assert report_text(pairs[1][2], "ref.csv") == "FINDINGS: effusion, left"
    assert report_text(pairs[1][1], "pred.jsonl") == "B"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"id": "a"}\nnot json\n', "line 2 is not JSON"),
        ("list.jsonl", "[1, 2]\n", "line 1 is not a JSON object"),
        ("bad.txt", "a", "unknown file type"),
        ("dup.jsonl", '{"id": "a", "report": ""}\n{"id": "a", "report": ""}\n', "appears twice"),
        ("empty_id.jsonl", '{"id": "", "report": ""}\n', "empty 'id'"),
        ("empty.jsonl", "", "no rows"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    path.write_text(content)
    (tmp_path / "ref.jsonl").write_text('{"id": "a", "report": "x"}\n')
    with pytest.raises(BadInputError, match=message) as error:
        pair_by_id(path, tmp_path / "ref.jsonl")
    assert name in str(error.value)


def test_extra_predictions_and_missing_columns(tmp_path) -> None:
    (tmp_path / "pred.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "z", "text": "y"}\n')
    (tmp_path / "ref.jsonl").write_text('{"id": "a", "body": "x"}\n')
    with pytest.raises(BadInputError, match="not in the references"):
        pair_by_id(tmp_path / "pred.jsonl", tmp_path / "ref.jsonl")
    with pytest.raises(BadInputError, match="no report column"):
        report_text(read_rows(tmp_path / "ref.jsonl")[0], tmp_path / "ref.jsonl")
    with pytest.raises(BadInputError, match="file not found"):
        read_rows(tmp_path / "missing.csv")


def test_labels_from_json_text_or_object() -> None:
    assert row_labels({"labels": '{"Edema": 1, "Cardiomegaly": -1}'}, "f") == {"Edema": 1, "Cardiomegaly": -1}
    assert row_labels({"labels": {"Edema": 0, "Fracture": None}}, "f") == {"Edema": 0}
    assert row_labels({"report": "x"}, "f") is None
    with pytest.raises(BadInputError):
        row_labels({"labels": "[1"}, "f")
