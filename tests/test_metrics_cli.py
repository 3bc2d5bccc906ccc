"""`llmcxr eval ...` on small files the tests write."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from llmcxr.cli import app, main
from llmcxr.errors import BadInputError
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    FindingClassifierConfig,
    fit_finding_classifier,
    save_finding_classifier,
)
from llmcxr.synth import build_world

runner = CliRunner()
REPORTS = {
    "s1": "Cardiomegaly. Small left pleural effusion.",
    "s2": "No acute cardiopulmonary process. Lungs are clear.",
    "s3": "There is pulmonary edema.",
}


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_csv(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_eval_reports_jsonl_against_csv(tmp_path) -> None:
    write_jsonl(tmp_path / "pred.jsonl", [{"id": k, "report": v} for k, v in reversed(REPORTS.items())])
    write_csv(
        tmp_path / "ref.csv", [{"study_id": k, "findings": v, "impression": ""} for k, v in REPORTS.items()]
    )
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "reports",
            "--pred",
            str(tmp_path / "pred.jsonl"),
            "--ref",
            str(tmp_path / "ref.csv"),
            "--out",
            str(out),
            "--no-meteor",
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n"] == 3
    assert scores["clinical"]["micro_f1_14"] == 1.0 and scores["clinical"]["labeler"] == "llmcxr-rules"
    # predictions lack the "FINDINGS:" prefix the CSV's findings column gets: BLEU-1 below 1, ROUGE-L high.
    assert 0.5 < scores["language"]["bleu_1"] < 1.0 and scores["language"]["rouge_l"] > 0.8
    assert scores["language"]["missing"] == {"meteor": "not requested"}


def test_eval_reports_uncertain_negative_and_wrong_predictions(tmp_path) -> None:
    write_jsonl(
        tmp_path / "pred.jsonl",
        [{"id": k, "report": "No pleural effusion. Heart size is normal."} for k in REPORTS],
    )
    write_jsonl(tmp_path / "ref.jsonl", [{"id": k, "report": v} for k, v in REPORTS.items()])
    out = tmp_path / "eval.json"
    args = ["eval", "reports", "--pred", str(tmp_path / "pred.jsonl"), "--ref", str(tmp_path / "ref.jsonl")]
    result = runner.invoke(app, [*args, "--out", str(out), "--no-meteor", "--uncertain", "negative"])
    assert result.exit_code == 0, result.output
    clinical = json.loads(out.read_text())["clinical"]
    assert clinical["uncertain"] == "negative"
    assert clinical["chexpert_5"]["per_class"]["Pleural Effusion"]["f1"] == 0.0


def test_missing_ids_and_columns_are_clear_errors(tmp_path, monkeypatch, capsys) -> None:
    write_jsonl(tmp_path / "pred.jsonl", [{"id": "s1", "report": "x"}])
    write_jsonl(tmp_path / "ref.jsonl", [{"id": k, "report": v} for k, v in REPORTS.items()])
    result = runner.invoke(
        app, ["eval", "reports", "--pred", str(tmp_path / "pred.jsonl"), "--ref", str(tmp_path / "ref.jsonl")]
    )
    assert isinstance(result.exception, BadInputError)
    assert "pred.jsonl" in str(result.exception) and "2 reference id(s) have no prediction" in str(
        result.exception
    )

    write_jsonl(tmp_path / "noid.jsonl", [{"name": "s1", "report": "x"}])
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "llmcxr",
            "eval",
            "reports",
            "--pred",
            str(tmp_path / "noid.jsonl"),
            "--ref",
            str(tmp_path / "ref.jsonl"),
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "no id column" in capsys.readouterr().err


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    build_world(folder, n=16, size=64, seed=0, reports="templates")
    return folder


def test_eval_vqa_on_the_world_questions(world, tmp_path) -> None:
    rows = [json.loads(line) for line in (world / "vqa.jsonl").read_text().splitlines()]
    answers = [{**row, "answer": row["answer"].capitalize() + "."} for row in rows]
    answers[0]["answer"] = "no" if rows[0]["answer"] == "yes" else "yes"
    write_jsonl(tmp_path / "answers.jsonl", answers)
    out = tmp_path / "vqa.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "vqa",
            "--pred",
            str(tmp_path / "answers.jsonl"),
            "--ref",
            str(world / "vqa.jsonl"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n"] == len(rows)
    assert scores["accuracy"] == pytest.approx((len(rows) - 1) / len(rows))
    assert scores["by_kind"][rows[0]["kind"]]["correct"] == scores["by_kind"][rows[0]["kind"]]["n"] - 1


def test_train_classifier_then_eval_images(world, tmp_path) -> None:
    classifier = tmp_path / "classifier"
    result = runner.invoke(
        app,
        [
            "eval",
            "train-classifier",
            "--world",
            str(world),
            "--out",
            str(classifier),
            "--steps",
            "3",
            "--batch-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((classifier / "train_summary.json").read_text())
    assert summary["n_train"] == 12 and summary["config"]["image_size"] == 64

    out = tmp_path / "images.json"
    images = str(world / "images")
    args = ["eval", "images", "--generated", images, "--reference", images, "--classifier", str(classifier)]
    result = runner.invoke(app, [*args, "--labels", str(world / "manifest.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["distribution"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert scores["distribution"]["feature_network"]["weights_sha256"] == summary["weights_sha256"]
    assert scores["finding_agreement"]["n_images"] == 16
    assert len(scores["finding_agreement"]["per_class"]) == 14

    result = runner.invoke(
        app, [*args, "--labels", str(world / "manifest.jsonl"), "--classes", "drawn", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    drawn = {
        name
        for line in (world / "manifest.jsonl").read_text().splitlines()
        for name in json.loads(line)["extra"]["drawn"]
    }
    assert set(json.loads(out.read_text())["finding_agreement"]["per_class"]) == drawn


def test_train_classifier_on_your_own_manifest(world, tmp_path) -> None:
    """Real data's route: a CSV of images and reports (labels by the rule labeler) or labels given
    outright; rows without a split are held out by patient for the validation AUROC."""
    from llmcxr.datasets.synthetic import read_synthetic_world
    from llmcxr.evaluation.files import manifest_classifier_records

    records = read_synthetic_world(world)
    rows = [
        {"image": r.image_path, "report": r.report, "patient_id": f"p{i % 5}", "labels": ""}
        for i, r in enumerate(records)
    ]
    rows[0]["labels"] = json.dumps({"Cardiomegaly": 1, "Edema": 0})
    write_csv(tmp_path / "mine.csv", rows)
    labelled = manifest_classifier_records(tmp_path / "mine.csv", validate_fraction=0.3)
    assert labelled[0].labels == {"Cardiomegaly": 1, "Edema": 0}
    assert labelled[1].labels == records[1].labels  # the world's labels come from the same labeler
    by_patient = {}
    for i, record in enumerate(labelled):
        by_patient.setdefault(rows[i]["patient_id"], set()).add(record.split)
    assert all(len(splits) == 1 for splits in by_patient.values())  # a patient is never on both sides
    assert {"train", "validate"} <= {record.split for record in labelled}

    out = tmp_path / "classifier"
    args = ["eval", "train-classifier", "--manifest", str(tmp_path / "mine.csv"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--size", "32", "--steps", "2", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["config"]["image_size"] == 32
    default_split = manifest_classifier_records(tmp_path / "mine.csv")  # 10% held out, as the CLI does
    assert summary["n_train"] == sum(record.split == "train" for record in default_split)

    rows[2]["labels"] = json.dumps({"Heart Failure": 1})
    write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(BadInputError, match="row 3: \\['Heart Failure'\\] are not CheXpert-14 names"):
        manifest_classifier_records(tmp_path / "bad.csv")
    result = runner.invoke(app, ["eval", "train-classifier", "--out", str(out)])
    assert result.exit_code == 2 and "--manifest" in result.output


def test_report_baselines_on_the_world(world, tmp_path) -> None:
    out = tmp_path / "baselines.json"
    result = runner.invoke(
        app, ["eval", "baselines", "--world", str(world), "--split", "validate", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n"] == 2 and scores["n_train"] == 12
    for name in ("most_common_report", "nearest_neighbour_pixels"):
        assert 0.0 <= scores[name]["clinical"]["micro_f1_14"] <= 1.0
        assert scores[name]["language"]["n_reports"] == 2


def test_chexbert_labeler_needs_local_weights(tmp_path) -> None:
    write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "report": "x"}])
    args = [
        "eval",
        "reports",
        "--pred",
        str(tmp_path / "r.jsonl"),
        "--ref",
        str(tmp_path / "r.jsonl"),
        "--no-meteor",
    ]
    result = runner.invoke(app, [*args, "--chexbert", str(tmp_path / "chexbert.safetensors")])
    assert result.exit_code == 2 and "--bert-folder" in result.output
    result = runner.invoke(
        app, [*args, "--chexbert", str(tmp_path / "chexbert.safetensors"), "--bert-folder", str(tmp_path)]
    )
    assert isinstance(result.exception, BadInputError) and "CheXbert weights not found" in str(
        result.exception
    )


def test_finding_preservation_of_a_vq_round_trip(world, tmp_path) -> None:
    from llmcxr.vq import VQGAN, VQConfig, save_vqgan

    torch.manual_seed(0)
    save_vqgan(VQGAN(VQConfig.tiny()), tmp_path / "vq")  # random weights: a poor tokenizer
    model = fit_finding_classifier(
        torch.zeros(4, 1, 64, 64),
        torch.zeros(4, 14),
        FindingClassifierConfig(),
        ClassifierTrainConfig(steps=1),
    )
    save_finding_classifier(model, tmp_path / "classifier")
    out = tmp_path / "preservation.json"
    args = [
        "eval",
        "preservation",
        "--vq",
        str(tmp_path / "vq"),
        "--world",
        str(world),
        "--classifier",
        str(tmp_path / "classifier"),
    ]
    result = runner.invoke(app, [*args, "--split", "train", "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n"] == 12 and scores["resolution"] == 64
    drawn = {
        name
        for line in (world / "manifest.jsonl").read_text().splitlines()
        for name in json.loads(line)["extra"]["drawn"]
    }
    assert set(scores["original"]["per_class"]) <= drawn
    if scores["auroc_drop"] is not None:
        assert scores["auroc_drop"] == pytest.approx(
            scores["original_macro_auroc"] - scores["round_trip_macro_auroc"]
        )
