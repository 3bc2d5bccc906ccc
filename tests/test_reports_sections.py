"""Report sections, cleaning, and IU X-ray XML reading."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from llmcxr.datasets.iu_xray import iu_records, parse_iu_xml, read_iu_reports, read_r2gen_split
from llmcxr.errors import BadInputError
from llmcxr.findings import Mention
from llmcxr.reports import clean_report_text, label_report, parse_mimic_report

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough and fever, eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 The heart size is normal. There is a small left pleural effusion.
 No pneumothorax. The ET tube terminates 4.5 cm above the carina.

 IMPRESSION:

 1. Small left pleural effusion.
 2. No pneumothorax.
"""


def test_mimic_sections_split_and_keep_text() -> None:
    sections = parse_mimic_report(MIMIC_REPORT)
    assert sections.examination == "CHEST (PA AND LAT)"
    assert sections.indication.startswith("___F with cough")
    assert sections.technique == "Chest PA and lateral"
    assert sections.comparison == "___"
    assert sections.findings.startswith("The heart size is normal.")
    assert "4.5 cm above the carina." in sections.findings  # a decimal point is not a header boundary
    assert sections.impression == "1. Small left pleural effusion. 2. No pneumothorax."
    assert not sections.combined and not sections.fallback


def test_header_variants_lower_case_combined_and_conclusion() -> None:
    combined = parse_mimic_report("indication: cough\nfindings and impression: no acute process.")
    assert combined.findings == "no acute process." and combined.combined
    assert combined.impression == "" and combined.impression_or_findings == "no acute process."
    conclusion = parse_mimic_report("HISTORY: fever\nCONCLUSION: Right lower lobe pneumonia.")
    assert conclusion.impression == "Right lower lobe pneumonia." and conclusion.history == "fever"
    impression_only = parse_mimic_report("IMPRESSION: Cardiomegaly.")
    assert impression_only.findings == "" and impression_only.impression == "Cardiomegaly."


def test_wet_read_addendum_and_repeated_sections() -> None:
    text = (
        "WET READ: ___ ___ 3:12 PM  No pneumothorax.\n FINAL REPORT\n FINDINGS: Clear lungs.\n"
        "IMPRESSION: Normal.\n ADDENDUM\n The tube was removed.\n IMPRESSION: Still normal."
    )
    sections = parse_mimic_report(text)
    assert sections.wet_read == "No pneumothorax."
    assert sections.addendum == "The tube was removed."
    assert sections.impression == "Normal. Still normal."


def test_no_headers_falls_back_to_last_paragraph() -> None:
    sections = parse_mimic_report("Portable chest.\n\nLeft basilar atelectasis. No effusion.")
    assert sections.fallback and sections.impression == "Left basilar atelectasis. No effusion."
    assert parse_mimic_report("").impression == ""


def test_words_followed_by_colon_are_not_headers_unless_known() -> None:
    sections = parse_mimic_report("FINDINGS: Tube position: unchanged. Lungs clear.")
    assert sections.findings == "Tube position: unchanged. Lungs clear."


def test_clean_report_text_placeholders_and_meaningless_sentences() -> None:
    iu = "Normal chest x-XXXX. XXXX XXXX. The XXXX are intact. No pneumothorax."
    assert clean_report_text(iu) == "Normal chest x-ray. The ___ are intact. No pneumothorax."
    mimic = "1. No acute process.\n 2. Dr. ___ was notified at ___ by phone. 3. Effusion vs. atelectasis."
    assert clean_report_text(mimic) == "No acute process. Effusion vs. atelectasis."
    assert clean_report_text("  Heart   size\n normal . ") == "Heart size normal."
    assert clean_report_text(iu, anonymised="keep").startswith("Normal chest x-XXXX.")
    with pytest.raises(ValueError):
        clean_report_text(iu, anonymised="nope")


@pytest.mark.parametrize(
    "report",
    [
        "There are no XXXX of a pleural effusion. XXXX XXXX. Mild cardiomegaly.",
        "Left lower lobe opacity. Dr. ___ was paged at ___. No pneumothorax.",
    ],
)
def test_cleaning_keeps_the_labels(report: str) -> None:
    assert label_report(clean_report_text(report)).labels == label_report(report).labels


def _iu_xml(uid: int, findings: str, impression: str, major: list[str], images: list[str]) -> str:
    mesh = "".join(f"<major>{m}</major>" for m in major) + "<minor>Lung/hypoinflation</minor>"
    parents = "".join(f'<parentImage id="{i}"><figureId>F1</figureId></parentImage>' for i in images)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{uid}"/><MedlineCitation><Article>'
        f'<Abstract><AbstractText Label="COMPARISON">None.</AbstractText>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract></Article></MedlineCitation>'
        f"<MeSH>{mesh}</MeSH>{parents}</eCitation>"
    )


@pytest.fixture
def iu_tgz(tmp_path: Path) -> Path:
    reports = {
        "ecgen-radiology/2.xml": _iu_xml(
            2,
            "Heart size is   normal.",
            "No acute disease.",
            ["normal"],
            ["CXR2_1_IM-0652-1001", "CXR2_1_IM-0652-2001"],
        ),
        "ecgen-radiology/10.xml": _iu_xml(
            10,
            "Small left effusion.",
            "Small XXXX effusion. XXXX XXXX.",
            ["Pleural Effusion/left/small"],
            ["CXR10_IM-0002-1001"],
        ),
        "ecgen-radiology/1.xml": _iu_xml(1, "", "Normal chest x-XXXX.", ["normal"], []),
    }
    path = tmp_path / "reports.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in reports.items():
            payload = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def test_read_iu_reports_from_tgz_and_folder(iu_tgz: Path, tmp_path: Path) -> None:
    reports = read_iu_reports(iu_tgz)
    assert [r.uid for r in reports] == ["CXR1", "CXR2", "CXR10"]  # sorted by number, not text
    second = reports[1]
    assert second.findings == "Heart size is normal." and second.impression == "No acute disease."
    assert second.mesh_major == ["normal"] and second.mesh_minor == ["Lung/hypoinflation"]
    assert second.image_ids == ["CXR2_1_IM-0652-1001", "CXR2_1_IM-0652-2001"]
    assert second.comparison == "None."
    folder = tmp_path / "xml"
    with tarfile.open(iu_tgz) as archive:
        archive.extractall(folder, filter="data")
    assert [r.uid for r in read_iu_reports(folder)] == ["CXR1", "CXR2", "CXR10"]


def test_iu_records_images_splits_labels(iu_tgz: Path, tmp_path: Path) -> None:
    images = tmp_path / "png"
    images.mkdir()
    (images / "CXR2_1_IM-0652-1001.png").write_bytes(b"not read here")
    (images / "CXR10_IM-0002").mkdir()
    (images / "CXR10_IM-0002" / "0.png").write_bytes(b"r2gen layout")
    split = tmp_path / "split.json"
    split.write_text('{"train": ["CXR2_IM-0652"], "val": ["CXR10_IM-0002"], "test": []}')
    records = iu_records(iu_tgz, images=images, split_file=split)
    by_uid = {r.patient_id: r for r in records}
    assert by_uid["CXR2"].image_path.endswith("CXR2_1_IM-0652-1001.png") and by_uid["CXR2"].split == "train"
    assert by_uid["CXR10"].image_path.endswith("0.png") and by_uid["CXR10"].split == "validate"
    assert (
        by_uid["CXR10"].impression == "Small ___ effusion."
        and by_uid["CXR10"].labels["Pleural Effusion"] == Mention.POSITIVE
    )
    assert by_uid["CXR10"].extra["sides"] == {"Pleural Effusion": 1}
    assert by_uid["CXR1"].image_path is None and by_uid["CXR1"].impression == "Normal chest x-ray."
    assert [r.patient_id for r in iu_records(iu_tgz, images=images, require_image=True)] == ["CXR2", "CXR10"]
    per_image = iu_records(iu_tgz, images=images, per_image=True)
    assert [r.image_id for r in per_image] == [
        "CXR1",
        "CXR2_1_IM-0652-1001",
        "CXR2_1_IM-0652-2001",
        "CXR10_IM-0002-1001",
    ]
    assert per_image[2].image_path is None and per_image[2].labels == per_image[1].labels


def test_iu_bad_input_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not valid XML"):
        parse_iu_xml(b"<eCitation><uId", "broken.xml")
    with pytest.raises(BadInputError, match="no <uId"):
        parse_iu_xml(b"<eCitation/>", "empty.xml")
    with pytest.raises(BadInputError, match="not found"):
        read_iu_reports(tmp_path / "missing.tgz")
    (tmp_path / "junk.tgz").write_bytes(b"junk")
    with pytest.raises(BadInputError, match="tar"):
        read_iu_reports(tmp_path / "junk.tgz")
    (tmp_path / "split.json").write_text("{}")
    with pytest.raises(BadInputError, match="split"):
        read_r2gen_split(tmp_path / "split.json")


def test_shared_iu_collection(shared_data: Path) -> None:
    tgz = shared_data / "iu-xray" / "NLMCXR_reports.tgz"
    if not tgz.exists():
        pytest.skip(f"{tgz} not found")
    reports = read_iu_reports(tgz)
    assert len(reports) == 3955
    assert sum("normal" in r.mesh_major for r in reports) == 1391
    split_of = read_r2gen_split(shared_data / "iu-xray" / "r2gen_split.json")
    assert sum(r.uid in split_of for r in reports) == 2955
    first = reports[0]
    assert first.uid == "CXR1" and first.image_ids == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]


def test_headerless_findings_after_an_administrative_section() -> None:
    text = "EXAMINATION: CHEST PA\nCOMPARISON: ___\n\nThe lungs are clear.\nNo effusion.\n\nNo acute process."
    sections = parse_mimic_report(text)
    assert sections.comparison == "___" and sections.examination == "CHEST PA"
    assert sections.fallback and sections.impression == "No acute process."
    # a blank line inside FINDINGS does not end it
    text = "FINDINGS: Lungs clear.\n\nHeart normal.\nIMPRESSION: Normal."
    assert parse_mimic_report(text).findings == "Lungs clear. Heart normal."
