"""The IU X-ray reports a synthetic world draws: where they are, each cleaned and labelled, and
their R2Gen split (Chen et al., EMNLP 2020: 2,069 / 296 / 590 train / val / test studies).

R2Gen's study ids (``CXR2384_IM-0942``) name the report by their first part, the uid of
``ecgen-radiology/<n>.xml`` (``read_r2gen_split``). Every listed study has two or more images, but
R2Gen did not list all such studies: 972 of the 3,927 reports with text (418 of them with two images)
are in none of its lists, and a world split by R2Gen leaves them out.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcxr.datasets.iu_xray import read_iu_reports
from llmcxr.errors import BadInputError
from llmcxr.findings import Mention, Side
from llmcxr.reports import clean_report_text, label_report

IU_ARCHIVE = "NLMCXR_reports.tgz"
R2GEN_SPLIT = "r2gen_split.json"  # looked for beside the IU reports


# --- where real reports come from ---------------------------------------------------------------


def find_iu_reports(path: str | Path | None = None) -> Path | None:
    """The IU X-ray reports: ``path``, else the shared data folder, else torchxrayvision's data."""
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise BadInputError(
                path, "IU X-ray reports not found", f"pass {IU_ARCHIVE} or its ecgen-radiology folder"
            )
        return path
    roots = []
    if os.environ.get("LLMCXR_SHARED_DATA"):
        roots.append(Path(os.environ["LLMCXR_SHARED_DATA"]))
    roots += [
        Path(__file__).resolve().parents[3].parent / "shared" / "data",
        Path.cwd().parent / "shared" / "data",
    ]
    for root in roots:
        candidate = root / "iu-xray" / IU_ARCHIVE
        if candidate.is_file():
            return candidate
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is not None and spec.origin is not None:
        package = Path(spec.origin).parent
        for pattern in (IU_ARCHIVE, "ecgen-radiology"):
            found = sorted(package.rglob(pattern))
            if found:
                return found[0]
    return None


@dataclass
class SourceReport:
    """A report to draw: its text, labels and sides, and where it came from."""

    findings: str
    impression: str
    labels: dict[str, Mention]
    sides: dict[str, Side]
    mentions: list[Any]  # FindingMention from the labeler, for zones and kinds
    origin: str  # "iu-xray:CXR12" or "template"

    @property
    def uid(self) -> str:
        """The IU report id ("CXR12"), "" for a composed report."""
        return self.origin.removeprefix("iu-xray:") if self.origin.startswith("iu-xray:") else ""

    @property
    def text(self) -> str:
        return report_text(self.findings, self.impression)


def report_text(findings: str, impression: str) -> str:
    return " ".join(
        p
        for p in (
            f"FINDINGS: {findings}" if findings else "",
            f"IMPRESSION: {impression}" if impression else "",
        )
        if p
    )


def load_iu_reports(path: Path) -> list[SourceReport]:
    """Every IU report with text, cleaned and labelled."""
    out = []
    for report in read_iu_reports(path):
        findings, impression = clean_report_text(report.findings), clean_report_text(report.impression)
        if not findings and not impression:
            continue
        labeled = label_report(report_text(findings, impression))
        out.append(
            SourceReport(
                findings, impression, labeled.labels, labeled.sides, labeled.mentions, f"iu-xray:{report.uid}"
            )
        )
    if not out:
        raise BadInputError(path, "no IU reports with text", f"pass {IU_ARCHIVE}")
    return out


# --- the R2Gen split -------------------------------------------------------------------------------


def r2gen_split_file(split_by: str, iu_path: Path | None, given: str | Path | None) -> str | None:
    """The R2Gen split file a world splits by (None for a random split), checked before any work."""
    if split_by not in ("random", "r2gen"):
        raise BadInputError(None, f"unknown split {split_by!r}", "use --split-by random or r2gen")
    if split_by == "random":
        return None
    if iu_path is None:
        raise BadInputError(
            None, "--split-by r2gen splits the IU reports", "use it with --reports iu, or --split-by random"
        )
    path = Path(given) if given is not None else iu_path.parent / R2GEN_SPLIT
    if not path.is_file():
        raise BadInputError(
            path,
            "R2Gen split file not found",
            f"pass --r2gen-split PATH to {R2GEN_SPLIT} (train/val/test ids)",
        )
    return str(path)


def split_reports_by_r2gen(
    pool: list[SourceReport], split_of: dict[str, str]
) -> tuple[list[SourceReport], list[SourceReport], dict[str, Any]]:
    """(training reports, validation then test reports, counts for ``world.json``) of ``pool``.

    ``split_of`` maps a uid to "train" / "validate" / "test" (``read_r2gen_split``); reports it does
    not list are left out.
    """
    by_split: dict[str, list[SourceReport]] = {"train": [], "validate": [], "test": []}
    for report in pool:
        if report.uid in split_of:
            by_split[split_of[report.uid]].append(report)
    if not by_split["train"]:
        raise BadInputError(None, "no IU report is in the R2Gen training list", "check the split file")
    # Radiologists reuse boilerplate ("No acute cardiopulmonary abnormality."): a test report may
    # repeat a training report word for word, though written for another patient. Counted, kept.
    train_texts = {r.text for r in by_split["train"]}
    summary = {
        "reports_used": {split: len(reports) for split, reports in by_split.items()},
        "reports_outside_split": sum(1 for r in pool if r.uid not in split_of),
        "test_reports_worded_as_a_training_report": sum(1 for r in by_split["test"] if r.text in train_texts),
    }
    return by_split["train"], by_split["validate"] + by_split["test"], summary
