"""Reading tables the user gives (JSONL or CSV) with errors that name the file and the line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from llmcxr.errors import BadInputError

Row = dict[str, Any]


def read_jsonl(path: str | Path) -> list[Row]:
    """Every non-blank line of a JSONL file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "file not found", "check the path")
    rows: list[Row] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BadInputError(
                    path, f"line {number} is not JSON ({err.msg})", "write one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise BadInputError(
                    path, f"line {number} is not a JSON object", "write one JSON object per line"
                )
            rows.append(row)
    return rows


def read_csv(path: str | Path) -> list[Row]:
    """Every row of a CSV file with a header line as a dict."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "file not found", "check the path")
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(row) for row in csv.DictReader(f)]


def read_rows(path: str | Path) -> list[Row]:
    """All rows of a .jsonl or .csv file as dicts (chosen by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    if suffix == ".csv":
        return read_csv(path)
    if not path.is_file():
        raise BadInputError(path, "file not found", "check the path")
    raise BadInputError(path, f"unknown file type {suffix!r}", "give a .jsonl or .csv file")


def row_labels(row: Row, path: str | Path) -> dict[str, int] | None:
    """A row's ``labels`` (dict or JSON text) as {CheXpert name: int}, or None where the row has none."""
    value = row.get("labels")
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadInputError(path, f"labels {value[:40]!r} is not a JSON object") from None
    if not isinstance(value, dict):
        raise BadInputError(path, "labels must be an object of finding name -> 1/0/-1")
    return {str(k): int(v) for k, v in value.items() if v is not None and v != ""}
