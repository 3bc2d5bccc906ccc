"""A synthetic world of real IU reports split by R2Gen: test reports drawn once, only in test."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmcxr.cli import app
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.errors import BadInputError
from llmcxr.synth import build_world

NORMAL = "The heart is normal in size. The lungs are clear."
REPORTS = {  # uid -> (findings, impression)
    1: (NORMAL, "No acute disease."),
    2: ("Small left pleural effusion.", "Left effusion."),
    3: ("Mild cardiomegaly.", "Cardiomegaly."),
    4: (NORMAL, "No acute disease."),  # worded as report 1: radiologists' boilerplate
    5: ("Right upper lobe nodule.", "Nodule."),  # in no R2Gen list
    6: ("Large right pneumothorax.", "Pneumothorax."),
}
SPLIT = {  # R2Gen's study ids: the uid, then the first image's IM number
    "train": ["CXR1_IM-0001", "CXR2_IM-0002"],
    "val": ["CXR3_IM-0003-1001"],
    "test": ["CXR4_IM-0004", "CXR6_IM-0006"],
}


def _xml(uid: int, findings: str, impression: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{uid}"/><MedlineCitation><Article>'
        f'<Abstract><AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract></Article>'
        f'</MedlineCitation><parentImage id="CXR{uid}_1_IM-000{uid}-1001"/></eCitation>'
    ).encode()


@pytest.fixture
def iu_data(tmp_path: Path) -> Path:
    """A fake IU archive with R2Gen's split file beside it, as in the shared data folder."""
    folder = tmp_path / "iu-xray"
    folder.mkdir()
    with tarfile.open(folder / "NLMCXR_reports.tgz", "w:gz") as archive:
        for uid, (findings, impression) in REPORTS.items():
            payload = _xml(uid, findings, impression)
            info = tarfile.TarInfo(f"ecgen-radiology/{uid}.xml")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    (folder / "r2gen_split.json").write_text(json.dumps(SPLIT))
    return folder / "NLMCXR_reports.tgz"


def _build(out: Path, archive: Path, n: int = 7, **options) -> dict:
    return build_world(out, n, 64, seed=3, reports="iu", iu_reports_path=archive, **options)


def test_r2gen_world_keeps_test_reports_out_of_training(iu_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "world"
    summary = _build(out, iu_data, split_by="r2gen")
    assert summary["config"]["split_by"] == "r2gen"
    assert summary["config"]["r2gen_split_path"] == str(iu_data.parent / "r2gen_split.json")
    assert summary["splits"] == {"train": 4, "validate": 1, "test": 2}
    assert summary["r2gen_split"] == {
        "reports_used": {"train": 2, "validate": 1, "test": 2},
        "reports_outside_split": 1,
        "test_reports_worded_as_a_training_report": 1,
    }
    records = read_synthetic_world(out)
    source = {split: Counter() for split in ("train", "validate", "test")}
    for record in records:
        source[record.split][record.extra["report_source"]] += 1
    # every held-out report drawn exactly once, on an image of its own split
    assert source["validate"] == {"iu-xray:CXR3": 1}
    assert source["test"] == {"iu-xray:CXR4": 1, "iu-xray:CXR6": 1}
    assert set(source["train"]) <= {"iu-xray:CXR1", "iu-xray:CXR2"} and sum(source["train"].values()) == 4
    test = next(r for r in records if r.extra["report_source"] == "iu-xray:CXR6")
    assert test.findings == "Large right pneumothorax." and test.labels["Pneumothorax"] == 1
    assert test.extra["drawn"] == ["Pneumothorax"]

    again = _build(out, iu_data, split_by="r2gen")
    assert again["rendered_now"] == 0 and [r.image_id for r in read_synthetic_world(out)] == [
        r.image_id for r in records
    ]
    with pytest.raises(BadInputError, match="differs in r2gen_split_path, split_by"):
        _build(out, iu_data)


def test_r2gen_split_needs_iu_reports_a_split_file_and_enough_images(iu_data: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no training images.*--n 4 or more"):
        _build(tmp_path / "small", iu_data, n=3, split_by="r2gen")
    with pytest.raises(BadInputError, match="--reports iu"):
        build_world(tmp_path / "t", 4, 64, seed=0, reports="templates", split_by="r2gen")
    with pytest.raises(BadInputError, match="R2Gen split file not found"):
        _build(tmp_path / "w", iu_data, split_by="r2gen", r2gen_split_path=tmp_path / "missing.json")
    with pytest.raises(BadInputError, match="unknown split"):
        _build(tmp_path / "w", iu_data, split_by="by-patient")


def test_world_written_before_split_by_resumes(iu_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "world"
    _build(out, iu_data, n=5)
    world = json.loads((out / "world.json").read_text())
    for key in ("split_by", "r2gen_split_path"):  # as an older llmcxr wrote it
        del world["config"][key]
    (out / "world.json").write_text(json.dumps(world))
    assert _build(out, iu_data, n=5)["rendered_now"] == 0


def test_cli_splits_by_r2gen_with_the_split_file_given(iu_data: Path, tmp_path: Path) -> None:
    split = tmp_path / "elsewhere.json"
    split.write_text(json.dumps(SPLIT))
    out = tmp_path / "world"
    command = ["data", "synth", "--out", str(out), "--n", "6", "--size", "64", "--reports", "iu"]
    command += ["--iu-reports", str(iu_data), "--split-by", "r2gen", "--r2gen-split", str(split)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    world = json.loads((out / "world.json").read_text())
    assert world["config"]["r2gen_split_path"] == str(split)
    assert world["splits"] == {"train": 3, "validate": 1, "test": 2}
