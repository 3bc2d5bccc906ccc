"""The rule-based CheXpert-14 labeler: negation and uncertainty scopes, laterality, No Finding."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmcxr.cli import app
from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14, Mention, Side
from llmcxr.reports import CheXbertLabeler, RuleLabeler, label_report

P, N, U = Mention.POSITIVE, Mention.NEGATIVE, Mention.UNCERTAIN


@functools.cache
def _iu_reports(tgz: Path) -> list:
    """The shared IU reports, read once per test session (parsing 3,955 XML files takes seconds)."""
    from llmcxr.datasets.iu_xray import read_iu_reports

    return read_iu_reports(tgz)


@pytest.mark.parametrize(
    ("report", "finding", "expected"),
    [
        ("No evidence of pneumothorax.", "Pneumothorax", N),
        ("Cannot exclude pneumonia.", "Pneumonia", U),
        ("Pneumonia cannot be excluded.", "Pneumonia", U),
        ("Pneumothorax is not excluded.", "Pneumothorax", U),
        ("Resolved effusion.", "Pleural Effusion", N),
        ("The left effusion has resolved.", "Pleural Effusion", N),
        ("Pneumothorax is no longer seen.", "Pneumothorax", N),
        ("No pleural effusion or pneumothorax.", "Pleural Effusion", N),
        ("No pleural effusion or pneumothorax.", "Pneumothorax", N),
        ("No focal consolidation, pleural effusion, or pneumothorax.", "Pneumothorax", N),
        ("Heart size is normal.", "Cardiomegaly", N),
        ("Normal heart size.", "Cardiomegaly", N),
        ("The heart is not enlarged.", "Cardiomegaly", N),
        ("Mild cardiomegaly.", "Cardiomegaly", P),
        ("The heart is mildly enlarged.", "Cardiomegaly", P),
        ("Borderline cardiomegaly.", "Cardiomegaly", U),
        ("Heart size is at the upper limits of normal.", "Cardiomegaly", N),  # still normal
        ("The heart is borderline enlarged.", "Cardiomegaly", U),
        ("Stable left-sided pleural effusion.", "Pleural Effusion", P),
        ("ET tube terminates 4 cm above the carina.", "Support Devices", P),
        ("The NG tube has been removed.", "Support Devices", N),
        ("Interval removal of the right chest tube.", "Support Devices", N),
        ("Left basilar opacity, likely atelectasis.", "Lung Opacity", P),
        ("Left basilar opacity, likely atelectasis.", "Atelectasis", U),
        ("Opacity may represent pneumonia.", "Pneumonia", U),
        ("Atelectasis versus pneumonia.", "Atelectasis", U),
        ("Atelectasis versus pneumonia.", "Pneumonia", U),
        ("No focal opacity to suggest pneumonia.", "Pneumonia", N),
        ("No change in the right pleural effusion.", "Pleural Effusion", P),
        ("No new consolidation.", "Consolidation", U),  # CheXpert: the old one may persist
        ("Pericardial effusion.", "Pleural Effusion", None),
        ("Calcified granuloma in the right upper lobe.", "Lung Lesion", None),
        ("Small pulmonary nodule in the left upper lobe.", "Lung Lesion", P),
        ("Healed right rib fractures.", "Fracture", P),
        ("Mild pulmonary edema.", "Edema", P),
        ("Pulmonary vascularity is within normal limits.", "Edema", None),
        ("Pulmonary vascular congestion.", "Edema", P),
        ("Widened mediastinum.", "Enlarged Cardiomediastinum", P),
        ("The cardiomediastinal silhouette is within normal limits.", "Enlarged Cardiomediastinum", N),
        ("Right apical pleural thickening.", "Pleural Other", P),
        ("History of tuberculosis, no active disease.", "Pneumonia", None),
        ("Prior granulomatous infection.", "Pneumonia", None),
        ("Tuberculosis screening.", "Support Devices", None),  # "tube" inside a word is no tube
        ("There is no longer evidence of pneumothorax.", "Pneumothorax", N),
        ("Heart size is top normal.", "Cardiomegaly", N),
        ("Retrocardiac opacity may represent atelectasis or consolidation.", "Consolidation", U),
        ("Retrocardiac opacity may represent atelectasis or consolidation.", "Lung Opacity", P),
        ("Sternotomy wires and mediastinal clips.", "Support Devices", None),
        ("Left chest wall pacemaker with leads in the right atrium.", "Support Devices", P),
        ("Mild pulmonary vascular congestion without frank edema.", "Edema", P),
        ("Heart size moderately enlarged, stable mediastinal contours.", "Enlarged Cardiomediastinum", None),
        (
            "Air-fluid level in the mediastinum, secondary to a large hiatal hernia.",
            "Enlarged Cardiomediastinum",
            None,
        ),
        ("The heart, hila and mediastinum are within normal limits.", "Cardiomegaly", N),
    ],
)
def test_mention_reading(report: str, finding: str, expected: Mention | None) -> None:
    assert label_report(report).labels.get(finding) is expected


def test_scope_ends_at_but_and_sentence_end() -> None:
    labels = label_report("No pneumothorax, but there is a small left pleural effusion.").labels
    assert labels["Pneumothorax"] is N and labels["Pleural Effusion"] is P
    labels = label_report("No pneumothorax. Small left pleural effusion.").labels
    assert labels["Pneumothorax"] is N and labels["Pleural Effusion"] is P
    labels = label_report("Cardiomegaly without pulmonary edema.").labels
    assert labels["Cardiomegaly"] is P and labels["Edema"] is N
    labels = label_report("No pneumothorax; however, there is left lower lobe atelectasis.").labels
    assert labels["Atelectasis"] is P


def test_aggregation_positive_beats_uncertain_beats_negative() -> None:
    assert label_report("No effusion on the left. Small right effusion.").labels["Pleural Effusion"] is P
    assert label_report("No pneumonia. Possible early pneumonia at the right base.").labels["Pneumonia"] is U


def test_laterality() -> None:
    sides = label_report("Stable left-sided pleural effusion. Right lower lobe pneumonia.").sides
    assert sides == {"Pneumonia": Side.RIGHT, "Pleural Effusion": Side.LEFT}
    assert label_report("Small bilateral pleural effusions.").sides["Pleural Effusion"] is Side.BILATERAL
    assert label_report("Small effusions.").sides["Pleural Effusion"] is Side.BILATERAL
    assert label_report("Left effusion. Right effusion.").sides["Pleural Effusion"] is Side.BILATERAL
    assert label_report("Bibasilar atelectasis.").sides["Atelectasis"] is Side.BILATERAL
    assert label_report("Lingular opacity.").sides["Lung Opacity"] is Side.LEFT
    # negated findings carry no side; a side word far away in another clause does not count
    assert label_report("No left pneumothorax.").sides == {}
    assert "Cardiomegaly" not in label_report("Mild cardiomegaly with left effusion.").sides


def test_no_finding_rule() -> None:
    normal = label_report("No acute cardiopulmonary process.")
    assert normal.labels == {"No Finding": P}
    # support devices do not rule out No Finding; any other positive or uncertain observation does
    assert label_report("ET tube 4 cm above the carina. Lungs clear.").labels["No Finding"] is P
    assert "No Finding" not in label_report("Possible small left effusion.").labels
    assert "No Finding" not in label_report("Mild cardiomegaly.").labels
    # abnormalities outside the 14 (CheXpert's no-finding phrase list) also rule it out
    assert "No Finding" not in label_report("Calcified granuloma. Degenerative changes of the spine.").labels
    assert label_report("No emphysema. Heart size is normal.").labels["No Finding"] is P
    # No Finding is never negative, and an empty report says nothing
    assert all(
        lr.labels.get("No Finding") in (None, P) for lr in map(label_report, ["Pneumonia.", "", "Normal."])
    )
    assert label_report("   ").labels == {}


def test_full_mimic_report_labels_findings_and_impression_only() -> None:
    report = "INDICATION: Evaluate for pneumonia.\nFINDINGS: Lungs are clear.\nIMPRESSION: No acute process."
    labels = label_report(report).labels
    assert "Pneumonia" not in labels and labels["No Finding"] is P


def test_labels_use_chexpert_names_and_order_and_mentions_point_into_text() -> None:
    labeled = label_report("Moderate right pneumothorax. Small left pleural effusion. Mild cardiomegaly.")
    assert list(labeled.labels) == [c for c in CHEXPERT_14 if c in labeled.labels]
    assert labeled.as_ints() == {"Cardiomegaly": 1, "Pneumothorax": 1, "Pleural Effusion": 1}
    for mention in labeled.mentions:
        assert labeled.text[mention.start : mention.end].strip()


def test_rule_labeler_protocol_matches_function() -> None:
    reports = ["Mild cardiomegaly.", "No pneumothorax."]
    assert [lr.labels for lr in RuleLabeler().label(reports)] == [label_report(r).labels for r in reports]


def test_chexbert_hook_needs_local_weights(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="CheXbert weights not found"):
        CheXbertLabeler(tmp_path / "chexbert.safetensors", tmp_path / "bert")
    (tmp_path / "chexbert.pth").write_bytes(b"x")
    (tmp_path / "bert").mkdir()
    with pytest.raises(BadInputError, match="config.json"):
        CheXbertLabeler(tmp_path / "chexbert.pth", tmp_path / "bert")
    (tmp_path / "bert" / "config.json").write_text("{}")
    with pytest.raises(BadInputError, match="safetensors"):
        CheXbertLabeler(tmp_path / "chexbert.pth", tmp_path / "bert")


def test_cli_label_jsonl_csv_and_txt_folder(tmp_path: Path) -> None:
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text(
        json.dumps({"id": "a", "findings": "Mild cardiomegaly.", "impression": "Left effusion."}) + "\n"
    )
    csv_file = tmp_path / "table.csv"
    csv_file.write_text("study_id,report\ns1,No pneumothorax.\n")
    folder = tmp_path / "txt" / "p10"
    folder.mkdir(parents=True)
    (folder / "s5.txt").write_text("FINDINGS: Right lower lobe pneumonia.\nIMPRESSION: Pneumonia.")
    runner = CliRunner()
    for source, expected_id, finding in [
        (jsonl, "a", "Cardiomegaly"),
        (csv_file, "s1", "No Finding"),
        (tmp_path / "txt", "p10/s5", "Pneumonia"),
    ]:
        out = tmp_path / f"{source.stem}.labels.jsonl"
        result = runner.invoke(app, ["data", "label", str(source), "--out", str(out)])
        assert result.exit_code == 0, result.output
        row = json.loads(out.read_text().splitlines()[0])
        assert row["id"] == expected_id and row["labels"][finding] == 1
    row = json.loads((tmp_path / "reports.labels.jsonl").read_text())
    assert row["sides"] == {"Pleural Effusion": "left"}


def test_cli_label_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = CliRunner().invoke(app, ["data", "label", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert isinstance(result.exception, BadInputError) and "line 1" in str(result.exception)


def test_shared_iu_reports_label_quickly(shared_data: Path) -> None:
    tgz = shared_data / "iu-xray" / "NLMCXR_reports.tgz"
    if not tgz.exists():
        pytest.skip(f"{tgz} not found")
    reports = _iu_reports(tgz)[:300]
    labeled = [label_report(f"{r.findings} {r.impression}") for r in reports]
    normal = [lr for r, lr in zip(reports, labeled, strict=True) if r.mesh_major == ["normal"]]
    # human "normal" tags and the No Finding rule agree on most normal studies (measured: ~94%)
    assert sum(lr.labels.get("No Finding") is P for lr in normal) >= 0.8 * len(normal)


def test_speed_gates_do_not_change_labels(shared_data: Path) -> None:
    """The substring gates only skip regexes that cannot match: gated == ungated on real reports."""
    tgz = shared_data / "iu-xray" / "NLMCXR_reports.tgz"
    if not tgz.exists():
        pytest.skip(f"{tgz} not found")
    for report in _iu_reports(tgz)[::4]:
        text = f"{report.findings} {report.impression}"
        gated, ungated = label_report(text), label_report(text, gated=False)
        assert (gated.labels, gated.sides) == (ungated.labels, ungated.sides), text


def test_chexbert_hook_round_trip_with_a_tiny_random_model(tmp_path: Path) -> None:
    """convert_chexbert (pickle -> safetensors, the released key layout) then CheXbertLabeler runs."""
    import torch
    from transformers import BertConfig, BertModel

    from llmcxr.reports import convert_chexbert

    bert_folder = tmp_path / "bert"
    config = BertConfig(
        vocab_size=12,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
    )
    config.save_pretrained(bert_folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pneumothorax", "mild", "cardiomegaly", "."]
    (bert_folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (bert_folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    torch.manual_seed(0)
    bert = BertModel(config)  # with the pooler, as the released checkpoint has it
    heads = torch.nn.ModuleList([torch.nn.Linear(8, 4 if i < 13 else 2) for i in range(14)])
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    state |= {f"module.linear_heads.{k}": v for k, v in heads.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 3}, tmp_path / "chexbert.pth")

    weights = convert_chexbert(tmp_path / "chexbert.pth", tmp_path / "chexbert.safetensors")
    labeler = CheXbertLabeler(weights, bert_folder)
    labeled = labeler.label(["no pneumothorax.", "mild cardiomegaly"])
    assert len(labeled) == 2
    for report in labeled:
        assert set(report.labels) <= set(CHEXPERT_14)
        assert all(isinstance(v, Mention) for v in report.labels.values())
    # the labeler reproduces the heads' argmax on the [CLS] state of the same weights
    batch = labeler.tokenizer("mild cardiomegaly", return_tensors="pt")
    with torch.no_grad():
        cls = bert(**batch).last_hidden_state[:, 0]
        expected = int(heads[1](cls).argmax(-1))  # head 1 = Cardiomegaly in CheXbert's order
    got = labeled[1].labels.get("Cardiomegaly")
    assert got == {1: Mention.POSITIVE, 2: Mention.NEGATIVE, 3: Mention.UNCERTAIN}.get(expected)


def test_cli_label_with_missing_chexbert_weights_says_so(tmp_path: Path) -> None:
    reports = tmp_path / "r.csv"
    reports.write_text("report\nNo pneumothorax.\n")
    args = [
        "data",
        "label",
        str(reports),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--chexbert",
        str(tmp_path / "none.safetensors"),
    ]
    result = CliRunner().invoke(app, [*args, "--bert", str(tmp_path)])
    assert isinstance(result.exception, BadInputError) and "CheXbert weights not found" in str(
        result.exception
    )
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (
            "Heart size normal and lungs are clear. No edema or pneumonia. No effusion",
            {"No Finding": 1, "Cardiomegaly": 0, "Edema": 0, "Pneumonia": 0, "Pleural Effusion": 0},
        ),
        (
            "1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n\n"
            "2. Cardiomegaly without overt edema.",
            {"Cardiomegaly": 1, "Edema": 0, "Atelectasis": 1, "Pleural Effusion": 1},
        ),
        (
            "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
            {"Lung Opacity": 1, "Consolidation": -1, "Atelectasis": -1},
        ),
        ("1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.", {"Cardiomegaly": 1}),
    ],
)
def test_agrees_with_the_chexpert_labelers_published_sample(report: str, expected: dict[str, int]) -> None:
    """The four sample reports and labels of github.com/stanfordmlgroup/chexpert-labeler
    (labeled_reports.csv), reproduced exactly."""
    assert label_report(report).as_ints() == expected
