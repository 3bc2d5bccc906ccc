"""`llmcxr eval run --source manifest`: real-data layout end to end on tiny files. CXR -> report (model +
baselines, ReXrank metrics that need no weights, the rest listed as not run); report -> CXR (the model's
images beside the mode-token-map baseline and the ceilings, FD/KD/PRDC and finding agreement, in the
classifier's or a RAD-DINO stand-in's features); resume (a second run generates nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _tiny_lm import REPORTS, tiny_llmcxr_folder
from _tiny_protocol_models import tiny_rad_dino
from llmcxr.cli import app
from llmcxr.errors import BadInputError

IMAGE_SYSTEMS = {"model", "mode_token_map", "vq_round_trip", "reference_images"}
# Fast settings for the tiny model: a 16-px classifier trained for 3 steps, 8-token reports.
FAST = ["--max-report-tokens", "8", "--classifier-steps", "3", "--classifier-size", "16", "--batch-size", "4"]


def _manifest(tmp_path: Path, n: int = 12, n_test: int = 3, labels: bool = False) -> Path:
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        row = {
            "image": f"images/{i}.png",
            "report": REPORTS[i % 4],
            "split": "test" if i < n_test else "train",
        }
        if labels:  # findings known apart from the report: alternate, so both values occur in the test split
            row["labels"] = {"Cardiomegaly": i % 2, "Edema": (i // 2) % 2}
        lines.append(json.dumps(row))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.jsonl"


def _run(manifest: Path, out: Path, *extra: str, model: Path | None = None):
    args = ["eval", "run", "--source", "manifest", "--data", str(manifest), "--out", str(out)]
    if model is not None:
        args += ["--model", str(model)]
    return CliRunner().invoke(app, [*args, *extra])


def test_eval_run_on_a_manifest_scores_both_directions_and_resumes(tmp_path: Path) -> None:
    from llmcxr.model import GenerationDefaults

    manifest = _manifest(tmp_path, n=20, n_test=8)
    model = tiny_llmcxr_folder(tmp_path / "lm", REPORTS)
    GenerationDefaults(image_guidance_scale=2.0, chosen_by="this test").save(
        model
    )  # the folder's recommendation
    out = tmp_path / "eval"
    result = _run(manifest, out, *FAST, model=model)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "eval.json").read_text())
    assert written["n_test"] == 8 and written["n_train"] == 12
    reports = written["cxr_to_report"]["systems"]
    assert set(reports) == {"model", "most_common_report", "nearest_neighbour_pixels"}
    for scores in reports.values():
        assert 0.0 <= scores["metrics"]["bleu2"]["value"] <= 1.0
        assert scores["metrics"]["bertscore"]["not_run"].startswith("no weights")
        assert "micro_f1_14" in scores["rule_labeler_f1"]["uncertain_negative"]
    rows = [json.loads(line) for line in (out / "reports_by_system.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["reference"] and "model" in rows[0]

    images = written["report_to_cxr"]
    assert images["n"] == 8 and images["guidance_scale"] == 2.0
    assert written["cxr_to_report"]["guidance_scale"] == 1.0  # the folder recommends none for reports
    assert images["labels"].endswith("the data has no labels")  # the rule labeler read the reports
    assert images["finding_classifier"]["source"].startswith("trained by this run")
    assert images["feature_network"]["name"] == "llmcxr-finding-classifier-16px"
    assert set(images["systems"]) == IMAGE_SYSTEMS
    for name, scores in images["systems"].items():
        agreement = scores["finding_agreement"]
        assert agreement["n_images"] == 8 and "per_class" in agreement
        if name == "reference_images":
            assert "distribution" not in scores  # the reference against itself says nothing
            continue
        distribution = scores["distribution"]
        assert distribution["fd"]["value"] >= 0 and distribution["kd"]["subset_size"] == 8
        assert 0.0 <= distribution["prdc"]["precision"] <= 1.0 and distribution["prdc"]["k"] == 5
    for i in range(8):
        assert (out / "generated" / f"{i}.png").is_file()
    assert (out / "baselines" / "mode_token_map.png").is_file() and (out / "classifier").is_dir()
    assert written["generated_this_run"] == {"reports": 8, "images": 8}
    assert written["not_run"] == {"vqa": "real-data sources carry no VQA pairs here"}  # the default --tasks

    again = _run(manifest, out, *FAST, model=model)
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "eval.json").read_text())
    assert rerun["generated_this_run"] == {"reports": 0, "images": 0}
    assert rerun["report_to_cxr"]["systems"] == images["systems"]  # same images, same classifier
    timings = rerun["timings"][
        "generation_s_all_runs"
    ]  # the classifier trained once, cached in out/classifier
    assert timings["classifier"] == written["timings"]["generation_s_all_runs"]["classifier"]

    refused = _run(manifest, out, *FAST, "--seed", "1", model=model)
    assert isinstance(refused.exception, BadInputError) and "other generation settings" in str(
        refused.exception
    )


def test_given_classifier_labels_and_rad_dino_are_used(tmp_path: Path, monkeypatch) -> None:
    from llmcxr.imaging import load_cxr
    from llmcxr.imaging.limits import ImageLimits
    from llmcxr.metrics.chexgenbench import chexgenbench_scores
    from llmcxr.metrics.clinical import LabelConvention
    from llmcxr.metrics.finding_classifier import load_finding_classifier
    from llmcxr.metrics.images import finding_agreement

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = _manifest(tmp_path, n=18, n_test=8, labels=True)
    model = tiny_llmcxr_folder(tmp_path / "lm", REPORTS)
    classifier = tmp_path / "classifier"
    trained = CliRunner().invoke(
        app,
        ["eval", "train-classifier", "--manifest", str(manifest), "--out", str(classifier)]
        + ["--size", "16", "--steps", "2", "--batch-size", "4"],
    )
    assert trained.exit_code == 0, trained.output
    rad_dino = tiny_rad_dino(tmp_path / "rad-dino")
    out = tmp_path / "eval"
    extra = ["--classifier", str(classifier), "--rad-dino", str(rad_dino), "--tasks", "image"]
    result = _run(manifest, out, *FAST, *extra, "--image-sampling", "greedy", model=model)
    assert result.exit_code == 0, result.output
    written = json.loads((out / "eval.json").read_text())
    assert "cxr_to_report" not in written and written["generated_this_run"] == {"images": 8}
    images = written["report_to_cxr"]
    assert images["labels"] == "the data's own labels"
    assert images["finding_classifier"] == {"source": str(classifier)}
    assert images["feature_network"]["name"] == "rad-dino:rad-dino"
    assert not (out / "classifier").exists()  # none trained: one was given

    # The reference row is the given classifier on the test images against the manifest's labels ...
    net = load_finding_classifier(classifier)
    test_images = [tmp_path / "images" / f"{i}.png" for i in range(8)]
    pixels = np.stack([load_cxr(p, 16, limits=ImageLimits(min_side=1)).numpy() for p in test_images])
    labels = [{"Cardiomegaly": i % 2, "Edema": (i // 2) % 2} for i in range(8)]
    direct = finding_agreement(
        net.predict(__import__("torch").from_numpy(pixels)).numpy(),
        labels,
        net.config.classes,
        LabelConvention(),
    )
    reference = images["systems"]["reference_images"]["finding_agreement"]
    assert reference["n_classes_scored"] == 2  # only the two labelled findings have both values
    assert reference["macro_auroc"] == pytest.approx(direct["macro_auroc"])
    # ... and the model's FD is CheXGenBench's FD of the same files in the same RAD-DINO.
    generated = [out / "generated" / f"{i}.png" for i in range(8)]
    protocol = chexgenbench_scores(generated, test_images, rad_dino)["metrics"]
    model_fd = images["systems"]["model"]["distribution"]["fd"]["value"]
    assert model_fd == pytest.approx(protocol["fd_rad_dino"]["value"])


def test_eval_run_without_a_model_scores_the_report_baselines_and_says_what_did_not_run(
    tmp_path: Path,
) -> None:
    manifest = _manifest(tmp_path)
    out = tmp_path / "eval"
    result = _run(manifest, out, "--tasks", "report,image,vqa")
    assert result.exit_code == 0, result.output
    written = json.loads((out / "eval.json").read_text())
    assert written["not_run"] == {
        "cxr_to_report/model": "no --model given",
        "report_to_cxr": "no --model given",
        "vqa": "real-data sources carry no VQA pairs here",
    }
    assert set(written["cxr_to_report"]["systems"]) == {"most_common_report", "nearest_neighbour_pixels"}


def test_iu_reports_without_images_skip_both_model_tasks_with_the_reason(tmp_path: Path) -> None:
    reports = tmp_path / "ecgen-radiology"
    reports.mkdir()
    for uid in range(1, 7):
        findings, impression = REPORTS[uid % 4].split(". ", 1)
        (reports / f"{uid}.xml").write_text(
            f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{uid}"/><MedlineCitation>'
            f'<Article><Abstract><AbstractText Label="FINDINGS">{findings}.</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract></Article>'
            f'</MedlineCitation><parentImage id="CXR{uid}_IM-0001-1001"/></eCitation>'
        )
    split = tmp_path / "annotation.json"  # R2Gen's layout; CXR6 is in no split and is left out
    split.write_text(json.dumps({"train": ["CXR1_IM", "CXR2_IM", "CXR3_IM"], "test": ["CXR4_IM", "CXR5_IM"]}))
    model = tiny_llmcxr_folder(tmp_path / "lm", REPORTS)
    out = tmp_path / "eval"
    args = ["eval", "run", "--source", "iu", "--data", str(reports), "--iu-split", str(split)]
    result = CliRunner().invoke(
        app, [*args, "--model", str(model), "--out", str(out), "--tasks", "report,image"]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((out / "eval.json").read_text())
    assert written["n_test"] == 2 and written["n_train"] == 3
    reason = "the test studies have no images here (reports only)"
    assert written["not_run"] == {"cxr_to_report/model": reason, "report_to_cxr": reason}
    assert set(written["cxr_to_report"]["systems"]) == {"most_common_report"}
    assert written["generated_this_run"] == {} and "report_to_cxr" not in written
