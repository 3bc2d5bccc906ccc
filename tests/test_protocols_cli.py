"""ReXrank's JSON in and out, and `llmcxr eval reports/images --protocol ...` end to end on tiny files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from llmcxr.cli import app
from llmcxr.datasets.rexrank import (
    read_rexrank_json,
    rexrank_pairs,
    rexrank_records,
    write_rexrank_predictions,
)
from llmcxr.errors import BadInputError
from llmcxr.metrics.rexrank import rexrank_bleu2

TEST_JSON = {  # the layout of ReXrank's data/mimic-cxr/ReXRank_MIMICCXR_test.json, made-up text
    "50051329": {
        "image_path": ["/p10/p1/s50051329/a.jpg", "/p10/p1/s50051329/b.jpg"],
        "key_image_path": "/p10/p1/s50051329/b.jpg",
        "section_findings": "The lungs are low in volume.\nNo pleural effusions.",
        "section_impression": "No acute process.",
        "subject_id": 10046166,
        "split": "test",
    },
    "53492798": {
        "image_path": ["/p10/p1/s53492798/c.jpg"],
        "section_findings": "Mild cardiomegaly. Small left effusion.",
        "section_impression": None,
        "subject_id": 10046166,
        "split": "test",
    },
}


def _test_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.json"
    path.write_text(json.dumps(TEST_JSON))
    return path


def test_records_and_a_submission_round_trip(tmp_path: Path) -> None:
    test = _test_file(tmp_path)
    records = rexrank_records(test, tmp_path / "mimic-cxr-jpg")
    assert [r.image_id for r in records] == ["50051329", "53492798"]
    assert records[0].image_path == str(tmp_path / "mimic-cxr-jpg/p10/p1/s50051329/b.jpg")  # the key image
    assert records[1].image_path.endswith("c.jpg") and records[1].impression == ""
    assert records[0].findings.startswith("The lungs") and len(records[0].extra["image_paths"]) == 2

    with pytest.raises(BadInputError, match="1 studies have no prediction"):
        write_rexrank_predictions(test, {"50051329": "x"}, tmp_path / "sub.json")
    predictions = {"50051329": "No pleural effusion.", "53492798": "Mild cardiomegaly."}
    submission = write_rexrank_predictions(test, predictions, tmp_path / "sub.json")
    written = read_rexrank_json(submission)
    assert written["50051329"]["model_prediction"] == "No pleural effusion."
    assert written["53492798"]["section_findings"] == TEST_JSON["53492798"]["section_findings"]
    ids, preds, refs = rexrank_pairs(submission)
    assert ids == list(TEST_JSON) and preds == list(predictions.values())
    with pytest.raises(BadInputError, match="no model_prediction"):
        rexrank_pairs(test)


def test_cli_rexrank_protocol_from_a_submission(tmp_path: Path) -> None:
    test = _test_file(tmp_path)
    pred = tmp_path / "pred.jsonl"
    pred.write_text(
        '{"study_id": "50051329", "report": "No pleural effusion."}\n'
        '{"study_id": "53492798", "report": "Mild cardiomegaly."}\n'
    )
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "eval",
            "rexrank-submission",
            "--test",
            str(test),
            "--pred",
            str(pred),
            "--out",
            str(tmp_path / "s.json"),
        ],
    )
    assert made.exit_code == 0, made.output
    out = tmp_path / "eval.json"
    scored = runner.invoke(
        app,
        ["eval", "reports", "--pred", str(tmp_path / "s.json"), "--protocol", "rexrank", "--out", str(out)],
    )
    assert scored.exit_code == 0, scored.output
    assert "bertscore not run" in scored.output and "no weights" in scored.output
    result = json.loads(out.read_text())
    expected = rexrank_bleu2(
        ["No pleural effusion.", "Mild cardiomegaly."], [v["section_findings"] for v in TEST_JSON.values()]
    )
    assert result["metrics"]["bleu2"]["value"] == pytest.approx(float(np.mean(expected)))
    assert result["metrics"]["inverse_radcliq_v1"]["value"] is None


def test_cli_chexgenbench_protocol_without_rad_dino_says_not_run(tmp_path: Path) -> None:
    for name in ("gen", "ref"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    result = CliRunner().invoke(
        app,
        ["eval", "images", "--generated", str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"),
         "--protocol", "chexgenbench", "--out", str(tmp_path / "images.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fd_rad_dino not run" in result.output
    written = json.loads((tmp_path / "images.json").read_text())
    assert written["n_generated"] == 3 and written["metrics"]["prdc"]["value"] is None
