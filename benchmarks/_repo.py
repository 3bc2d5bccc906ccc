"""Where the repository is, for the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown(path: Path) -> str:
    """A path as the command line would give it: relative to the repository where it lies inside."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def llmcxr(*args: str) -> None:
    """Run ``llmcxr ARGS`` with this interpreter in the repository, echoing the command; fail loudly."""
    print("$ llmcxr " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "llmcxr.cli", *args], check=True, cwd=REPO)
