"""`llmcxr eval run`: files, numbers in range and consistent with the file-level evaluations, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _tiny_lm import tiny_llmcxr_folder
from llmcxr.cli import app
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.errors import BadInputError
from llmcxr.evaluation.baselines import most_common_answers, train_tokens_cache
from llmcxr.evaluation.files import evaluate_report_baselines, train_classifier_on_world
from llmcxr.evaluation.run import EvalRunConfig, run_evaluation
from llmcxr.evaluation.run_folder import cache_dir, contiguous_batches, png_bytes
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.metrics.finding_classifier import ClassifierTrainConfig
from llmcxr.records import QA, CXRRecord
from llmcxr.synth import build_world
from llmcxr.vq import VQGAN

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("world")
    build_world(folder, n=60, size=64, seed=0, reports="templates")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, world) -> Path:
    """A random-weight LM with image tokens and a micro VQ-GAN (no training: the run's plumbing is tested)."""
    reports = [r.report for r in read_synthetic_world(world)]
    return tiny_llmcxr_folder(tmp_path_factory.mktemp("model"), reports)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, world) -> Path:
    out = tmp_path_factory.mktemp("classifier")
    train_classifier_on_world(world, out, train=ClassifierTrainConfig(steps=3, batch_size=8))
    return out


def config(model_dir: Path, world: Path, out: Path, **changes) -> EvalRunConfig:
    base = EvalRunConfig(
        model=model_dir,
        data=world,
        out=out,
        split="test",
        batch_size=2,
        max_report_tokens=10,
        max_answer_tokens=4,
        guidance_scale=2.0,
        samples=3,
    )
    return dataclasses.replace(base, **changes)


def scores_only(result: dict) -> dict:
    """What must not depend on interruptions: everything but timings and per-invocation counts."""
    return {k: v for k, v in result.items() if k not in ("timings", "generated_this_run", "config", "files")}


def test_contiguous_batches_keep_the_uninterrupted_grid() -> None:
    assert contiguous_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert contiguous_batches([1, 2, 4, 5, 6, 9], 3) == [[1, 2], [4, 5], [6], [9]]


def test_most_common_answer_baseline() -> None:
    train = [
        CXRRecord(
            "a", qa=[QA("Is there edema?", "no", "presence"), QA("How is the heart?", "normal", "heart_size")]
        ),
        CXRRecord(
            "b", qa=[QA("Is there  EDEMA?", "no", "presence"), QA("Is there edema?", "yes", "presence")]
        ),
    ]
    asked = [
        QA("is there edema?", "yes", "presence"),
        QA("Heart size?", "enlarged", "heart_size"),
        QA("?", "x", "new"),
    ]
    assert most_common_answers(train, asked) == ["no", "normal", "no"]


def test_eval_run_writes_everything_and_resumes(model_dir, world, classifier, tmp_path, monkeypatch) -> None:
    # An uninterrupted run through the CLI.
    whole = tmp_path / "whole"
    args = ["eval", "run", "--model", str(model_dir), "--data", str(world), "--out", str(whole)]
    args += ["--classifier", str(classifier), "--batch-size", "2", "--max-report-tokens", "10"]
    args += ["--guidance-scale", "2.0", "--max-answer-tokens", "6", "--samples", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "micro-F1-14" in result.output and "AUROC / FID" in result.output
    for name in (
        "eval.json",
        "eval.md",
        "f1_per_class.png",
        "roc_curves.png",
        "samples.png",
        "reports.jsonl",
    ):
        assert (whole / name).is_file(), name
    test = [r for r in read_synthetic_world(world) if r.split == "test"]
    assert sorted(p.stem for p in (whole / "generated").glob("*.png")) == sorted(r.image_id for r in test)
    assert (whole / "baselines" / "mode_token_map.png").is_file()
    scores = json.loads((whole / "eval.json").read_text())
    assert scores["data"]["n_items"] == len(test) and scores["generated_this_run"]["reports"] == len(test)
    md = (whole / "eval.md").read_text()
    assert md.index("## Headline") < md.index("## CXR -> report") and "most_common_report" in md

    # The report baselines are the ones `llmcxr eval baselines` scores on the same data.
    reports = scores["cxr_to_report"]["systems"]
    baselines = evaluate_report_baselines(world, "test", classifier)
    for name in ("most_common_report", "nearest_neighbour_pixels", "nearest_neighbour_classifier"):
        assert reports[name]["clinical"]["micro_f1_14"] == pytest.approx(
            baselines[name]["clinical"]["micro_f1_14"]
        )
        assert reports[name]["language"]["bleu_4"] == pytest.approx(baselines[name]["language"]["bleu_4"])
    for name, system in reports.items():
        assert 0.0 <= system["clinical"]["micro_f1_14"] <= 1.0, name
    headline = scores["headline"]["cxr_to_report"]
    assert headline["margin"] == pytest.approx(
        reports["model"]["clinical"]["micro_f1_14"]
        - max(v["clinical"]["micro_f1_14"] for k, v in reports.items() if k != "model")
    )
    label_free = ("most_common_report", "nearest_neighbour_pixels")
    assert headline["best_label_free_baseline"] in label_free
    assert headline["margin_over_label_free"] == pytest.approx(
        reports["model"]["clinical"]["micro_f1_14"]
        - max(reports[k]["clinical"]["micro_f1_14"] for k in label_free)
    )
    assert scores["cxr_to_report"]["guidance_scale"] == 1.0
    for key in ("micro_f1_14_95ci", "margin_95ci", "margin_over_label_free_95ci"):
        interval = headline[key]
        assert interval["low"] <= interval["high"] and interval["resamples"] > 900, key
    assert headline["micro_f1_14_95ci"]["low"] >= 0.0 and headline["micro_f1_14_95ci"]["high"] <= 1.0
    drawn = scores["headline"]["report_to_cxr"]["macro_auroc_drawn_95ci"]
    drop = scores["headline"]["finding_preservation"]["auroc_drop_95ci"]
    assert 0.0 <= drawn["low"] <= drawn["high"] <= 1.0 and drop["low"] <= drop["high"]
    assert "95% bootstrap intervals" in md

    images = scores["report_to_cxr"]["systems"]
    assert set(images) == {"model", "mode_token_map", "vq_round_trip", "reference_images"}
    assert (
        "distribution" not in images["reference_images"]
    )  # FID of the references with themselves: not scored
    for name in ("model", "mode_token_map", "vq_round_trip"):
        assert images[name]["distribution"]["fid"] >= 0.0
        assert (
            images[name]["distribution"]["feature_network"]["weights_sha256"]
            == scores["feature_network"]["weights_sha256"]
        )
    assert set(images["model"]["finding_agreement"]["per_class"]) == set(
        scores["report_to_cxr"]["scored_findings"]
    )
    baseline_auroc = images["mode_token_map"]["finding_agreement"]["per_class"]
    # One image for every report: the classifier's scores tie, so every defined AUROC is exactly one half.
    assert {v["auroc"] for v in baseline_auroc.values() if v["auroc"] is not None} <= {0.5}
    assert scores["vqa"]["systems"]["model"]["n"] == sum(len(r.qa) for r in test)

    # Interrupted after two image batches, then resumed: nothing finished is generated again, and the
    # scores equal the uninterrupted run's.
    parted = tmp_path / "parted"
    real = LLMCXR.generate_image
    calls: list[int] = []

    def dies_after_two_batches(self, reports, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(reports))
        return real(self, reports, *a, **k)

    monkeypatch.setattr(LLMCXR, "generate_image", dies_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(config(model_dir, world, parted, classifier=classifier, max_answer_tokens=6), False)
    assert len(list((parted / "generated").glob("*.png"))) == 4
    assert not (parted / "vqa.jsonl").exists() and not (parted / "eval.json").exists()

    monkeypatch.setattr(LLMCXR, "generate_image", real)
    resumed = run_evaluation(
        config(model_dir, world, parted, classifier=classifier, max_answer_tokens=6), False
    )
    assert resumed["generated_this_run"] == {
        "reports": 0,
        "images": len(test) - 4,
        "vqa": scores["data"]["n_vqa"],
    }
    assert json.dumps(scores_only(resumed), sort_keys=True) == json.dumps(scores_only(scores), sort_keys=True)


def test_changed_settings_are_refused_unless_restart(model_dir, world, classifier, tmp_path) -> None:
    out = tmp_path / "run"
    # A limit only picks the first items: growing it later generates the rest, and keeps the first.
    two = run_evaluation(
        config(model_dir, world, out, classifier=classifier, tasks=("report",), limit=2), False
    )
    assert two["generated_this_run"] == {"reports": 2} and two["data"]["n_items"] == 2
    first = run_evaluation(config(model_dir, world, out, classifier=classifier, tasks=("report",)), False)
    assert first["generated_this_run"] == {"reports": first["data"]["n_items"] - 2}
    assert set(first["generated_this_run"]) == {"reports"} and "report_to_cxr" not in first
    assert not (out / "roc_curves.png").exists()
    # A bigger batch is not a generation setting: the run continues (nothing left to generate).
    again = run_evaluation(
        config(model_dir, world, out, classifier=classifier, tasks=("report",), batch_size=4), False
    )
    assert again["generated_this_run"] == {"reports": 0}
    with pytest.raises(BadInputError, match="seed: 0 -> 1"):
        run_evaluation(config(model_dir, world, out, classifier=classifier, tasks=("report",), seed=1), False)
    redone = run_evaluation(
        config(model_dir, world, out, classifier=classifier, tasks=("report",), seed=1, restart=True), False
    )
    assert redone["generated_this_run"] == {"reports": first["data"]["n_items"]}


def test_best_of_k_images_are_the_api_best_of_k_draws(model_dir, world, classifier, tmp_path) -> None:
    out = tmp_path / "run"
    change = dict(classifier=classifier, tasks=("image",), limit=3, image_candidates=2, batch_size=4)
    result = run_evaluation(config(model_dir, world, out, **change), False)
    assert result["report_to_cxr"]["image_candidates"] == 2 and "best of 2" in (out / "eval.md").read_text()
    llm = LLMCXR.from_pretrained(model_dir, device="cpu")
    test = [r for r in read_synthetic_world(world) if r.split == "test"][:3]
    for i, record in enumerate(test):  # item i samples with seed + i, as one draw would
        again = llm.generate_image(record.report, 2.0, seed=i, candidates=2)
        assert (out / "generated" / f"{record.image_id}.png").read_bytes() == png_bytes(again.image)
    with pytest.raises(BadInputError, match="image_candidates: 2 -> 3"):
        run_evaluation(config(model_dir, world, out, **(change | dict(image_candidates=3))), False)


def test_best_of_k_reports_are_the_api_best_of_k_drafts(model_dir, world, classifier, tmp_path) -> None:
    """report_candidates k: item i's report is ``LLMCXR.report(..., candidates=k)`` with seed + i; answers
    stay greedy (report_sampling overrides text_sampling for reports only); runs made without the setting
    keep their identity, a changed k is refused."""
    out = tmp_path / "run"
    change = dict(
        classifier=classifier,
        tasks=("report",),
        limit=3,
        report_sampling="top-p",
        report_candidates=2,
        batch_size=4,
    )
    result = run_evaluation(config(model_dir, world, out, **change), False)
    task = result["cxr_to_report"]
    assert (task["sampling"], task["candidates"]) == ("top-p", 2)
    assert "best of 2 top-p drafts" in (out / "eval.md").read_text()
    llm = LLMCXR.from_pretrained(model_dir, device="cpu")
    test = [r for r in read_synthetic_world(world) if r.split == "test"][:3]
    rows = {row["image_id"]: row["report"] for row in map(json.loads, (out / "reports.jsonl").open())}
    for i, record in enumerate(test):
        sampling = SamplingConfig(top_p=0.92, max_new_tokens=10, seed=i)
        again = llm.report(record.image_path, sampling=sampling, candidates=2)
        assert rows[record.image_id] == again.text
    saved = json.loads((out / "eval_config.json").read_text())["identity"]
    assert (saved["report_sampling"], saved["report_candidates"]) == ("top-p", 2)
    with pytest.raises(BadInputError, match="report_candidates: 2 -> 3"):
        run_evaluation(config(model_dir, world, out, **(change | dict(report_candidates=3))), False)
    plain = tmp_path / "plain"
    run_evaluation(config(model_dir, world, plain, classifier=classifier, tasks=("report",), limit=2), False)
    assert "report_candidates" not in json.loads((plain / "eval_config.json").read_text())["identity"]


def test_train_image_codes_are_encoded_once_for_every_run_folder(
    model_dir, world, classifier, tmp_path, monkeypatch
) -> None:
    train = [r for r in read_synthetic_world(world) if r.split == "train"]
    cache = train_tokens_cache(model_dir / "vq", train)
    change = dict(classifier=classifier, tasks=("image",), limit=2)
    run_evaluation(config(model_dir, world, tmp_path / "a", **change), False)
    assert cache.is_file() and cache.is_relative_to(cache_dir())
    encoded: list[int] = []
    real = VQGAN.encode
    monkeypatch.setattr(VQGAN, "encode", lambda self, x: encoded.append(len(x)) or real(self, x))
    second = run_evaluation(config(model_dir, world, tmp_path / "b", **change), False)  # another folder
    assert sum(encoded) == 2  # the two items' VQ round trips, none of the training images
    assert (tmp_path / "b" / "baselines" / "mode_token_map.png").is_file()
    assert second["report_to_cxr"]["systems"]["mode_token_map"]["distribution"]["fid"] >= 0.0
    (Path(train[0].image_path)).touch()  # an image changed: its codes are no longer trusted
    assert train_tokens_cache(model_dir / "vq", train) != cache
    touched = train_tokens_cache(model_dir / "vq", train)
    next(p for p in (model_dir / "vq").iterdir() if p.suffix == ".safetensors").touch()  # so did the VQ-GAN
    assert train_tokens_cache(model_dir / "vq", train) != touched


def test_classifier_trained_and_cached_when_none_given(model_dir, world, tmp_path) -> None:
    out = tmp_path / "run"
    first = run_evaluation(config(model_dir, world, out, tasks=("image",), classifier_steps=2), False)
    assert (out / "classifier" / "train_summary.json").is_file()
    assert first["feature_network"]["source"].startswith("trained by this run")
    assert (
        first["feature_network"]["weights_sha256"]
        == json.loads((out / "classifier" / "train_summary.json").read_text())["weights_sha256"]
    )
    cached = (out / "classifier" / "classifier.safetensors").stat().st_mtime_ns
    run_evaluation(config(model_dir, world, out, tasks=("image",), classifier_steps=2), False)
    assert (out / "classifier" / "classifier.safetensors").stat().st_mtime_ns == cached


def test_bad_inputs_are_clear_errors(model_dir, world, tmp_path) -> None:
    with pytest.raises(BadInputError, match="unknown or no tasks"):
        run_evaluation(config(model_dir, world, tmp_path / "a", tasks=("draw",)), False)
    with pytest.raises(BadInputError, match="'nowhere'"):
        run_evaluation(config(model_dir, world, tmp_path / "a", split="nowhere"), False)
    with pytest.raises(BadInputError, match="image_candidates"):
        run_evaluation(config(model_dir, world, tmp_path / "a", image_candidates=0), False)
    with pytest.raises(BadInputError, match="report_candidates"):
        run_evaluation(config(model_dir, world, tmp_path / "a", report_candidates=2), False)  # greedy reports
    with pytest.raises(BadInputError, match="greedy draws are all the same"):
        run_evaluation(
            config(model_dir, world, tmp_path / "a", image_candidates=2, image_sampling="greedy"), False
        )
    with pytest.raises(BadInputError, match="model folder not found"):
        run_evaluation(config(tmp_path / "missing", world, tmp_path / "a"), False)
