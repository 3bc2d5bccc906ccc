"""`python -m llmcxr.cli.train_entry --config ...`: the train command as a module, for launchers
(torchrun, accelerate launch, deepspeed) that start a module per process."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from llmcxr.cli.train import train
from llmcxr.errors import BadInputError

if __name__ == "__main__":
    try:
        typer.run(train)
    except BadInputError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
