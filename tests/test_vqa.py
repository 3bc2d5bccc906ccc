"""VQA pairs from labels: kinds, phrasings, yes/no balance, determinism, JSONL round trip."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from llmcxr.cli import app
from llmcxr.findings import CHEXPERT_14, Mention, Side
from llmcxr.records import CXRRecord
from llmcxr.reports import generate_qa, label_report, qa_seed, read_vqa_jsonl, write_vqa_jsonl
from llmcxr.reports.vqa import TEMPLATES

P, N, U = Mention.POSITIVE, Mention.NEGATIVE, Mention.UNCERTAIN
ABNORMAL = {"Cardiomegaly": P, "Pleural Effusion": P, "Pneumothorax": N, "Support Devices": P, "Edema": U}
SIDES = {"Pleural Effusion": Side.LEFT}


def _random_labels(rng: random.Random) -> dict[str, Mention]:
    labels = {f: rng.choice([P, N, U]) for f in CHEXPERT_14[1:] if rng.random() < 0.4}
    if not any(v is not N for f, v in labels.items() if f != "Support Devices"):
        labels["No Finding"] = P
    return labels


def test_every_kind_has_at_least_five_phrasings() -> None:
    assert all(len(set(t)) >= 5 for t in TEMPLATES.values())


def test_abnormal_study_questions_and_answers() -> None:
    qa = generate_qa(ABNORMAL, SIDES, seed=3)
    by_kind = Counter(q.kind for q in qa)
    assert by_kind == {"presence": 4, "laterality": 1, "abnormalities": 1, "heart_size": 1, "devices": 1}
    presence = [q for q in qa if q.kind == "presence"]
    for q in presence:  # "yes" exactly for the positive findings; uncertain ones are never asked
        assert q.finding != "Edema"
        assert q.answer == ("yes" if ABNORMAL.get(q.finding) is P else "no")
    assert next(q for q in qa if q.kind == "laterality").answer == "left"
    assert next(q for q in qa if q.kind == "abnormalities").answer == "cardiomegaly, pleural effusion"
    assert next(q for q in qa if q.kind == "heart_size").answer == "enlarged"
    assert next(q for q in qa if q.kind == "devices").answer == "yes"


def test_normal_study_gets_a_normality_pair() -> None:
    qa = generate_qa({"No Finding": P, "Pneumothorax": N}, {}, seed=0)
    presence = {q.finding: q.answer for q in qa if q.kind == "presence"}
    assert presence["No Finding"] == "yes" and list(presence.values()).count("no") == 1
    answers = {q.kind: q.answer for q in qa}
    assert (
        answers["abnormalities"] == "no abnormality"
        and answers["heart_size"] == "normal"
        and answers["devices"] == "no"
    )


def test_yes_no_balance_per_report_and_overall() -> None:
    rng = random.Random(0)
    totals = Counter()
    for i in range(300):
        answers = Counter(
            q.answer for q in generate_qa(_random_labels(rng), {}, seed=i, pairs=3) if q.kind == "presence"
        )
        assert answers["yes"] == answers["no"]
        totals += answers
    assert totals["yes"] == totals["no"] > 300


def test_deterministic_by_seed_and_varied_across_seeds() -> None:
    assert generate_qa(ABNORMAL, SIDES, seed=7) == generate_qa(ABNORMAL, SIDES, seed=7)
    # int labels (CXRRecord.labels form) give the same pairs as Mention labels
    ints = {k: int(v) for k, v in ABNORMAL.items()}
    assert generate_qa(ints, {k: int(v) for k, v in SIDES.items()}, seed=7) == generate_qa(
        ABNORMAL, SIDES, seed=7
    )
    questions = {
        q.question for s in range(40) for q in generate_qa(ABNORMAL, SIDES, seed=s) if q.kind == "heart_size"
    }
    assert len(questions) >= 4
    assert qa_seed("img1", 0) == qa_seed("img1", 0) != qa_seed("img2", 0)


def test_askable_limits_the_findings_named() -> None:
    qa = generate_qa(ABNORMAL, SIDES, seed=1, askable=("No Finding", "Cardiomegaly", "Pneumothorax"))
    named = {q.finding for q in qa if q.kind == "presence"}
    assert named <= {"No Finding", "Cardiomegaly", "Pneumothorax"}
    assert next(q for q in qa if q.kind == "abnormalities").answer == "cardiomegaly"
    assert not any(q.kind in ("devices", "laterality") for q in qa)


def test_unknown_heart_size_is_not_asked() -> None:
    assert not [q for q in generate_qa({"Pneumothorax": P}, {}, seed=0) if q.kind == "heart_size"]
    assert generate_qa({}, {}, seed=0) == []


def test_jsonl_round_trip(tmp_path: Path) -> None:
    records = [
        CXRRecord("a", qa=generate_qa(ABNORMAL, SIDES, seed=1)),
        CXRRecord("b", qa=generate_qa(label_report("No acute disease.").labels, {}, seed=2)),
    ]
    path = tmp_path / "vqa.jsonl"
    assert write_vqa_jsonl(path, records) == sum(len(r.qa) for r in records)
    assert read_vqa_jsonl(path) == {r.image_id: r.qa for r in records}


def test_cli_vqa_from_labels_file(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    rows = [
        {
            "id": "x1",
            "labels": {"Cardiomegaly": 1, "Pleural Effusion": 1},
            "sides": {"Pleural Effusion": "right"},
        },
        {"id": "x2", "labels": {"No Finding": 1}},
    ]
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "vqa.jsonl"
    runner = CliRunner()
    result = runner.invoke(app, ["data", "vqa", str(labels), "--out", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {p["image_id"] for p in pairs} == {"x1", "x2"}
    assert {"image_id": "x1", "answer": "right", "kind": "laterality"}.items() <= next(
        p for p in pairs if p["kind"] == "laterality"
    ).items()
    first = out.read_text()
    runner.invoke(app, ["data", "vqa", str(labels), "--out", str(out), "--seed", "5"])
    assert out.read_text() == first


def test_read_vqa_jsonl_bad_line_names_the_file(tmp_path: Path) -> None:
    import pytest

    from llmcxr.errors import BadInputError

    path = tmp_path / "vqa.jsonl"
    path.write_text('{"image_id": "a", "question": "q"}\n')
    with pytest.raises(BadInputError, match="line 1"):
        read_vqa_jsonl(path)


def test_abnormality_answers_read_back_as_the_same_findings() -> None:
    """Metrics score free-text answers with the labeler: every answer phrase must label as its finding."""
    from llmcxr.reports.vqa import _PHRASE

    for finding, (_, answer) in _PHRASE.items():
        assert label_report(answer).labels.get(finding) is P, (finding, answer)
    assert label_report("no abnormality").labels == {"No Finding": P}
