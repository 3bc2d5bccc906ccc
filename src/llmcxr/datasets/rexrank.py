"""ReXrank's test-set JSON in and its prediction JSON out (github rajpurkarlab/ReXrank, ``data/`` and
``example_files/``), so a model scored here can be submitted to the board.

The test file maps a study id to its images and reference sections::

    {"50051329": {"image_path": ["/p10/p10046166/s50051329/....jpg", ...],
                  "key_image_path": "/p10/.../abea5eb9-....jpg",   # the frontal image
                  "section_findings": "...", "section_impression": "...", "context": "...", ...}}

A submission is the same JSON with ``model_prediction`` added to every study (the board's inference
scripts, e.g. ``merversa_inference.py``, write exactly that). The findings board scores
``model_prediction`` against ``section_findings``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.records import CXRRecord

PREDICTION_KEY = "model_prediction"
REFERENCE_KEY = "section_findings"


def read_rexrank_json(path: str | Path) -> dict[str, dict]:
    """{study id: entry} of a ReXrank test or prediction file, checked for the keys the board reads."""
    path = Path(path)
    try:
        studies = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BadInputError(
            path, f"not a readable JSON file ({error})", "give ReXrank's test JSON"
        ) from error
    if not isinstance(studies, dict) or not all(isinstance(v, dict) for v in studies.values()):
        raise BadInputError(
            path, "not a ReXrank file: expected {study id: {...}}", "give ReXrank's test JSON"
        )
    lacking = [s for s, entry in studies.items() if "image_path" not in entry]
    if lacking:
        raise BadInputError(path, f"{len(lacking)} studies lack image_path, e.g. {lacking[:3]}", "")
    return studies


def rexrank_records(path: str | Path, image_root: str | Path) -> list[CXRRecord]:
    """One record per study: its key (frontal) image under ``image_root``, its reference findings and
    impression (split "test"; the findings board scores findings only); the study's other images are kept in ``extra["image_paths"]``."""
    root = Path(image_root)
    records = []
    for study, entry in read_rexrank_json(path).items():
        images = [root / str(p).lstrip("/") for p in entry["image_path"]]
        key = entry.get("key_image_path") or entry["image_path"][0]
        records.append(
            CXRRecord(
                image_id=study,
                image_path=str(root / str(key).lstrip("/")),
                findings=str(entry.get(REFERENCE_KEY) or ""),
                impression=str(entry.get("section_impression") or ""),
                study_id=study,
                patient_id=str(entry["subject_id"]) if "subject_id" in entry else None,
                split="test",
                source="rexrank",
                extra={"image_paths": [str(p) for p in images], "context": entry.get("context")},
            )
        )
    return records


def write_rexrank_predictions(test_path: str | Path, predictions: Mapping[str, str], out: str | Path) -> Path:
    """The test JSON with ``model_prediction`` set for every study: the file the board evaluates.
    Every study needs a prediction (the board scores the intersection; a gap would go unnoticed)."""
    studies = read_rexrank_json(test_path)
    missing = [s for s in studies if s not in predictions]
    if missing:
        raise BadInputError(
            test_path, f"{len(missing)} studies have no prediction, e.g. {missing[:3]}", "predict every study"
        )
    submission = {
        study: {**entry, PREDICTION_KEY: str(predictions[study])} for study, entry in studies.items()
    }
    atomic.write_json(Path(out), submission)
    return Path(out)


def rexrank_pairs(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(study ids, predictions, reference findings) of a ReXrank prediction file."""
    studies = read_rexrank_json(path)
    lacking = [s for s, entry in studies.items() if PREDICTION_KEY not in entry]
    if lacking:
        raise BadInputError(
            path, f"{len(lacking)} studies have no {PREDICTION_KEY}, e.g. {lacking[:3]}", "write them all"
        )
    ids = list(studies)
    return (
        ids,
        [str(studies[s][PREDICTION_KEY]) for s in ids],
        [str(studies[s].get(REFERENCE_KEY) or "") for s in ids],
    )
