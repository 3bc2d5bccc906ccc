"""`llmcxr convert ...`: other projects' checkpoints -> llmcxr model folders."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("official")
def official(
    lm: Path = typer.Option(..., "--lm", help="The unpacked LLM-CXR language model folder (dolly-v2-3b)."),
    vq: Path = typer.Option(..., "--vq", help="The LLM-CXR VQ-GAN checkpoint (taming .ckpt)."),
    vq_config: Path | None = typer.Option(
        None, "--vq-config", help="Its taming YAML (default: the one .yaml beside the checkpoint)."
    ),
    out: Path = typer.Option(..., "--out", help="llmcxr model folder to write."),
) -> None:
    """The published LLM-CXR checkpoint -> one llmcxr model folder (safetensors, the official prompt layout)."""
    from rich import print as rprint

    from llmcxr.training.official import convert_official

    rprint(convert_official(lm, vq, out, vq_config))
