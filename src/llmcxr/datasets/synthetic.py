"""Read a synthetic world written by ``llmcxr.synth.build_world`` (``llmcxr data synth``) as CXR records."""

from __future__ import annotations

import json
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.records import QA, CXRRecord

WORLD_KIND = "llmcxr-synthetic-world"  # the "kind" in world.json (llmcxr.synth.world writes it)


def _record(row: dict, folder: Path, where: str) -> CXRRecord:
    try:
        qa = [QA(**pair) for pair in row.pop("qa", [])]
        record = CXRRecord(**row, qa=qa)
    except TypeError as err:
        raise BadInputError(
            where, f"not a CXR record ({err})", "rebuild the world with `llmcxr data synth`"
        ) from err
    if record.image_path is not None:
        record.image_path = str((folder / record.image_path).resolve())
    return record


def read_synthetic_world(folder: str | Path) -> list[CXRRecord]:
    """All records of a synthetic world, in manifest order, with absolute image paths."""
    folder = Path(folder)
    world = folder / "world.json"
    if not world.is_file():
        raise BadInputError(
            folder, "not a synthetic world (no world.json)", "build one with `llmcxr data synth --out DIR`"
        )
    try:
        summary = json.loads(world.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadInputError(
            world, f"not valid JSON ({err})", "rebuild the world with `llmcxr data synth`"
        ) from err
    if summary.get("kind") != WORLD_KIND:
        raise BadInputError(
            world, f"kind is {summary.get('kind')!r}, not {WORLD_KIND!r}", "point at a synthetic world folder"
        )
    if not summary.get("complete"):
        raise BadInputError(
            folder, "the world is unfinished", "re-run the same `llmcxr data synth` command to finish it"
        )
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise BadInputError(folder, "no manifest.jsonl", "re-run the same `llmcxr data synth` command")
    records = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadInputError(where, f"not valid JSON ({err})", "rebuild the world") from err
        records.append(_record(row, folder, where))
    return records
