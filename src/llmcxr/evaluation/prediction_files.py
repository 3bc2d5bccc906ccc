"""Reading prediction and reference files (JSONL or CSV) and pairing their rows by id.

Every evaluation file is a table with one id column (``id``, ``study_id`` or ``image_id``, first
found wins) and the columns the metric needs: report text (``report``, ``text``, or
``findings`` + ``impression``), labels (``labels``: a JSON object of CheXpert name -> 1/0/-1),
or VQA (``question``, ``answer``, ``kind``). Bad files raise BadInputError naming the file, the
row and what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.tables import Row, read_rows

ID_COLUMNS = ("id", "study_id", "image_id")
TEXT_COLUMNS = ("report", "text")


def id_column(rows: Sequence[Row], path: str | Path) -> str:
    """The first of ``ID_COLUMNS`` present in the file's first row."""
    if not rows:
        raise BadInputError(path, "no rows", "the file is empty")
    for name in ID_COLUMNS:
        if name in rows[0]:
            return name
    raise BadInputError(
        path, f"no id column (one of {list(ID_COLUMNS)}); columns are {sorted(rows[0])}", "add an id column"
    )


def rows_by_id(rows: Sequence[Row], path: str | Path) -> dict[str, Row]:
    """{id: row}; duplicate or empty ids are an error naming the id."""
    column = id_column(rows, path)
    out: dict[str, Row] = {}
    for number, row in enumerate(rows, start=1):
        key = str(row.get(column) or "").strip()
        if not key:
            raise BadInputError(path, f"row {number} has an empty {column!r}")
        if key in out:
            raise BadInputError(path, f"{column} {key!r} appears twice", "give one row per id")
        out[key] = row
    return out


def rows_for_ids(path: str | Path, ids: Sequence[str], missing: str, fix: str) -> list[Row]:
    """The row of each id in ``path``, in the ids' order; ids without a row are an error that says
    "<count> <missing>" and ``fix``."""
    rows = rows_by_id(read_rows(path), path)
    absent = [i for i in ids if i not in rows]
    if absent:
        raise BadInputError(path, f"{len(absent)} {missing}, e.g. {absent[:3]}", fix)
    return [rows[i] for i in ids]


def pair_by_id(pred_path: str | Path, ref_path: str | Path) -> list[tuple[str, Row, Row]]:
    """(id, prediction row, reference row) for every reference id, in reference order.

    Every reference id needs a prediction (an evaluation that silently drops rows would flatter the
    model); predictions without a reference are an error too (they usually mean the wrong file).
    """
    predictions = rows_by_id(read_rows(pred_path), pred_path)
    references = rows_by_id(read_rows(ref_path), ref_path)
    missing = [k for k in references if k not in predictions]
    if missing:
        raise BadInputError(
            pred_path,
            f"{len(missing)} reference id(s) have no prediction, e.g. {missing[:3]}",
            f"predict every id of {ref_path}",
        )
    extra = [k for k in predictions if k not in references]
    if extra:
        raise BadInputError(
            pred_path,
            f"{len(extra)} id(s) are not in the references, e.g. {extra[:3]}",
            f"check that {ref_path} is the matching reference file",
        )
    return [(key, predictions[key], row) for key, row in references.items()]


def report_text(row: Row, path: str | Path) -> str:
    """A row's report: ``report``/``text``, else "FINDINGS: ... IMPRESSION: ..." from those columns."""
    for name in TEXT_COLUMNS:
        if name in row:
            return str(row[name] or "")
    if "findings" in row or "impression" in row:
        parts = []
        if row.get("findings"):
            parts.append(f"FINDINGS: {row['findings']}")
        if row.get("impression"):
            parts.append(f"IMPRESSION: {row['impression']}")
        return " ".join(parts)
    raise BadInputError(
        path,
        f"no report column (one of {list(TEXT_COLUMNS)} or findings/impression); columns are {sorted(row)}",
    )
