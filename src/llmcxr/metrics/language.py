"""Language scores of generated reports: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap).

The scorers are the COCO caption code (Chen et al. 2015, ``pycocoevalcap``) that report-generation
papers since R2Gen call, with one deliberate change: COCO runs Stanford's PTBTokenizer, a Java
program, before scoring; we tokenize in Python instead (lowercase, split punctuation off words,
drop the punctuation), so BLEU/ROUGE-L/CIDEr need no Java. Numbers can differ from PTB-tokenized
ones in the third decimal on text with unusual punctuation.

METEOR is a Java jar inside pycocoevalcap: where ``java`` is missing (or the jar fails to start),
METEOR is reported as missing with the reason, never raised.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

# The PTB tokenizer in pycocoevalcap removes these punctuation tokens after splitting; we do the same.
_WORD = re.compile(r"[^\W_]+(?:[.'][^\W_]+)*")


def tokenize_report(text: str) -> str:
    """Lowercase, split words from punctuation, drop the punctuation; tokens joined by single spaces.

    "Mild cardiomegaly. No effusion, 2.5 cm." -> "mild cardiomegaly no effusion 2.5 cm"
    (decimal numbers and apostrophes inside words stay one token).
    """
    return " ".join(_WORD.findall(text.lower()))


def _as_reference_lists(references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """Each prediction may have one reference (str) or several (list of str)."""
    return [[r] if isinstance(r, str) else list(r) for r in references]


def _meteor_unavailable() -> str | None:
    """Why METEOR cannot run here, or None where it can."""
    if shutil.which("java") is None:
        return "java not found on PATH (METEOR 1.5 is a Java program)"
    try:
        import pycocoevalcap.meteor.meteor as meteor_module
    except ImportError as err:
        return f"pycocoevalcap not importable: {err}"
    folder = Path(meteor_module.__file__).parent
    if not (folder / "meteor-1.5.jar").is_file():
        return f"meteor-1.5.jar missing from {folder}"
    return None


def meteor_score(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float | None, str | None]:
    """(METEOR, None) or (None, reason it is missing). Inputs as pycocoevalcap takes them, tokenized."""
    reason = _meteor_unavailable()
    if reason:
        return None, reason
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
        score, _ = scorer.compute_score(gts, res)
    except (OSError, ValueError, BrokenPipeError) as err:  # the jar died: its stdout ends early
        return None, f"METEOR jar failed: {err}"
    return float(score), None


def language_scores(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    meteor: bool = True,
) -> dict[str, object]:
    """Corpus BLEU-1..4, ROUGE-L, CIDEr (and METEOR where Java runs) of predictions vs references.

    BLEU is pycocoevalcap's corpus BLEU (closest reference length); ROUGE-L and CIDEr (CIDEr-D with
    sigma 6, idf from the references given) are the means over reports. Returns the scores, a
    ``missing`` map {metric: reason} and the tokenizer used.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as err:
        raise ImportError(
            f"language scores need pycocoevalcap ({err}): pip install 'llmcxr[metrics]'"
        ) from err

    refs = _as_reference_lists(references)
    if len(refs) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions vs {len(refs)} references")
    if not predictions:
        raise ValueError("no reports to score")
    gts = {i: [tokenize_report(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [tokenize_report(p)] for i, p in enumerate(predictions)}

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    scores: dict[str, object] = {f"bleu_{n}": float(bleu[n - 1]) for n in range(1, 5)}
    scores["rouge_l"] = float(rouge)
    scores["cider"] = float(cider)
    missing: dict[str, str] = {}
    if meteor:
        value, reason = meteor_score(gts, res)
        scores["meteor"] = value
        if reason:
            missing["meteor"] = reason
    else:
        scores["meteor"] = None
        missing["meteor"] = "not requested"
    scores["missing"] = missing
    scores["tokenizer"] = "python: lowercase, words split from punctuation, punctuation dropped (not PTB)"
    scores["n_reports"] = len(predictions)
    return scores
