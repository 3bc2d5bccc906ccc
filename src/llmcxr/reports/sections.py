"""Free-text radiology reports: split into sections (MIMIC-CXR style) and clean them.

A MIMIC-CXR report is plain text with upper-case headers::

    WET READ: ___ ___ 3:12 PM  No pneumothorax.
                                 FINAL REPORT
    EXAMINATION:  CHEST (PA AND LAT)
    INDICATION:  ___F with cough
    COMPARISON:  ___
    FINDINGS:  The lungs are clear. ...
    IMPRESSION:  1. No acute cardiopulmonary process.

LLM-CXR (Lee et al., 2024) trains stage 1 on findings + impression and stage 2 on the impression.
Headers vary ("FINDINGS AND IMPRESSION:", "CONCLUSION:", lower case, no findings at all), so the
parser maps each known header name to one canonical section. Text before any known header and
reports with neither findings nor impression fall back to the last paragraph, as the MIMIC-CXR
authors' ``create_section_files.py`` does (Johnson et al., MIMIC-CXR, 2019).

Anonymisation: MIMIC writes ``___``; IU X-ray (OpenI) writes ``XXXX``, which replaces dates and
names but also ordinary words ("pulmonary XXXX are normal", "chest x-XXXX"). ``clean_report_text``
maps both to one placeholder ``___`` (so a tokenizer sees one symbol across data sets), restores
the one unambiguous case ("x-XXXX" -> "x-ray"), and drops sentences that the anonymisation made
meaningless (mostly placeholders, or a call/notification to a redacted person). Finding words are
never removed, so the labels of a cleaned report equal those of the raw one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PLACEHOLDER = "___"

# Header names as written in MIMIC-CXR / IU reports -> canonical section. Lower case, single spaces.
_HEADER_ALIASES: dict[str, str] = {
    "findings": "findings",
    "finding": "findings",
    "report": "findings",
    "findings and impression": "findings_impression",
    "findings/impression": "findings_impression",
    "findings and impressions": "findings_impression",
    "findings/impressions": "findings_impression",
    "impression and findings": "findings_impression",
    "impression/findings": "findings_impression",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "opinion": "impression",
    "comparison": "comparison",
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison study": "comparison",
    "comparison studies": "comparison",
    "prior": "comparison",
    "priors": "comparison",
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "reason for study": "indication",
    "reason for the exam": "indication",
    "indication for exam": "indication",
    "indication for study": "indication",
    "history": "history",
    "clinical history": "history",
    "clinical information": "history",
    "technique": "technique",
    "procedure": "technique",
    "examination": "examination",
    "exam": "examination",
    "study": "examination",
    "type of examination": "examination",
    "wet read": "wet_read",
    "addendum": "addendum",
    "addenda": "addendum",
    "notification": "notification",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
    "recommendation(s)": "recommendation",
}

# A header: a known name at the start of a line (or after ". "), then ":"; "ADDENDUM" and
# "FINAL REPORT" also stand alone on their line. Built once from the aliases, longest first so
# "findings and impression" wins over "findings".
_NAMES = sorted(_HEADER_ALIASES, key=len, reverse=True)
_HEADER = re.compile(
    r"(?:^|(?<=\n)|(?<=\.\s))[ \t]*(?P<name>" + "|".join(re.escape(n) for n in _NAMES) + r")[ \t]*"
    r"(?:version\s*#?\d+\s*)?:"
    r"|(?:^|(?<=\n))[ \t]*(?P<bare>addendum|final report)[ \t]*(?=\n|$)",
    re.IGNORECASE,
)
_WET_READ_STAMP = re.compile(r"^\s*(?:_{3}\s*)+(?:\d{1,2}:\d{2}\s*(?:[ap]m)?)?\s*", re.IGNORECASE)


@dataclass
class ReportSections:
    """The sections of one report; empty strings where the report has no such section."""

    findings: str = ""
    impression: str = ""
    comparison: str = ""
    indication: str = ""
    history: str = ""
    technique: str = ""
    examination: str = ""
    wet_read: str = ""
    addendum: str = ""
    other: dict[str, str] = field(default_factory=dict)  # notification, recommendation, ...
    combined: bool = False  # "FINDINGS AND IMPRESSION:" — the text is in ``findings`` only
    fallback: bool = False  # no findings/impression header: ``impression`` is the last paragraph

    @property
    def report(self) -> str:
        """Findings and impression as the paper's stage 1 uses them (either may be empty)."""
        return " ".join(p for p in (self.findings, self.impression) if p)

    @property
    def impression_or_findings(self) -> str:
        """The paper's stage-2 text: the impression, else (combined section) the findings."""
        return self.impression or self.findings


def _normalise_space(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _last_paragraph(text: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return _normalise_space(paragraphs[-1]) if paragraphs else ""


# Sections that are one paragraph: a blank line after them ends them, so that header-less findings
# text that follows ("COMPARISON: ___\n\nThe lungs are clear.") is not read as comparison.
_ONE_PARAGRAPH = {"comparison", "indication", "history", "technique", "examination", "wet_read"}
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def parse_mimic_report(text: str) -> ReportSections:
    """Split a free-text report into canonical sections (see module docstring)."""
    sections = ReportSections()
    chunks: dict[str, list[str]] = {}
    matches = list(_HEADER.finditer(text))
    loose = [text[: matches[0].start()] if matches else text]  # text under no header
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        raw = text[match.end() : end]
        if match.group("bare"):
            if match.group("bare").lower() == "addendum" and raw.strip():
                chunks.setdefault("addendum", []).append(_normalise_space(raw))
            else:
                loose.append(raw)
            continue
        name = _HEADER_ALIASES[_normalise_space(match.group("name")).lower()]
        if name in _ONE_PARAGRAPH:
            raw, *rest = _PARAGRAPH_BREAK.split(raw.strip(), maxsplit=1)
            loose.extend(rest)
        body = _normalise_space(raw)
        if name == "wet_read":
            body = _WET_READ_STAMP.sub("", body)
        if body:
            chunks.setdefault(name, []).append(body)

    if "findings_impression" in chunks:
        chunks.setdefault("findings", []).extend(chunks.pop("findings_impression"))
        sections.combined = "impression" not in chunks
    for name, bodies in chunks.items():
        joined = " ".join(bodies)
        if hasattr(sections, name) and name != "other":
            setattr(sections, name, joined)
        else:
            sections.other[name] = joined

    if not sections.findings and not sections.impression:
        # No findings/impression header: the last paragraph of the text under no header, as
        # MIMIC-CXR's own section extraction falls back to the last paragraph.
        sections.impression = _last_paragraph("\n\n".join(p for p in loose if p.strip()))
        sections.fallback = bool(sections.impression)
    return sections


# --- cleaning ---------------------------------------------------------------------------------

_XRAY = re.compile(r"\bx-?\s?XXXX\b", re.IGNORECASE)
_ANON_RUN = re.compile(r"(?:\b[Xx]{4}\b|_{2,})(?:[\s,/-]*(?:\b[Xx]{4}\b|_{2,}))*")
# A sentence ends at ". " unless the dot closes a title or "vs." (fixed-width look-behinds).
_SENTENCE_END = re.compile(
    r"(?<=[.!?])(?<!dr\.)(?<!mr\.)(?<!ms\.)(?<!mrs\.)(?<!vs\.)(?<!\bst\.)\s+", re.IGNORECASE
)
_LIST_NUMBER = re.compile(r"(?:^|(?<=[.:!?]\s)|(?<=\n))\s*\(?\d{1,2}[.)](?=\s+[A-Za-z])")
# Sentences about calling or paging a (redacted) person: no image content.
_COMMUNICATION = re.compile(
    r"\b(?:notified|paged|telephoned|discussed with|communicated|called to|by phone|by telephone|"
    r"were made|was made|d/w)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z]+")


def _sentence_is_meaningless(sentence: str) -> bool:
    placeholders = sentence.count(PLACEHOLDER)
    if not placeholders:
        return False
    words = [w for w in _WORD.findall(sentence.replace(PLACEHOLDER, " "))]
    if len(words) < 2 or placeholders >= len(words):
        return True
    return bool(_COMMUNICATION.search(sentence))


def clean_report_text(text: str, anonymised: str = "placeholder") -> str:
    """Normalise a report: whitespace, list numbers, anonymisation tokens; keep the clinical meaning.

    ``anonymised``: ``"placeholder"`` maps every run of ``XXXX`` / ``___`` to one ``___`` and drops
    sentences the redaction made meaningless; ``"keep"`` leaves the tokens as written.
    """
    if anonymised not in ("placeholder", "keep"):
        raise ValueError(f"anonymised must be 'placeholder' or 'keep', not {anonymised!r}")
    text = _LIST_NUMBER.sub(" ", text)
    text = _normalise_space(text)
    if anonymised == "keep" or not text:
        return text
    text = _XRAY.sub("x-ray", text)
    text = _ANON_RUN.sub(PLACEHOLDER, text)
    kept = [s for s in _SENTENCE_END.split(text) if s and not _sentence_is_meaningless(s)]
    text = " ".join(kept)
    text = re.sub(r"\s+([,.;:])", r"\1", text)  # "normal ." -> "normal."
    return re.sub(r"([.!?])\1+", r"\1", text).strip()
