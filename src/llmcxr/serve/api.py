"""The REST API: /v1/report, /v1/image, /v1/answer, /v1/chat, /v1/health; every error is JSON.

Errors always read ``{"error": <code>, "reason": <what went wrong and what to do>}``: 400 bad input
(unreadable image, empty text), 408 body too slow, 413 request too large, 422 malformed request (missing field, wrong
type), 503 queue full, 504 no result within the timeout, 500 anything else (with its type).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmcxr.errors import BadInputError
from llmcxr.serve.service import GUIDANCE_RANGE, MAX_CANDIDATES, MAX_SEED, Service
from llmcxr.serve.uploads import Upload
from llmcxr.serve.worker import QueueFull


class ServeError(Exception):
    """An error reply: HTTP status, a short machine-readable code, a sentence for people."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.error, self.reason = status, error, reason


def error_body(error: str, reason: str) -> dict[str, str]:
    return {"error": error, "reason": reason}


# --- request / reply models (they are also the OpenAPI docs at /docs) ------------------------------


class ErrorReply(BaseModel):
    error: str = Field(
        description="short code: bad_input, invalid_request, too_large, queue_full, timeout..."
    )
    reason: str = Field(description="what went wrong and what to do")


class TextReply(BaseModel):
    text: str = Field(description="the generated report, answer or reply")
    stopped: bool = Field(description="ended by itself (false: cut at the token limit)")
    seconds: float = Field(description="request time on the server, queue wait included")
    compute_s: float = Field(description="model time of the request's batch")
    tokens: list[int] = Field(description="the generated token ids (the stop token left out)")
    notes: list[str] = Field(
        default_factory=list, description="what reading the image noted, e.g. a stated lateral view"
    )


class ImageRequest(BaseModel):
    report: str = Field(description="radiology report to draw", examples=["FINDINGS: Moderate cardiomegaly."])
    guidance_scale: float | None = Field(
        None,
        ge=GUIDANCE_RANGE[0],
        le=GUIDANCE_RANGE[1],
        description="classifier-free guidance; 1 = none; default: the model folder's recommendation",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="sampling seed: same seed, same image")
    greedy: bool = Field(False, description="most likely token at every step instead of top-p sampling")
    candidates: int = Field(
        1,
        ge=1,
        le=MAX_CANDIDATES,
        description="best of k draws: the one whose report the model reads back as most likely (k times the time)",
    )


class ChatRequest(BaseModel):
    instruction: str = Field(
        description="instruction or question", examples=["What is a chest X-ray used for?"]
    )
    input: str | None = Field(None, description="optional context (the Dolly 'Input:' field)")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    greedy: bool = False


class Health(BaseModel):
    status: str
    model: str
    chat_model: str = Field(description="the model that answers /v1/chat (--chat-model, else model)")
    device: str
    dtype: str
    image_size: int | None = Field(description="side of the generated images in pixels")
    queue_depth: int = Field(description="requests waiting for the model plus the one running")
    max_queue: int
    timeout_s: float


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply, "description": text}
    for code, text in {
        400: "bad input (unreadable image, empty or too long text)",
        413: "request body over the size limit",
        422: "malformed request (missing field, wrong type, value out of range)",
        503: "the model's queue is full; retry later",
        504: "no result within the server's timeout",
    }.items()
}
IMAGE_FIELD = File(..., description="chest X-ray: PNG, JPEG or DICOM")
SEED_FIELD = Form(0, ge=0, le=MAX_SEED, description="sampling seed")
GREEDY_FIELD = Form(False, description="greedy decoding instead of top-p sampling")
REPORT_GUIDANCE_FIELD = Form(
    None,
    ge=GUIDANCE_RANGE[0],
    le=GUIDANCE_RANGE[1],
    description="classifier-free guidance against no image; 1 = none; needs a model trained with image dropout; "
    "default: the model folder's recommendation",
)


# --- the routes ---------------------------------------------------------------------------------


def _upload(image: UploadFile) -> Upload:
    """The upload as the server spooled it; decoded later, on the model worker (``Service``)."""
    return Upload(image.filename, file=image.file)


async def _wait(service: Service, submit) -> Any:
    """Submit a job (``submit()`` returns the worker's Future) and await it within the timeout."""
    try:
        future: Future = submit()
    except QueueFull as err:
        raise ServeError(503, "queue_full", f"{err}; retry in a few seconds") from None
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), service.config.timeout_s)
    except TimeoutError:
        future.cancel()  # skipped if it still waits; a running generation finishes unseen
        raise ServeError(
            504,
            "timeout",
            f"no result within {service.config.timeout_s:g} s (queue wait included); the server is busy, "
            "retry later",
        ) from None


def _text_reply(result, start: float, notes: list[str] | None = None) -> TextReply:
    return TextReply(
        text=result.text,
        stopped=result.stopped,
        seconds=round(time.perf_counter() - start, 4),
        compute_s=round(result.timings.total_s, 4),
        tokens=result.tokens,
        notes=notes or [],
    )


def build_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=ERRORS)

    @router.get("/health", response_model=Health, summary="Model, device and queue depth")
    async def health() -> dict[str, Any]:
        return service.health()

    @router.post("/report", response_model=TextReply, summary="CXR -> report (image upload)")
    async def report(
        image: UploadFile = IMAGE_FIELD,
        seed: int = SEED_FIELD,
        greedy: bool = GREEDY_FIELD,
        guidance_scale: float | None = REPORT_GUIDANCE_FIELD,
    ) -> TextReply:
        start = time.perf_counter()
        reply = await _wait(service, lambda: service.report(_upload(image), seed, greedy, guidance_scale))
        return _text_reply(reply.result, start, reply.notes)

    @router.post("/answer", response_model=TextReply, summary="VQA: a question about a CXR")
    async def answer(
        image: UploadFile = IMAGE_FIELD,
        question: str = Form(..., description="question about the image"),
        seed: int = SEED_FIELD,
        greedy: bool = GREEDY_FIELD,
    ) -> TextReply:
        start = time.perf_counter()
        reply = await _wait(service, lambda: service.answer(_upload(image), question, seed, greedy))
        return _text_reply(reply.result, start, reply.notes)

    @router.post("/chat", response_model=TextReply, summary="A text instruction (no image)")
    async def chat(request: ChatRequest) -> TextReply:
        start = time.perf_counter()
        result = await _wait(
            service, lambda: service.chat(request.instruction, request.input, request.seed, request.greedy)
        )
        return _text_reply(result, start)

    @router.post(
        "/image",
        summary="Report -> CXR (a PNG at the model's resolution)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the generated CXR, 8-bit gray"}},
    )
    async def image(request: ImageRequest) -> Response:
        start = time.perf_counter()
        results = await _wait(
            service,
            lambda: service.image(
                request.report,
                request.guidance_scale,
                1,
                request.seed,
                request.greedy,
                candidates=request.candidates,
            ),
        )
        buffer = io.BytesIO()
        results[0].image.save(buffer, format="PNG")
        headers = {
            "X-Seed": str(results[0].seed),
            "X-Seconds": f"{time.perf_counter() - start:.4f}",
            "X-Compute-Seconds": f"{results[0].timings.total_s:.4f}",
        }
        return Response(buffer.getvalue(), media_type="image/png", headers=headers)

    known = {route.path for route in router.routes}

    # Last: anything else under /v1 is answered here in JSON, not by the web app mounted at /.
    @router.api_route(
        "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    async def unknown(request: Request, rest: str) -> None:
        path = request.url.path
        if path in known:
            raise ServeError(
                405, "method_not_allowed", f"{request.method} is not allowed on {path}; see /docs"
            )
        raise ServeError(404, "not_found", f"no endpoint {path}; the API is listed at /docs")

    return router


# --- errors -------------------------------------------------------------------------------------


def _validation_reason(err: RequestValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
    return "; ".join(parts) or "malformed request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, err: ServeError) -> JSONResponse:
        return JSONResponse(error_body(err.error, err.reason), status_code=err.status)

    @app.exception_handler(BadInputError)
    async def bad_input(request: Request, err: BadInputError) -> JSONResponse:
        return JSONResponse(error_body("bad_input", str(err)), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", _validation_reason(err)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 408: "timeout", 413: "too_large"}.get(
            err.status_code, "http_error"
        )
        return JSONResponse(
            error_body(code, str(err.detail)), status_code=err.status_code, headers=err.headers
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse(error_body("internal_error", f"{type(err).__name__}: {err}"), status_code=500)


# --- the guard in front of everything (REST and web app) -------------------------------------------

# Gradio's /file= route fetches http(s) URLs on the client's behalf; this server fetches nothing.
_URL_FILE = re.compile(r"/file[=/]+\s*https?:", re.IGNORECASE)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class RequestGuard:
    """ASGI middleware in front of everything (REST and web app), every reply JSON:

    - bodies over ``max_bytes``: 413 (by Content-Length, or counted while a chunked body streams);
    - a body that has not fully arrived ``read_timeout_s`` after the request began: 408 (a slow-body
      client would otherwise hold a connection and its buffers forever; slow headers are cut by
      ``timeouts.TimedH11Protocol``);
    - a web-app upload while ``upload_dir`` holds ``max_upload_store_bytes`` already: 507 (uploads stay
      on disk until they age out, so their total is bounded here);
    - URL fetches through the web app's file route: 403.
    """

    def __init__(
        self,
        app,
        max_bytes: int,
        read_timeout_s: float = 30.0,
        upload_dir: str | Path | None = None,
        max_upload_store_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.upload_dir = Path(upload_dir) if upload_dir else None
        self.max_upload_store_bytes = max_upload_store_bytes

    async def _reply(self, send, status: int, error: str, reason: str) -> None:
        body = json.dumps(error_body(error, reason)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, size: str) -> str:
        return f"request body of {size} is over the limit of {self.max_bytes:,} bytes; send a smaller image"

    def _upload_store_full(self, path: str) -> bool:
        if self.upload_dir is None or not path.rstrip("/").endswith("/upload"):
            return False
        return self.upload_dir.is_dir() and _folder_bytes(self.upload_dir) >= self.max_upload_store_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if _URL_FILE.search(path):
            await self._reply(
                send, 403, "forbidden", "this server serves its own files only and fetches no URLs"
            )
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reply(send, 413, "too_large", self._too_large(f"{int(declared):,} bytes"))
            return
        # the store is walked off the event loop: with many uploads on disk it takes a while
        if scope.get("method") == "POST" and await run_in_threadpool(self._upload_store_full, path):
            await self._reply(
                send,
                507,
                "upload_space_full",
                f"the server holds {self.max_upload_store_bytes:,} bytes of uploads already; retry in a few minutes",
            )
            return
        received = 0
        body_done = False
        deadline = time.monotonic() + self.read_timeout_s

        async def counted_receive():
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise StarletteHTTPException(
                    408, f"the request body did not arrive within {self.read_timeout_s:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:  # a chunked upload without Content-Length
                    raise StarletteHTTPException(413, self._too_large(f"over {self.max_bytes:,} bytes"))
            return message

        await self.app(scope, counted_receive, send)
