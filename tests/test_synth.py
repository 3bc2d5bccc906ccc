"""Synthetic CXR world: renderer determinism and anatomy, each finding where it belongs, world round trip."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.errors import BadInputError
from llmcxr.findings import Mention, Side
from llmcxr.reports import label_report
from llmcxr.synth import FindingSpec, Lesion, Opacity, build_world, render_cxr, render_study
from llmcxr.synth.anatomy import Canvas, sample_anatomy, sample_pose
from llmcxr.synth.scene import draw_anatomy
from llmcxr.synth.templates import compose_report, sample_spec
from llmcxr.synth.world import SourceReport, spec_from_report

L, R = Side.LEFT, Side.RIGHT


def _region(image: np.ndarray, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
    size = image.shape[0]
    return image[int(y[0] * size) : int(y[1] * size), int(x[0] * size) : int(x[1] * size)].astype(np.float32)


def test_same_seed_same_bytes_and_different_seeds_differ() -> None:
    spec = FindingSpec(effusion=L, devices=("et_tube",))
    a, b = render_cxr(spec, 64, seed=7), render_cxr(spec, 64, seed=7)
    assert a.tobytes() == b.tobytes()
    assert np.abs(render_cxr(spec, 64, seed=8).astype(int) - a).mean() > 2


@pytest.mark.parametrize("size", [64, 128, 256])
def test_sizes_and_anatomy_reads_as_a_chest(size: int) -> None:
    image = render_cxr(FindingSpec(), size, seed=3)
    assert image.shape == (size, size) and image.dtype == np.uint8
    lungs = np.concatenate([_region(image, (0.2, 0.33), (0.3, 0.5)), _region(image, (0.67, 0.8), (0.3, 0.5))])
    mediastinum = _region(image, (0.47, 0.53), (0.25, 0.5))
    abdomen = _region(image, (0.3, 0.7), (0.88, 0.97))
    # dark lungs, bright mediastinum and abdomen below the diaphragm.
    assert lungs.mean() + 50 < mediastinum.mean()
    assert lungs.mean() + 50 < abdomen.mean()


def _change(spec: FindingSpec, seed: int = 11, size: int = 64) -> np.ndarray:
    """Signed pixel change (size, size) that ``spec`` makes to the same patient."""
    return render_cxr(spec, size, seed).astype(np.float32) - render_cxr(FindingSpec(), size, seed)


# (spec, the side of the IMAGE that must change): the patient's left is the image's right.
LATERAL_CASES = {
    "left effusion": (FindingSpec(effusion=L), "image right"),
    "right effusion": (FindingSpec(effusion=R), "image left"),
    "right pneumothorax": (FindingSpec(pneumothorax=R), "image left"),
    "left pneumothorax": (FindingSpec(pneumothorax=L), "image right"),
    "right upper consolidation": (FindingSpec(opacities=(Opacity(R, "upper"),)), "image left"),
    "left lower opacity": (FindingSpec(opacities=(Opacity(L, "lower", "opacity"),)), "image right"),
    "right nodule": (FindingSpec(lesions=(Lesion(R, "middle"),)), "image left"),
    "left mass": (FindingSpec(lesions=(Lesion(L, "upper", "mass"),)), "image right"),
    "left plate atelectasis": (FindingSpec(atelectasis=L), "image right"),
    "right lobar atelectasis": (FindingSpec(atelectasis=R, atelectasis_kind="lobar"), "image left"),
    "right rib fracture": (FindingSpec(fracture=R), "image left"),
    "left pleural thickening": (FindingSpec(pleural_thickening=L), "image right"),
}


@pytest.mark.parametrize("name", sorted(LATERAL_CASES))
def test_lateral_finding_changes_its_own_side_visibly_at_64px(name: str) -> None:
    spec, where = LATERAL_CASES[name]
    change = np.abs(_change(spec))
    half = change.shape[1] // 2
    left, right = change[:, :half], change[:, half:]
    own, other = (right, left) if where == "image right" else (left, right)
    assert own.sum() > 4 * other.sum(), name
    assert own.max() >= 15, f"{name} is too faint to see at 64 px"


def test_effusion_fills_the_base_with_a_meniscus() -> None:
    change = _change(FindingSpec(effusion=L, severity=0.7), size=128)
    lower_lateral = _region(change, (0.78, 0.86), (0.5, 0.62)).mean()
    upper = _region(change, (0.6, 0.85), (0.15, 0.3)).mean()
    assert lower_lateral > 15 and abs(upper) < 1


def test_cardiomegaly_widens_the_heart_past_half_the_chest() -> None:
    normal, large = render_study(FindingSpec(), 128, 5), render_study(FindingSpec(cardiomegaly=True), 128, 5)
    assert normal.cardiothoracic_ratio < 0.5 < large.cardiothoracic_ratio
    change = large.pixels.astype(np.float32) - normal.pixels
    # the heart grows mostly to the patient's left (image right), over the lower lung.
    assert _region(change, (0.6, 0.8), (0.5, 0.65)).mean() > 10


def test_pneumothorax_removes_lung_markings_beyond_the_pleural_line() -> None:
    seed, size = 2, 128
    normal = render_cxr(FindingSpec(), size, seed).astype(np.float32)
    collapsed = render_cxr(FindingSpec(pneumothorax=R, severity=1.0), size, seed).astype(np.float32)
    strip = ((0.14, 0.2), (0.3, 0.45))  # lateral right lung (image left), beyond the collapsed edge
    assert _region(collapsed, *strip).mean() < _region(normal, *strip).mean() - 3

    # the vessels drawn there in the healthy chest are gone with the pneumothorax (bones stay).
    def thin_structures(retract: dict[Side, float]) -> np.ndarray:
        rng = np.random.default_rng(0)
        anatomy, pose = sample_anatomy(rng), sample_pose(rng)
        pose.tilt, pose.shift_x, pose.shift_y, pose.zoom = 0.0, 0.0, 0.0, 1.0
        return draw_anatomy(anatomy, Canvas(size, pose), rng, retract).sharp

    removed = _region(thin_structures({}) - thin_structures({R: 0.11}), (0.12, 0.2), (0.25, 0.5))
    assert removed.min() >= -1e-6 and removed.max() > 0.01


def test_bilateral_and_central_findings() -> None:
    edema = _change(FindingSpec(edema=True))
    assert (
        _region(edema, (0.2, 0.4), (0.35, 0.55)).mean() > 5
        and _region(edema, (0.6, 0.8), (0.35, 0.55)).mean() > 5
    )
    tube = _change(FindingSpec(devices=("et_tube",)))
    assert _region(tube, (0.42, 0.58), (0.0, 0.15)).max() > 20
    wide = _change(FindingSpec(enlarged_mediastinum=True), size=128)
    assert _region(wide, (0.36, 0.64), (0.15, 0.35)).mean() > 5


def test_spec_dict_round_trip() -> None:
    spec = FindingSpec(
        effusion=Side.BILATERAL,
        opacities=(Opacity(L, "middle", "pneumonia", True),),
        lesions=(Lesion(R, "upper", "mass"),),
        devices=("pacemaker", "ng_tube"),
        severity=0.3,
    )
    assert FindingSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_template_reports_label_back_to_the_drawn_findings() -> None:
    for i in range(200):
        rng = random.Random(i)
        spec = sample_spec(rng, balance=True)
        findings, impression = compose_report(spec, rng)
        labeled = label_report(f"FINDINGS: {findings} IMPRESSION: {impression}")
        positive = {n for n, v in labeled.labels.items() if v == Mention.POSITIVE and n != "No Finding"}
        drawn = spec.positives()
        assert positive == set(drawn), (findings, impression)
        for name, side in drawn.items():
            if side is not None and name in labeled.sides:
                assert labeled.sides[name] == side, (name, findings)


def test_real_report_is_drawn_with_its_sides_zones_and_devices() -> None:
    findings = "Small left pleural effusion. Right upper lobe nodule. Endotracheal tube in place."
    labeled = label_report(f"FINDINGS: {findings}")
    report = SourceReport(findings, "", labeled.labels, labeled.sides, labeled.mentions, "test")
    spec = spec_from_report(report, random.Random(0))
    assert spec.effusion == L and spec.severity == 0.3
    assert spec.lesions == (Lesion(R, "upper", "nodule"),)
    assert spec.devices == ("et_tube",)


def test_build_world_round_trip_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "world"
    summary = build_world(out, n=10, size=64, seed=4, reports="templates", balance=True)
    assert summary["complete"] and summary["label_disagreements"] == 0
    assert summary["splits"] == {"train": 8, "validate": 1, "test": 1}
    records = read_synthetic_world(out)
    assert [r.image_id for r in records] == [f"synth4-{i:06d}" for i in range(10)]
    for record in records:
        image = np.asarray(Image.open(record.image_path))
        assert image.shape == (64, 64) and Path(record.image_path).is_absolute()
        assert record.report and record.qa and record.labels and record.source == "synthetic"
        assert set(record.extra["drawn"]) == {
            n for n, v in record.labels.items() if v == 1 and n != "No Finding"
        }
        assert record.extra["undrawn"] == []
    vqa = [json.loads(line) for line in (out / "vqa.jsonl").read_text().splitlines()]
    assert len(vqa) == sum(len(r.qa) for r in records) == summary["qa_pairs"]
    first = (out / records[0].image_path).read_bytes()
    again = build_world(out, n=10, size=64, seed=4, reports="templates", balance=True)
    assert again["rendered_now"] == 0 and (out / records[0].image_path).read_bytes() == first
    with pytest.raises(BadInputError, match="different synthetic world"):
        build_world(out, n=11, size=64, seed=4, reports="templates", balance=True)


def test_bad_inputs_are_clear(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a synthetic world"):
        read_synthetic_world(tmp_path)
    with pytest.raises(BadInputError, match="not found"):
        build_world(tmp_path / "w", 2, 64, 0, reports="iu", iu_reports_path=tmp_path / "missing.tgz")
    with pytest.raises(BadInputError, match="size"):
        render_cxr(FindingSpec(), 8, 0)


@pytest.mark.slow
def test_world_from_real_iu_reports(tmp_path: Path, shared_data: Path) -> None:
    archive = shared_data / "iu-xray" / "NLMCXR_reports.tgz"
    if not archive.is_file():
        pytest.skip(f"{archive} not found")
    summary = build_world(tmp_path, n=6, size=64, seed=0, reports="iu", iu_reports_path=archive, balance=True)
    records = read_synthetic_world(tmp_path)
    assert summary["config"]["reports"] == "iu"
    assert all(r.extra["report_source"].startswith("iu-xray:") for r in records)
    for record in records:  # every positive finding of the real report is drawn, on its side
        positive = {n for n, v in record.labels.items() if v == 1 and n != "No Finding"}
        assert positive == set(record.extra["drawn"])
        for name, side in record.extra["report_sides"].items():
            if name in record.extra["sides"]:
                assert record.extra["sides"][name] == side, (name, record.report)
