"""The one error type for bad input: it names the file, says what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path


class BadInputError(ValueError):
    """Input the user gave cannot be used.

    The message always reads ``<source>: <problem>. <hint>`` so that a CLI can print it as is,
    without a traceback from deep inside PIL, pydicom or torch.
    """

    def __init__(self, source: str | Path | None, problem: str, hint: str = "") -> None:
        self.source = str(source) if source is not None else None
        self.problem = problem
        self.hint = hint
        where = f"{self.source}: " if self.source else ""
        super().__init__(f"{where}{problem}" + (f". {hint}" if hint else ""))
