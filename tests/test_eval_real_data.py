"""`llmcxr eval run --source manifest`: real-data layout end to end on tiny files (model + baselines,
ReXrank metrics that need no weights, the rest listed as not run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from _tiny_lm import REPORTS, tiny_llmcxr_folder
from llmcxr.cli import app


def _manifest(tmp_path: Path, n: int = 12) -> Path:
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        split = "test" if i < 3 else "train"
        lines.append(json.dumps({"image": f"images/{i}.png", "report": REPORTS[i % 4], "split": split}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.jsonl"


def test_eval_run_on_a_manifest_scores_model_and_baselines(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    model = tiny_llmcxr_folder(tmp_path / "lm", REPORTS)
    out = tmp_path / "eval"
    args = [
        "eval",
        "run",
        "--source",
        "manifest",
        "--data",
        str(manifest),
        "--model",
        str(model),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--max-report-tokens", "8"])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "eval.json").read_text())
    assert written["n_test"] == 3 and written["n_train"] == 9
    assert set(written["systems"]) == {"model", "most_common_report", "nearest_neighbour_pixels"}
    for scores in written["systems"].values():
        assert 0.0 <= scores["metrics"]["bleu2"]["value"] <= 1.0
        assert scores["metrics"]["bertscore"]["not_run"].startswith("no weights")
        assert "micro_f1_14" in scores["rule_labeler_f1"]["uncertain_negative"]
    rows = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["reference"] and "model" in rows[0]


def test_eval_run_reports_only_says_the_model_did_not_run(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    out = tmp_path / "eval"
    args = ["eval", "run", "--source", "manifest", "--data", str(manifest), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "eval.json").read_text())["not_run"]["model"] == "no --model given"
