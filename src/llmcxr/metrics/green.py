"""GREEN (Ostmeier et al., EMNLP Findings 2024): an LLM counts a candidate report's errors against the
reference, and GREEN = matched findings / (matched findings + clinically significant errors).

The judge is a local causal LM folder the user gives (the release: StanfordAIMI/GREEN-RadLlama2-7b),
loaded with ``trust_remote_code`` off, never downloaded; it writes one assessment per report pair
from ``green_prompt``, greedily. ``green_from_assessment`` reads the counts out of an assessment the
way the reference code does (github Stanford-AIMI/GREEN, ``green_score/green.py``; radeval's copy):

- the "[Clinically Significant Errors]:" block has lines "(a) <type>: <count>. ..." to "(f)"; their
  counts add up (a block starting "No" counts 0);
- the "[Matched Findings]:" block starts "<count>. ...";
- no matched finding scores 0, whatever the errors.

A 7B judge on a CPU takes minutes per report: run it on a GPU, or leave GREEN out (not run).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmcxr.metrics.report_models import MetricNotRun, weights_sha256

ERROR_KINDS = (
    "(a) False report of a finding in the candidate",
    "(b) Missing a finding present in the reference",
    "(c) Misidentification of a finding's anatomic location/position",
    "(d) Misassessment of the severity of a finding",
    "(e) Mentioning a comparison that isn't in the reference",
    "(f) Omitting a comparison detailing a change from a prior study",
)
MAX_WORDS = 300  # the reference code keeps each report's first 300 words


def green_prompt(reference: str, candidate: str) -> str:
    """The judge's instruction for one pair, worded as the reference code's ``make_prompt``."""
    reference = " ".join(reference.split()[:MAX_WORDS])
    candidate = " ".join(candidate.split()[:MAX_WORDS])
    kinds = "\n".join(f"{kind[1]}) {kind[4:]}." for kind in ERROR_KINDS)
    block = "(a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n....\n(f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>"
    return (
        "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference "
        "radiology report composed by expert radiologists.\n\n"
        "Process Overview: You will be presented with:\n\n1. The criteria for making a judgment.\n"
        "2. The reference radiology report.\n3. The candidate radiology report.\n"
        "4. The desired format for your assessment.\n\n1. Criteria for Judgment:\n\n"
        "For each candidate report, determine:\n\nThe count of clinically significant errors.\n"
        "The count of clinically insignificant errors.\n\nErrors can fall into one of these categories:\n\n"
        f"{kinds}\nNote: Concentrate on the clinical findings rather than the report's writing style. "
        "Evaluate only the findings that appear in both reports.\n\n"
        f"2. Reference Report:\n{reference}\n\n3. Candidate Report:\n{candidate}\n\n"
        "4. Reporting Your Assessment:\n\nFollow this specific format for your output, even if no errors "
        "are found:\n```\n[Explanation]:\n<Explanation>\n\n[Clinically Significant Errors]:\n"
        f"{block}\n\n[Clinically Insignificant Errors]:\n{block}\n\n[Matched Findings]:\n"
        "<The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n```\n"
    )


def _block(assessment: str, heading: str) -> str | None:
    """The text under "[heading]:" up to the next blank line, or None where the heading is absent."""
    found = re.search(rf"\[{re.escape(heading)}\]:\s*(.*?)(?:\n\s*\n|\Z)", assessment, re.DOTALL)
    return found.group(1) if found else None


def error_counts(assessment: str) -> list[int]:
    """The six clinically significant error counts (a)..(f) of an assessment (0 where not given)."""
    body = _block(assessment, "Clinically Significant Errors")
    counts = [0] * len(ERROR_KINDS)
    if not body or body.startswith("No"):
        return counts
    for line in re.findall(r"^\s*\([a-f1-6]\) .*$", body, re.MULTILINE):
        marker = line.strip()[1]
        index = "abcdef".index(marker) if marker in "abcdef" else int(marker) - 1
        number = re.search(r"(?<=: )\d+(?=\.)", line)
        if number:
            counts[index] = int(number.group(0))
    return counts


def matched_findings(assessment: str) -> int:
    body = _block(assessment, "Matched Findings")
    if not body or body.startswith("No"):
        return 0
    number = re.match(r"\s*(\d+)(?=\.)", body)
    return int(number.group(1)) if number else 0


def green_from_assessment(assessment: str) -> float:
    """GREEN of one pair from the judge's assessment text."""
    matched = matched_findings(assessment)
    return 0.0 if matched == 0 else matched / (matched + sum(error_counts(assessment)))


def green_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    folder: str | Path | None,
    max_new_tokens: int = 512,
    device: str = "cpu",
) -> dict[str, object]:
    """(N,) GREEN per report: the local judge writes an assessment of each pair, which is then scored."""
    if folder is None:
        raise MetricNotRun("no weights: give a local GREEN judge folder (StanfordAIMI/GREEN-RadLlama2-7b)")
    folder = Path(folder)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).to(device).eval()
    assessments = []
    with torch.inference_mode():
        for reference, candidate in zip(references, predictions, strict=True):
            prompt = green_prompt(reference, candidate)
            if tokenizer.chat_template:
                prompt = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
            inputs = tokenizer(prompt, return_tensors="pt").to(device)
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
            assessments.append(
                tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            )
    return {
        "per_report": np.array([green_from_assessment(a) for a in assessments], np.float64),
        "assessments": assessments,
        "weights_sha256": weights_sha256(folder),
    }
