"""Report collections on disk -> (id, text) rows; labels and VQA pairs -> JSONL.

Accepted inputs (``read_reports``):

- IU X-ray: ``NLMCXR_reports.tgz``, or a folder of its XML files -> id = uid, text = findings +
  impression;
- JSONL: one object per line; id from ``id``/``image_id``/``study_id``/``report_id`` (else the
  line number); text from ``report``/``text``, else ``findings`` + ``impression``; an existing
  ``labels`` dict (CheXpert name -> 1/0/-1) and ``sides`` are kept;
- CSV: the same column names;
- a ``.txt`` file (one report) or a folder of ``.txt`` files (one report each, e.g. MIMIC-CXR's
  ``files/p10/p10000032/s50414267.txt``; id = path without suffix relative to the folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14, Side
from llmcxr.reports.labeler import Labeler, RuleLabeler
from llmcxr.tables import read_csv, read_jsonl

_ID_KEYS = ("id", "image_id", "study_id", "report_id", "uid")
_TEXT_KEYS = ("report", "text")
_SIDE_NAMES = {Side.LEFT: "left", Side.RIGHT: "right", Side.BILATERAL: "bilateral"}


@dataclass
class ReportRow:
    """One report to label; ``labels``/``sides`` are set where the input already carries them."""

    id: str
    text: str
    labels: dict[str, int] | None = None
    sides: dict[str, int] = field(default_factory=dict)


def _row_from_mapping(row: dict, fallback_id: str, source: Path) -> ReportRow:
    report_id = next((str(row[k]) for k in _ID_KEYS if row.get(k) not in (None, "")), fallback_id)
    text = next((str(row[k]) for k in _TEXT_KEYS if row.get(k)), "")
    if not text:
        text = " ".join(str(row[k]) for k in ("findings", "impression") if row.get(k))
    labels = row.get("labels")
    if isinstance(labels, str) and labels:
        labels = json.loads(labels)
    if labels is not None and not isinstance(labels, dict):
        raise BadInputError(
            source, f"row {fallback_id}: 'labels' is not an object", 'use {"Cardiomegaly": 1, ...}'
        )
    if labels is not None:
        unknown = set(labels) - set(CHEXPERT_14)
        if unknown:
            raise BadInputError(
                source, f"row {fallback_id}: unknown finding names {sorted(unknown)}", "use CheXpert-14 names"
            )
        labels = {k: int(v) for k, v in labels.items()}
    sides = row.get("sides") or {}
    if isinstance(sides, str):
        sides = json.loads(sides)
    by_name = {v: k for k, v in _SIDE_NAMES.items()}
    sides = {k: int(by_name[v]) if isinstance(v, str) else int(v) for k, v in sides.items()}
    return ReportRow(report_id, text, labels, sides)


def _read_jsonl(path: Path) -> list[ReportRow]:
    return [_row_from_mapping(row, str(i), path) for i, row in enumerate(read_jsonl(path), 1)]


def _read_csv(path: Path) -> list[ReportRow]:
    rows = read_csv(path)
    columns = set(rows[0]) if rows else set()
    if not columns & {*_TEXT_KEYS, "findings", "impression"}:
        raise BadInputError(
            path,
            f"no report column (found {sorted(columns)})",
            "add a 'report' or 'findings'/'impression' column",
        )
    return [_row_from_mapping(row, str(i), path) for i, row in enumerate(rows, 1)]


def read_reports(path: str | Path) -> list[ReportRow]:
    """Reports from any of the inputs listed in the module docstring."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(
            path, "not found", "pass a JSONL/CSV file, a .txt file or folder, or the IU X-ray .tgz"
        )
    name = path.name.lower()
    if path.is_dir() and not any(path.rglob("*.txt")) or name.endswith((".tgz", ".tar.gz", ".tar", ".xml")):
        from llmcxr.datasets.iu_xray import read_iu_reports

        return [
            ReportRow(r.uid, " ".join(p for p in (r.findings, r.impression) if p))
            for r in read_iu_reports(path)
        ]
    if path.is_dir():
        return [
            ReportRow(str(p.relative_to(path).with_suffix("")), p.read_text(errors="replace"))
            for p in sorted(path.rglob("*.txt"))
        ]
    if name.endswith(".jsonl"):
        return _read_jsonl(path)
    if name.endswith(".csv"):
        return _read_csv(path)
    if name.endswith(".txt"):
        return [ReportRow(path.stem, path.read_text(errors="replace"))]
    raise BadInputError(
        path, "unknown report file type", "use .jsonl, .csv, .txt, a folder of .txt, or the IU X-ray .tgz"
    )


def label_rows(
    rows: list[ReportRow], relabel: bool = True, labeler: Labeler | None = None
) -> list[ReportRow]:
    """Fill ``labels``/``sides`` with ``labeler`` (default: the rule-based one); rows that carry
    labels keep them unless ``relabel``."""
    todo = [row for row in rows if relabel or row.labels is None]
    for row, labeled in zip(todo, (labeler or RuleLabeler()).label([r.text for r in todo]), strict=True):
        row.labels = labeled.as_ints()
        row.sides = {name: int(side) for name, side in labeled.sides.items()}
    return rows


def write_labels_jsonl(path: str | Path, rows: list[ReportRow]) -> None:
    """One line per report: ``{"id", "labels": {name: 1|0|-1}, "sides": {name: "left"|...}}``."""
    lines = []
    for row in rows:
        sides = {name: _SIDE_NAMES[Side(v)] for name, v in row.sides.items()}
        lines.append(json.dumps({"id": row.id, "labels": row.labels or {}, "sides": sides}))
    atomic.write_text(path, "".join(line + "\n" for line in lines))
