"""Rule-based CheXpert-14 labeler: each observation positive / negative / uncertain / not mentioned.

The design follows the CheXpert labeler (Irvin et al., AAAI 2019; github.com/stanfordmlgroup/
chexpert-labeler) and NegEx (Chapman et al., J Biomed Inform 2001), with regular expressions in
place of a dependency parser so that it labels thousands of reports per second on one core
(the phrases and triggers live in ``vocabulary.py``):

1. **Mention extraction.** Each observation has a vocabulary (its mention phrases, adapted from the
   CheXpert phrase lists, plus exclusions such as "pericardial effusion" for pleural effusion).
   Heart size and mediastinum are *anchored* observations: "heart size" alone says nothing, so an
   anchor needs a state word nearby ("heart size is normal" -> negative, "the heart is enlarged"
   -> positive, "borderline" -> uncertain, "upper limits of normal" -> still negative).
2. **Classification.** A report is split into sentences and clauses; a clause ends at a sentence
   end, ";" or ":", and at conjunctions that end a negation scope ("but", "however", "although",
   "except", "otherwise", "whereas", "which", "there is/are", "and the"). A mention is negated or
   made uncertain by the nearest trigger *before* it in its clause ("no", "without", "free of",
   "resolved", "removal of", "possible", "cannot exclude", "likely", "borderline", ...; "not" only
   within 3 words), else by a trigger shortly *after* it ("is not seen", "has resolved",
   "no longer seen", "has been removed", "is not excluded", "?"). Uncertainty phrases that contain
   a negation word ("cannot be excluded", "not ruled out") are matched first, and pseudo-negations
   ("no change in", "no increase in") are consumed so that they negate nothing. As in CheXpert,
   "no new X" is uncertain (X may persist).
3. **Aggregation** (CheXpert rules): any positive mention -> positive; else any uncertain ->
   uncertain; else negative. "CHF"/"heart failure" stated positive or uncertain also makes
   Cardiomegaly uncertain. **No Finding** is positive iff no observation other than Support Devices
   is positive or uncertain *and* no other abnormality (emphysema, granuloma, scoliosis,
   calcification, low lung volumes, ... — CheXpert's "no finding" phrase list) is positive or
   uncertain; it is never negative (absent instead), and an empty report has no labels.
4. **Laterality.** For each positive/uncertain mention of a lateral finding, the nearest side word
   within six words in its clause (left/right/bilateral/bibasilar/both/lingula); left and right
   mentions of one finding merge to bilateral; plural "effusions"/"pneumothoraces" with no side
   word read as bilateral.

All regular expressions are compiled once at import. See ``docs/labeler.md`` for the rules and the
measured agreement with the IU X-ray MeSH tags.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Protocol

from llmcxr.findings import CHEXPERT_14, Mention, Side
from llmcxr.reports import vocabulary as vocab
from llmcxr.reports.sections import parse_mimic_report

# --- compiled once at import ---------------------------------------------------------------


def _word_regex(body: str) -> re.Pattern[str]:
    """Match ``body`` only where a word starts. A look-behind, not ``\\b``: on CPython a leading
    ``(?<![a-z0-9])`` rejects mid-word positions before any alternative is tried, which made the
    large alternations here 3-5x faster than ``\\b`` or no anchor (measured on the IU reports)."""
    return re.compile(r"(?<![a-z0-9])(?:" + body + ")")


# One pass finds every trigger; the kind of each of the few hits is found by re-matching it against
# each kind in order (named groups would slow the pass down).
_TRIGGERS = _word_regex("|".join(f"(?:{rx})" for _, rx in vocab.TRIGGER_KINDS))
_TRIGGER_BY_KIND = [(kind, re.compile(rx)) for kind, rx in vocab.TRIGGER_KINDS]
_WORD = re.compile(r"\w+")

_COMPILED_MENTIONS = {name: _word_regex(rx) for name, rx in vocab.MENTIONS.items()}
_COMPILED_ANCHORS = {name: _word_regex(r"(?:" + rx + r")\b") for name, rx in vocab.ANCHORS.items()}
_COMPILED_OTHER = _word_regex(vocab.OTHER_FINDINGS)
_SECTION_HEADER = re.compile(r"\b(?:findings|impression|conclusion)\s*:", re.IGNORECASE)


# --- result -----------------------------------------------------------------------------------


@dataclass
class FindingMention:
    """One mention in the text: which observation, where (character span), and how it was read."""

    finding: str
    start: int
    end: int
    mention: Mention
    side: Side | None = None


@dataclass
class LabeledReport:
    """CheXpert-14 labels of one report. ``labels``: finding -> Mention (absent = not mentioned);
    ``sides``: finding -> Side where the report states laterality of a positive/uncertain finding."""

    text: str
    labels: dict[str, Mention] = field(default_factory=dict)
    sides: dict[str, Side] = field(default_factory=dict)
    mentions: list[FindingMention] = field(default_factory=list)

    def as_ints(self) -> dict[str, int]:
        """Labels as plain ints (``CXRRecord.labels`` form), in CheXpert order."""
        return {name: int(self.labels[name]) for name in CHEXPERT_14 if name in self.labels}


# --- classification ---------------------------------------------------------------------------


@dataclass
class _Trigger:
    kind: str
    start: int
    end: int
    text: str


def _clause_bounds(text: str) -> list[int]:
    """Sorted clause start offsets (0 first)."""
    starts = [0]
    for m in vocab.CLAUSE_END.finditer(text):
        first = text[m.start()]
        if first in ".!?;:\n":
            if first == "." and m.end() < len(text) and not text[m.end()].isspace():
                continue  # "4.5 cm", "x-ray.comparison"
            starts.append(m.end())
        else:  # "there is"/"and the" open a new clause; other conjunctions close the current one.
            starts.append(m.start() if first in "ta" and m.group() in vocab.OPENERS else m.end())
    return starts


def _trigger_kind(text: str, hit: re.Match[str]) -> str:
    for kind, regex in _TRIGGER_BY_KIND:
        m = regex.match(text, hit.start())
        if m and m.end() == hit.end():
            return kind
    return "pseudo"  # unreachable: every hit matches one kind


def _word_gap(text: str, start: int, end: int) -> int:
    return len(_WORD.findall(text, start, end)) if end > start else 0


def _classify(text: str, start: int, end: int, clause: tuple[int, int], triggers: list[_Trigger]) -> Mention:
    """NegEx-style: nearest trigger before the mention in its clause, else one shortly after it."""
    c_start, c_end = clause
    before = [t for t in triggers if c_start <= t.start and t.end <= start]
    after = [t for t in triggers if end <= t.start and t.end <= c_end]
    for t in reversed(before):
        if t.kind in ("neg_pre", "neg_any"):
            return Mention.NEGATIVE
        if t.kind == "not":
            if _word_gap(text, t.end, start) <= 3:
                return Mention.NEGATIVE
            continue
        if t.kind in ("unc_pre", "unc_any"):
            # "no opacity to suggest pneumonia": a suggestion under a negation is a negation.
            earlier_negation = any(n.kind == "neg_pre" and n.end <= t.start for n in before)
            if earlier_negation and vocab.WEAK_UNCERTAIN.match(t.text):
                return Mention.NEGATIVE
            return Mention.UNCERTAIN
    for t in after:
        if _word_gap(text, end, t.start) > 6:
            break
        if t.kind in ("neg_post", "neg_any"):
            return Mention.NEGATIVE
        if t.kind in ("unc_post", "unc_any"):
            return Mention.UNCERTAIN
    return Mention.POSITIVE


def _side_near(text: str, start: int, end: int, clause: tuple[int, int]) -> Side | None:
    """The nearest side word within six words of the mention, in its clause (ties: the one before)."""
    best: tuple[int, int, Side] | None = None
    for m in vocab.SIDE.finditer(text, clause[0], clause[1]):
        gap = _word_gap(text, m.end(), start) if m.end() <= start else _word_gap(text, end, m.start())
        if m.start() < end and m.end() > start:
            gap = 0
        if gap > 6:
            continue
        side = vocab.SIDE_OF.get(m.group()[0], Side.BILATERAL)
        key = (gap, 0 if m.end() <= start else 1, side)
        if best is None or key[:2] < best[:2]:
            best = key
    return best[2] if best else None


def _merge_sides(sides: list[Side]) -> Side | None:
    if not sides:
        return None
    if Side.BILATERAL in sides or (Side.LEFT in sides and Side.RIGHT in sides):
        return Side.BILATERAL
    return sides[0]


def _aggregate(values: list[Mention]) -> Mention:
    if Mention.POSITIVE in values:
        return Mention.POSITIVE
    if Mention.UNCERTAIN in values:
        return Mention.UNCERTAIN
    return Mention.NEGATIVE


def _anchor_mentions(text: str, name: str, clauses: list[int]) -> list[tuple[int, int, Mention | None]]:
    """Heart size / mediastinum statements: (start, end, fixed reading or None = read by context)."""
    found = []
    for anchor in _COMPILED_ANCHORS[name].finditer(text):
        c_end = _clause_end(clauses, anchor.start(), len(text))
        c_start = clauses[bisect.bisect_right(clauses, anchor.start()) - 1]
        # a state word before the anchor ("normal heart size", "enlarged heart") within 3 words ...
        state = None
        for m in vocab.STATE.finditer(text, max(c_start, anchor.start() - 30), anchor.start()):
            if _word_gap(text, m.end(), anchor.start()) <= 2 and "," not in text[m.end() : anchor.start()]:
                state = m
        # ... else the first state word after it within 8 words ("heart size is normal"), across a
        # comma only in a list of subjects ("the heart, hila and mediastinum are normal").
        if state is None:
            m = vocab.STATE.search(text, anchor.end(), c_end)
            gap = text[anchor.end() : m.start()] if m else ""
            if m and _word_gap(text, anchor.end(), m.start()) <= 8 and ("," not in gap or " and " in gap):
                state = m
        if state is None:
            continue
        span = (min(anchor.start(), state.start()), max(anchor.end(), state.end()))
        if state.group("borderline"):
            found.append((*span, Mention.UNCERTAIN))
        elif state.group("normal"):
            found.append((*span, Mention.NEGATIVE))
        else:
            found.append((*span, None))
    return found


def _gate_open(text: str, keys: tuple[str, ...] | None) -> bool:
    """False when none of a finding's key stems occurs in the text (see ``vocabulary.GATES``)."""
    return keys is None or any(key in text for key in keys)


def _clause_end(clauses: list[int], pos: int, length: int) -> int:
    i = bisect.bisect_right(clauses, pos)
    return clauses[i] if i < len(clauses) else length


def _report_text(text: str) -> str:
    """Findings + impression where the text has such headers (a full MIMIC report), else all of it."""
    if _SECTION_HEADER.search(text):
        sections = parse_mimic_report(text)
        if sections.findings or sections.impression:
            return sections.report
    return text


def label_report(text: str, *, gated: bool = True) -> LabeledReport:
    """Label one report (free text, or a full report with FINDINGS/IMPRESSION headers).

    ``gated=False`` runs every mention regex (slower; same labels, see ``vocab.GATES``)."""
    body = _report_text(text)
    lower = body.lower()
    result = LabeledReport(text=body)
    if not lower.strip():
        return result
    clauses = _clause_bounds(lower)
    triggers = [
        _Trigger(_trigger_kind(lower, m), m.start(), m.end(), m.group()) for m in _TRIGGERS.finditer(lower)
    ]
    triggers = [t for t in triggers if t.kind != "pseudo"]

    def clause_of(pos: int) -> tuple[int, int]:
        i = bisect.bisect_right(clauses, pos)
        return clauses[i - 1], clauses[i] if i < len(clauses) else len(lower)

    readings: dict[str, list[Mention]] = {}
    sides: dict[str, list[Side]] = {}

    def record(name: str, start: int, end: int, fixed: Mention | None) -> None:
        clause = clause_of(start)
        value = fixed if fixed is not None else _classify(lower, start, end, clause, triggers)
        if fixed is Mention.UNCERTAIN and _classify(lower, start, end, clause, triggers) is Mention.NEGATIVE:
            value = Mention.NEGATIVE
        side = None
        if name in vocab.LATERAL and value is not Mention.NEGATIVE:
            side = _side_near(lower, start, end, clause)
            if side is None and vocab.PLURAL_PAIRED.fullmatch(lower, start, end):
                side = Side.BILATERAL
            if side is not None:
                sides.setdefault(name, []).append(side)
        readings.setdefault(name, []).append(value)
        result.mentions.append(FindingMention(name, start, end, value, side))

    for name, regex in _COMPILED_MENTIONS.items():
        if not gated or _gate_open(lower, vocab.GATES.get(name)):
            for m in regex.finditer(lower):
                record(name, m.start(), m.end(), None)
    for name in vocab.ANCHORS:
        if gated and not _gate_open(lower, vocab.ANCHOR_GATES[name]):
            continue
        for start, end, fixed in _anchor_mentions(lower, name, clauses):
            record(name, start, end, fixed)

    labels = {name: _aggregate(values) for name, values in readings.items()}
    # CheXpert: a positive/uncertain "CHF" or "heart failure" makes Cardiomegaly at least uncertain.
    if any(
        f.finding == "Edema"
        and f.mention is not Mention.NEGATIVE
        and re.search(r"chf|heart failure", lower[f.start : f.end])
        for f in result.mentions
    ):
        labels["Cardiomegaly"] = _aggregate([labels.get("Cardiomegaly", Mention.NEGATIVE), Mention.UNCERTAIN])

    abnormal = any(v is not Mention.NEGATIVE for k, v in labels.items() if k != "Support Devices")
    if not abnormal:
        for m in _COMPILED_OTHER.finditer(lower):
            if _classify(lower, m.start(), m.end(), clause_of(m.start()), triggers) is not Mention.NEGATIVE:
                abnormal = True
                break
    if not abnormal:
        labels["No Finding"] = Mention.POSITIVE

    result.labels = {name: labels[name] for name in CHEXPERT_14 if name in labels}
    for name, found in sides.items():
        if result.labels.get(name, Mention.NEGATIVE) is not Mention.NEGATIVE:
            merged = _merge_sides(found)
            if merged is not None:
                result.sides[name] = merged
    return result


# --- labeler protocol -------------------------------------------------------


class Labeler(Protocol):
    """Anything that turns report texts into CheXpert-14 labels."""

    def label(self, reports: list[str]) -> list[LabeledReport]: ...


class RuleLabeler:
    """The rule-based labeler above, behind the ``Labeler`` protocol."""

    def label(self, reports: list[str]) -> list[LabeledReport]:
        return [label_report(r) for r in reports]
