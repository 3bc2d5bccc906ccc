from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmcxr import atomic
from llmcxr.config import from_dict, load_config, save_config
from llmcxr.errors import BadInputError


@dataclass
class Inner:
    size: int = 8
    scale: float = 1.0


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    levels: tuple[int, ...] = (1, 2)
    out: Path | None = None


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = Outer(name="y", inner=Inner(size=3, scale=2.5), levels=(4, 5), out=Path("a/b"))
    save_config(cfg, tmp_path / f"c{suffix}")
    assert load_config(Outer, tmp_path / f"c{suffix}") == cfg


def test_config_unknown_key_names_it() -> None:
    with pytest.raises(BadInputError, match="bogus"):
        from_dict(Outer, {"bogus": 1}, "recipe.yaml")


def test_config_bad_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(BadInputError, match="mapping"):
        load_config(Outer, tmp_path / "bad.yaml")


def test_atomic_write_keeps_old_file_on_crash(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_cli_help_runs() -> None:
    from typer.testing import CliRunner

    from llmcxr.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "vq" in result.output


def test_python_m_llmcxr_cli_is_the_command() -> None:
    """The benchmarks run the CLI as ``python -m llmcxr.cli`` with their own interpreter."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "llmcxr.cli", "eval", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "train-classifier" in done.stdout
