"""`build_app(config)`: the REST API and the web app in one FastAPI app; `serve(config)` runs it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from llmcxr.errors import BadInputError
from llmcxr.serve.config import ServeConfig

EXTRA = ("fastapi", "uvicorn", "multipart", "gradio")  # import names of the `serve` extra
DTYPES = ("auto", "fp32", "bf16", "fp16")


def require_serve_extra() -> None:
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise BadInputError(
            "llmcxr serve",
            f"needs the optional web packages (missing: {', '.join(missing)})",
            "install them with: pip install 'llmcxr[serve]'",
        )


def load_model(config: ServeConfig, folder: Path | None = None) -> Any:  # -> llmcxr.generation.LLMCXR
    """``folder`` (default ``config.model``) with the config's device, dtype and threads."""
    import torch

    from llmcxr.generation import LLMCXR, default_cpu_threads

    if config.dtype not in DTYPES:
        raise BadInputError("dtype", f"{config.dtype!r} is not one of {', '.join(DTYPES)}")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.dtype]
    folder = folder or config.model
    model = LLMCXR.from_pretrained(folder, device=config.device, dtype=dtype)
    if config.threads <= 0 and (threads := default_cpu_threads(model.model)):
        torch.set_num_threads(threads)
    if model.vq is None:
        raise BadInputError(folder, "has no vq/ subfolder (VQ-GAN)", "serve a model exported with its VQ-GAN")
    return model


def model_name(folder: Path) -> str:
    """A readable name without the server's directory layout: `run/model` -> the run's folder name."""
    folder = Path(folder).resolve()
    return (
        folder.parent.parent.name if folder.name == "model" and folder.parent.name == "run" else folder.name
    )


def build_app(config: ServeConfig, model: Any = None):
    """The FastAPI app: REST under /v1, OpenAPI docs at /docs, the web app at / (``config.ui``).

    ``model``: an already loaded ``LLMCXR`` (tests); by default the one in ``config.model``.
    """
    require_serve_extra()
    config.check()
    from fastapi import FastAPI

    import llmcxr
    from llmcxr.serve.api import RequestGuard, build_router, install_error_handlers
    from llmcxr.serve.examples import render_examples
    from llmcxr.serve.service import Service
    from llmcxr.serve.worker import ModelWorker

    model = model if model is not None else load_model(config)
    scratch = tempfile.TemporaryDirectory(prefix="llmcxr-serve-")  # removed at shutdown (or exit)
    examples_dir = Path(scratch.name) / "examples"
    chat = ModelWorker(load_model(config, config.chat_model), config.max_queue) if config.chat_model else None
    service = Service(
        config,
        ModelWorker(model, config.max_queue),
        render_examples(examples_dir),
        model_name(config.model),
        chat_worker=chat,
        chat_model_name=model_name(config.chat_model) if config.chat_model else None,
    )

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.worker.close()
        if service.chat_worker is not None:
            service.chat_worker.close()
        scratch.cleanup()
        for folder in app.state.remove_at_shutdown:
            shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(
        title="llmcxr",
        version=llmcxr.__version__,
        description="LLM-CXR: chest X-ray -> report, report -> chest X-ray, VQA and text instructions. "
        'Errors are JSON: {"error": code, "reason": sentence}.',
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: ours is self-contained (api_docs)
        redoc_url=None,
    )
    app.state.service = service
    app.state.scratch = scratch
    app.state.remove_at_shutdown = []  # more folders to delete at shutdown (`serve` adds Gradio's)
    install_error_handlers(app)
    app.add_middleware(
        RequestGuard,
        max_bytes=config.max_request_bytes,
        read_timeout_s=config.read_timeout_s,
        upload_dir=os.environ.get("GRADIO_TEMP_DIR") if config.ui else None,
        max_upload_store_bytes=config.max_upload_store_bytes,
    )
    app.include_router(build_router(service))
    _add_docs_page(app)
    if config.ui:
        from llmcxr.serve.ui import mount_ui

        app = mount_ui(app, service, str(examples_dir))
    return app


def _add_docs_page(app) -> None:
    from fastapi.responses import HTMLResponse

    from llmcxr.serve.api_docs import render_api_docs

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(render_api_docs(app.openapi()))


def serve(config: ServeConfig) -> None:
    """Load the model and serve until interrupted."""
    require_serve_extra()
    import uvicorn

    if not config.is_loopback():
        Console(stderr=True).print(
            f"[bold yellow]warning:[/] serving on {config.host}: anyone who can reach this address can use "
            "the model (there is no authentication); keep the default 127.0.0.1 unless you mean it",
            highlight=False,
        )
    # Gradio keeps uploads and outputs under GRADIO_TEMP_DIR (default: /tmp/gradio, shared by every Gradio
    # app on the machine, all of it servable); give this server a private one (0700), removed at shutdown
    # (by the app's lifespan: uvicorn re-raises SIGTERM after shutdown, so a `finally` here would not run).
    # Set before gradio is imported: some of its modules read it at import.
    private = None
    if "GRADIO_TEMP_DIR" not in os.environ:
        private = tempfile.mkdtemp(prefix="llmcxr-serve-gradio-")
        os.environ["GRADIO_TEMP_DIR"] = private
    try:
        app = build_app(config)
    except BaseException:  # a model that does not load leaves no empty folder behind
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
            del os.environ["GRADIO_TEMP_DIR"]
        raise
    if private is not None:
        app.state.remove_at_shutdown.append(private)
    from llmcxr.serve.timeouts import timed_h11_protocol

    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        timeout_graceful_shutdown=5,
        http=timed_h11_protocol(config.read_timeout_s),
    )
