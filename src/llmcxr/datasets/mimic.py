"""MIMIC-CXR-JPG (v2.0.0, PhysioNet) in its official layout -> CXR records, one per image (dicom).

    root/mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split
    root/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, ..., ViewPosition, StudyDate, StudyTime, ...
    root/files/p10/p10000032/s50414267.txt                      the study's free-text report
    root/files/p10/p10000032/s50414267/<dicom_id>.jpg           the image

Reports may also sit in a separate tree (the mimic-cxr reports zip): pass ``reports_root``.
The image id is the dicom_id (the file stem, as ``llmcxr vq encode`` keys the images).
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.records import CXRRecord
from llmcxr.reports import parse_mimic_report

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"


def _read_csv_gz(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        plain = path.with_suffix("")  # an unzipped copy (.csv) is fine too
        if not plain.is_file():
            raise BadInputError(
                path, "MIMIC-CXR-JPG table not found", "point the path at the MIMIC-CXR-JPG root"
            )
        path = plain
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def study_folder(root: Path, subject_id: str, study_id: str) -> Path:
    """root/files/pXX/pXXXXXXXX/sXXXXXXXX (XX = the first two digits of the subject id)."""
    return Path(root) / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _study_date(row: dict[str, str]) -> str | None:
    """StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff), zero-padded so strings sort in time order."""
    date = (row.get("StudyDate") or "").strip()
    if not date:
        return None
    time = (row.get("StudyTime") or "0").strip().split(".")[0].zfill(6)
    return f"{date}T{time}"


def read_mimic(root: Path, reports_root: Path | None = None) -> list[CXRRecord]:
    """Every image with a readable report; images whose report file is missing are skipped."""
    root = Path(root)
    reports_root = Path(reports_root) if reports_root is not None else root
    metadata = {row["dicom_id"]: row for row in _read_csv_gz(root / METADATA_FILE)}
    reports: dict[Path, tuple[str, str] | None] = {}
    records = []
    for row in _read_csv_gz(root / SPLIT_FILE):
        subject, study, dicom = row["subject_id"], row["study_id"], row["dicom_id"]
        folder = study_folder(reports_root, subject, study)
        report_path = folder.with_suffix(".txt")
        if report_path not in reports:
            if report_path.is_file():
                sections = parse_mimic_report(report_path.read_text(encoding="utf-8", errors="replace"))
                reports[report_path] = (sections.findings, sections.impression)
            else:
                reports[report_path] = None
        parts = reports[report_path]
        if parts is None:
            continue
        meta = metadata.get(dicom, {})
        records.append(
            CXRRecord(
                image_id=dicom,
                image_path=str(study_folder(root, subject, study) / f"{dicom}.jpg"),
                study_id=study,
                patient_id=subject,
                view=(meta.get("ViewPosition") or "").strip() or None,
                study_date=_study_date(meta),
                findings=parts[0],
                impression=parts[1],
                split=row.get("split") or None,
                source="mimic-cxr",
            )
        )
    return records
