"""The one record type for a sample: an image, its report, its labels. Every data source yields these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class QA:
    """One visual question-answer pair about an image."""

    question: str
    answer: str
    kind: str  # question type, e.g. "presence", "laterality", "abnormalities", "heart_size", "devices"
    finding: str | None = None


@dataclass
class CXRRecord:
    """One frontal chest X-ray with its report.

    ``image_id`` keys the image in a token store; ``image_path`` is where the pixels are (may be None
    once the image is tokenized). ``labels`` maps CheXpert names (``llmcxr.findings``) to the
    integer values of ``Mention``; a missing key means "not mentioned".
    """

    image_id: str
    image_path: str | None = None
    study_id: str | None = None
    patient_id: str | None = None
    view: str | None = None  # "PA", "AP", "LATERAL", ...
    study_date: str | None = None  # ISO date or sortable string; stage 2 keeps the earliest per patient
    findings: str = ""
    impression: str = ""
    labels: dict[str, int] = field(default_factory=dict)
    qa: list[QA] = field(default_factory=list)
    split: str | None = None  # "train" / "validate" / "test"
    source: str = ""  # "mimic-cxr", "iu-xray", "synthetic", "manifest"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> str:
        """Findings and impression as the paper's stage 1 uses them."""
        parts = []
        if self.findings:
            parts.append(f"FINDINGS: {self.findings}")
        if self.impression:
            parts.append(f"IMPRESSION: {self.impression}")
        return " ".join(parts)
