"""Every shell block of README.md and docs/*.md runs as written (issue 24: a quick start that no longer
worked went unnoticed).

A fenced block is a shell block when its language is ``bash``, ``sh`` or ``shell``; every fenced block
must state a language, so a new command cannot hide in an untagged block. An HTML comment on the line
before a block says how the test treats it:

    <!-- docs-test: skip: REASON -->   never run here (user data, a GPU, credentials); the reason is required
    <!-- docs-test: slow: REASON -->   over ~30 s: run only with LLMCXR_DOCS_SLOW=1
    <!-- docs-test: serve -->          starts a server: run in the background (`llmcxr serve` given a free
                                       port) until /v1/health answers; the document's later blocks then
                                       talk to it (7860 in them -> that port)

A document's blocks run in order, in one fresh folder that holds links to the repository's top-level
folders (``checkpoints/``, ``recipes/``, ...), ``../shared`` where the shared data exists, and a few
CXRs under the names the docs use (``cxr.png``, ``my_cxr.png``, ``a.png``, ``b.png``, ``cxr.jpg``,
``cxr.dcm``). ``pip install`` and venv-activation lines are not run (this environment is the installed
one); the rest runs with ``bash -e``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _dicom import write_dicom

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHELL = ("bash", "sh", "shell")
FENCE = re.compile(r"^\s*```(\S*)\s*$")  # indented too: a block inside a numbered step
MARKER = re.compile(r"<!--\s*docs-test:\s*(skip|slow|serve)\s*(?::\s*(.*?))?\s*-->")
BLOCK_TIMEOUT_S = 300  # a CLI start is ~5-15 s on a loaded 2-core CPU; a block makes a few
RUN_SLOW = os.environ.get("LLMCXR_DOCS_SLOW") == "1"
# Set-up lines the test environment has done already: installing, activating the venv.
NOT_RUN = ("pip install", ". .venv/bin/activate", "source .venv/bin/activate")


@dataclass
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    mode: str  # "run", "skip", "slow", "serve"
    reason: str

    def __str__(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def read_blocks(document: Path) -> list[Block]:
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(before)
        mode, reason = (marker.group(1), marker.group(2) or "") if marker else ("run", "")
        text = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end])
        blocks.append(Block(document, i + 1, opening.group(1), text, mode, reason))
        i = end + 1
    return blocks


def test_every_block_states_its_language_and_every_skip_a_reason() -> None:
    untagged = [str(b) for d in documents() for b in read_blocks(d) if not b.language]
    assert untagged == [], "tag each fenced block (bash, python, text, yaml, ...)"
    unexplained = [
        str(b) for d in documents() for b in read_blocks(d) if b.mode in ("skip", "slow") and not b.reason
    ]
    assert unexplained == []


def test_the_block_reader_sees_markers_and_languages(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(
        "x\n<!-- docs-test: skip: needs MIMIC -->\n\n```bash\nllmcxr a\n```\n```text\ntree\n```\n"
        "1. a step:\n\n   <!-- docs-test: slow: minutes -->\n   ```bash\n   llmcxr b \\\n     --c\n   ```\n"
    )
    blocks = read_blocks(doc)
    assert [(b.language, b.mode, b.reason, b.text) for b in blocks] == [
        ("bash", "skip", "needs MIMIC", "llmcxr a"),
        ("text", "run", "", "tree"),
        ("bash", "slow", "minutes", "llmcxr b \\\n  --c"),
    ]


def _fixture_cxrs(folder: Path) -> None:
    """The example files the docs name: a 128 px CXR-like texture in each format."""
    pixels = (np.random.default_rng(0).random((128, 128)) * 255).astype(np.uint8)
    for name in ("cxr.png", "my_cxr.png", "a.png", "b.png", "cxr.jpg"):
        Image.fromarray(pixels).save(folder / name)
    write_dicom(folder / "cxr.dcm", pixels.astype(np.float64) * 16, ViewPosition="PA")


def _workspace(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv") and not entry.name.startswith("."):
            (work / entry.name).symlink_to(entry)
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    _fixture_cxrs(work)
    return work


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's llmcxr
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "120"
    return env


def _script(block: Block, port: int | None) -> str:
    lines = [line for line in block.text.splitlines() if not line.lstrip().startswith(NOT_RUN)]
    text = "\n".join(lines)
    if block.mode == "serve":
        text = text.replace("llmcxr serve", f"llmcxr serve --port {port}")
    return text.replace("7860", str(port)) if port else text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(script: str, work: Path, env: dict[str, str], port: int) -> subprocess.Popen:
    log = open(work / "server.log", "w")  # noqa: SIM115 - kept open for the server's lifetime
    server = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + BLOCK_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server stopped: {(work / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    os.killpg(server.pid, signal.SIGTERM)
    raise AssertionError("the server did not answer /v1/health in time")


def _needs_shared(block: Block) -> bool:
    return "../shared/" in block.text and not SHARED.is_dir()


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_blocks_run(document: Path, tmp_path: Path) -> None:
    blocks = [b for b in read_blocks(document) if b.language in SHELL]
    runnable = [b for b in blocks if b.mode in ("run", "serve") or (b.mode == "slow" and RUN_SLOW)]
    if not runnable:
        reasons = "; ".join(f"{b}: {b.mode} ({b.reason})" for b in blocks) or "no shell blocks"
        pytest.skip(reasons)
    work, env = _workspace(tmp_path), _environment()
    port, server = None, None
    try:
        for block in runnable:
            if _needs_shared(block):
                continue  # the shared data is absent on this machine; the reader's data is their own
            if block.mode == "serve":
                port = _free_port()
                server = _start_server(_script(block, port), work, env, port)
                continue
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", _script(block, port)],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
            )
            assert done.returncode == 0, (
                f"{block} failed:\n{block.text}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)  # the server this test started, and only it
            server.wait(30)
