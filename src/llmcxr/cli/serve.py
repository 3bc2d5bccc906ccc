"""`llmcxr serve`: the web app and REST API over a trained model folder (``llmcxr.serve``)."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model folder written by `llmcxr train` (default: the shipped model, checkpoints/llmcxr-tiny).",
        show_default=False,
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Address to bind; anything but loopback is reachable by others."
    ),
    port: int = typer.Option(7860, help="TCP port."),
    max_queue: int = typer.Option(
        64, "--max-queue", help="Requests that may wait for the model (more: 503)."
    ),
    timeout_s: float = typer.Option(
        60.0, "--timeout-s", help="Seconds per request, queue wait included (504)."
    ),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest request body in MB (413)."),
    max_image_mpixels: float = typer.Option(
        25.0, "--max-image-mpixels", help="Largest uploaded image in millions of pixels (400)."
    ),
    read_timeout_s: float = typer.Option(
        30.0, "--read-timeout-s", help="Seconds for a request's headers, then its body, to arrive (408)."
    ),
    device: str | None = typer.Option(None, help="torch device (default: cuda if present, else cpu)."),
    dtype: str = typer.Option("auto", help="auto, fp32, bf16 or fp16."),
    threads: int = typer.Option(0, help="CPU threads for torch (0 = torch's default)."),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Mount the web app at / (the REST API is always on)."),
    chat_model: Path | None = typer.Option(
        None,
        "--chat-model",
        help="A second model for text instructions (default: with no --model, checkpoints/llmcxr-smol "
        "where it is shipped for chat and its base is fetched; else --model answers them).",
    ),
) -> None:
    """Serve the model: a web app at / and a REST API under /v1 (docs at /docs)."""
    from llmcxr.model.folder import model_or_shipped, shipped_for
    from llmcxr.serve import ServeConfig, require_serve_extra
    from llmcxr.serve import serve as run

    require_serve_extra()  # before the model loads
    config = ServeConfig(
        model=model_or_shipped(model),
        chat_model=chat_model or (shipped_for("chat") if model is None else None),
        max_image_pixels=int(max_image_mpixels * 1_000_000),
        read_timeout_s=read_timeout_s,
        host=host,
        port=port,
        max_queue=max_queue,
        timeout_s=timeout_s,
        max_request_bytes=int(max_upload_mb * 1024 * 1024),
        device=device,
        dtype=dtype,
        threads=threads,
        ui=ui,
    )
    run(config)
