"""`python -m llmcxr.cli ...` is the `llmcxr` command (the benchmarks call it this way, with their interpreter)."""

from llmcxr.cli import main

main()
