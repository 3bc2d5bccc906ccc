"""A generic CSV/JSONL manifest of CXRs and reports -> CXR records.

Columns (JSONL keys): ``image`` or ``image_path`` (relative to the manifest, or absolute) and
either ``report`` (free text; FINDINGS:/IMPRESSION: headings are split with
``llmcxr.reports.parse_mimic_report``) or ``findings`` and/or ``impression``. Optional:
``image_id`` (else the id ``llmcxr.imaging.scan_images`` gives, i.e. the token store's key),
``view``, ``patient_id``, ``study_id``, ``study_date``, ``split``, ``labels`` (a JSON object of
CheXpert name -> 1/0/-1: the image's findings where you know them), and ``question`` + ``answer``
(one VQA pair per row).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14
from llmcxr.imaging import scan_images
from llmcxr.records import QA, CXRRecord
from llmcxr.reports import parse_mimic_report
from llmcxr.tables import row_labels


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def _report_parts(row: dict) -> tuple[str, str]:
    findings, impression = _text(row, "findings"), _text(row, "impression")
    if findings or impression:
        return findings, impression
    report = _text(row, "report")
    if not report:
        return "", ""
    sections = parse_mimic_report(report)
    if sections.findings or sections.impression:
        return sections.findings, sections.impression
    return report, ""  # no headings: all of it is findings


def _rows(manifest: Path) -> list[dict]:
    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_manifest(manifest: Path) -> list[CXRRecord]:
    """One record per manifest row, in row order."""
    manifest = Path(manifest)
    entries = scan_images(manifest)
    rows = _rows(manifest)  # scan_images has read and checked them already
    records = []
    for number, (entry, row) in enumerate(zip(entries, rows, strict=True), start=1):
        findings, impression = _report_parts(row)
        question, answer = _text(row, "question"), _text(row, "answer")
        if not (findings or impression or question):
            raise BadInputError(manifest, f"row {number} has no report, findings, impression or question")
        labels = row_labels(row, manifest) or {}
        unknown = sorted(set(labels) - set(CHEXPERT_14))
        if unknown:
            raise BadInputError(
                manifest, f"row {number}: {unknown} are not CheXpert-14 names", f"use {CHEXPERT_14}"
            )
        records.append(
            CXRRecord(
                image_id=entry.image_id,
                image_path=str(entry.path),
                study_id=_text(row, "study_id") or None,
                patient_id=_text(row, "patient_id") or _text(row, "patient") or None,
                view=entry.view,
                study_date=_text(row, "study_date") or None,
                findings=findings,
                impression=impression,
                labels=labels,
                qa=[QA(question, answer, kind="manifest")] if question and answer else [],
                split=_text(row, "split") or None,
                source="manifest",
            )
        )
    return records
