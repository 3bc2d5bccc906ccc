"""The generation settings a model folder recommends: the one place every front end reads its defaults.

``LLMCXR`` (and through it ``llmcxr report | image | ask | chat``, ``llmcxr serve`` and
``llmcxr eval run``) uses these wherever the caller gives no value, so a model trained with
unconditional dropout can ship the guidance its evaluation chose and a converted official model,
never trained with dropout, ships guidance 1. A folder without the file gets the plain defaults:
no guidance, LLM-CXR's sampling (dolly's instruct pipeline: top-p 0.92, top-k off, temperature 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmcxr.config import load_config, save_config

RECOMMENDED_FILE = "llmcxr_generation.json"


@dataclass
class GenerationDefaults:
    """Recommended generation settings of one model folder (``llmcxr_generation.json``)."""

    report_guidance_scale: float = 1.0
    """CXR -> report classifier-free guidance (1 = none; > 1 needs ``unconditional_report_fraction``)."""
    image_guidance_scale: float = 1.0
    """Report -> CXR classifier-free guidance (1 = none; > 1 needs ``unconditional_fraction``)."""
    do_sample: bool = True
    """Sample (top-p) rather than take the most likely token."""
    temperature: float = 1.0
    top_p: float = 0.92
    top_k: int = 0
    """0 = off."""
    report_instruction: str | None = None
    """Instruction of CXR -> report; None = the first phrasing of the model's prompt layout."""
    image_instruction: str | None = None
    """Instruction of report -> CXR; None = the first phrasing of the model's prompt layout."""
    chosen_by: str = ""
    """Where these values come from (an evaluation, the original code), for the reader."""

    def save(self, folder: str | Path) -> None:
        save_config(self, Path(folder) / RECOMMENDED_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> GenerationDefaults:
        """The folder's recommendation, or the plain defaults where it has none."""
        path = Path(folder) / RECOMMENDED_FILE
        return load_config(cls, path) if path.is_file() else cls()
