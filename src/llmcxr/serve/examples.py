"""Examples that work out of the box: CXRs drawn at start-up by the synthetic renderer, reports, questions.

Nothing is shipped or downloaded: the images are rendered with fixed seeds into a folder the server
owns (and deletes at shutdown), the only folder the web app is allowed to serve besides its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from llmcxr.findings import Side
from llmcxr.synth import FindingSpec, Opacity, compose_report, render_cxr

SIZE = 256  # px: big enough to see, small enough to render in a fraction of a second
SPECS: dict[str, FindingSpec] = {
    "normal": FindingSpec(),
    "cardiomegaly-effusion": FindingSpec(cardiomegaly=True, effusion=Side.LEFT, severity=0.7),
    "pneumothorax": FindingSpec(pneumothorax=Side.RIGHT, severity=0.7),
    "consolidation": FindingSpec(opacities=(Opacity(Side.RIGHT, "lower"),), severity=0.7),
}
QUESTIONS = [
    "Is there cardiomegaly?",
    "Is there evidence of a pleural effusion?",
    "Is this study within normal limits?",
    "What abnormalities are seen in this chest X-ray?",
]
INSTRUCTIONS = [
    "What is a chest X-ray used for?",
    "Name one sign of heart failure on a chest X-ray.",
    "Explain what a pleural effusion is in one sentence.",
]


@dataclass(frozen=True)
class Example:
    name: str
    image: Path  # a rendered PNG
    report: str  # a template report of what the image shows, FINDINGS/IMPRESSION as in training


def render_examples(folder: Path, seed: int = 0) -> list[Example]:
    """Render the example CXRs into ``folder`` (same seed, same bytes) with matching reports."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for k, (name, spec) in enumerate(SPECS.items()):
        path = folder / f"{name}.png"
        Image.fromarray(render_cxr(spec, SIZE, seed + k)).save(path)
        findings, impression = compose_report(spec, random.Random(seed + k))
        examples.append(Example(name, path, f"FINDINGS: {findings} IMPRESSION: {impression}"))
    return examples
