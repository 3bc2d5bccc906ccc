"""Issue 24's probes of `llmcxr serve`, as tests: decoding under the queue and its pixel bound, no server
path in errors, stated lateral views, slow clients, the web app's upload space, an offline /docs page,
and no temporary folder left by a model that does not load."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _dicom import write_dicom
from _tiny_lm import REPORTS, tiny_llmcxr_folder
from llmcxr.errors import BadInputError
from llmcxr.generation import LLMCXR
from llmcxr.serve import ServeConfig, build_app
from llmcxr.serve import server as serve_server

for _module in ("fastapi", "gradio", "multipart", "uvicorn"):
    pytest.importorskip(_module, reason="the serve extra is not installed (pip install 'llmcxr[serve]')")
TestClient = pytest.importorskip("fastapi.testclient").TestClient


def png_declaring(width: int, height: int, bit_depth: int = 16) -> bytes:
    """A small PNG whose header declares width x height gray pixels (zlib-compressed zero rows)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + width * bit_depth // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def cxr_png(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (80, 96), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return tiny_llmcxr_folder(tmp_path_factory.mktemp("serve-hardening"), REPORTS * 5)


@pytest.fixture(scope="module")
def client(model_folder):
    llm = LLMCXR.from_pretrained(model_folder, device="cpu", dtype=torch.float32)
    config = ServeConfig(model=model_folder, max_new_tokens=8, ui=False, max_image_pixels=4_000_000)
    with TestClient(build_app(config, model=llm)) as test_client:
        yield test_client


def test_uploads_are_decoded_on_the_model_worker_within_the_pixel_bound(client, monkeypatch):
    from llmcxr.serve import uploads

    threads: list[str] = []
    original = uploads.Upload.pixels

    def spy(self, limits, notes=None):
        threads.append(threading.current_thread().name)
        return original(self, limits, notes)

    monkeypatch.setattr(uploads.Upload, "pixels", spy)
    ok = client.post("/v1/report", files={"image": ("cxr.png", cxr_png())}, data={"greedy": "true"})
    assert ok.status_code == 200
    # before: decoded on arrival in the thread pool, 8 at once took the server to 7.1 GB (issue 24)
    big = client.post("/v1/report", files={"image": ("big.png", png_declaring(8000, 7999))})
    assert big.status_code == 400
    assert "over the limit of 4,000,000 pixels" in big.json()["reason"]
    assert threads == ["llmcxr-model-worker", "llmcxr-model-worker"]


def test_a_truncated_upload_names_the_upload_never_a_server_path(client):
    whole = cxr_png(1)
    reply = client.post("/v1/report", files={"image": ("/home/me/cut.png", whole[: len(whole) // 2])})
    assert reply.status_code == 400
    reason = reply.json()["reason"]
    assert reason.startswith("upload 'cut.png': unreadable or truncated image")
    # before: "(BadInputError: /tmp/llmcxr-upload-....upload: ...)" wrapped inside it
    assert (
        "BadInputError" not in reason
        and tempfile.gettempdir() not in reason
        and "llmcxr-upload" not in reason
    )


def test_a_stated_lateral_view_is_said_in_the_reply(client, tmp_path):
    ramp = np.round(np.linspace(0, 4095, 72 * 64)).reshape(72, 64)
    lateral = write_dicom(tmp_path / "lat.dcm", ramp, ViewPosition="LL").read_bytes()
    reply = client.post("/v1/report", files={"image": ("lat.dcm", lateral)}, data={"greedy": "true"})
    assert reply.status_code == 200
    assert reply.json()["notes"] == [
        "upload 'lat.dcm': view 'LL' is not frontal; the model was trained on frontal (PA/AP) chest "
        "X-rays, so its output for this image is unreliable"
    ]
    frontal = write_dicom(tmp_path / "pa.dcm", ramp, ViewPosition="PA").read_bytes()
    assert client.post("/v1/report", files={"image": ("pa.dcm", frontal)}).json()["notes"] == []


def test_docs_page_loads_nothing_from_the_network(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "<script" not in page.text and "cdn" not in page.text.lower() and "http" not in page.text
    assert "POST /v1/report" in page.text and "guidance_scale" in page.text
    assert client.get("/redoc").status_code == 404


def _guard(app, **kwargs):
    from llmcxr.serve.api import RequestGuard

    return RequestGuard(app, max_bytes=10_000_000, **kwargs)


async def _call(guard, path: str, chunks: list[tuple[float, bytes, bool]]) -> list[dict]:
    """Run ``guard`` on a POST whose body arrives as (delay before, bytes, more_body) chunks."""
    sent: list[dict] = []
    pending = list(chunks)

    async def receive():
        if not pending:
            await asyncio.sleep(3600)
        delay, body, more = pending.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    await guard(scope, receive, send)
    return sent


def test_a_slow_body_is_cut_at_the_read_timeout():
    from starlette.exceptions import HTTPException

    async def app(scope, receive, send):  # reads the whole body, as a form parser does
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    fast = asyncio.run(
        _call(_guard(app, read_timeout_s=1.0), "/v1/report", [(0, b"a", True), (0, b"b", False)])
    )
    assert fast[0]["status"] == 200
    slow = [(0.0, b"a", True), (0.4, b"b", True), (0.4, b"c", True), (0.4, b"d", False)]
    with pytest.raises(HTTPException) as err:  # the app's error handler turns it into JSON 408
        asyncio.run(_call(_guard(app, read_timeout_s=1.0), "/v1/report", slow))
    assert err.value.status_code == 408


def test_web_app_uploads_are_bounded_in_total(tmp_path):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"stored"})

    guard = _guard(app, upload_dir=tmp_path, max_upload_store_bytes=1000)
    assert asyncio.run(_call(guard, "/gradio_api/upload", [(0, b"x", False)]))[0]["status"] == 200
    (tmp_path / "earlier-upload").write_bytes(b"\0" * 1000)  # before: 20 x 19 MB stayed until shutdown
    full = asyncio.run(_call(guard, "/gradio_api/upload", [(0, b"x", False)]))
    assert full[0]["status"] == 507 and b"upload_space_full" in full[1]["body"]
    assert asyncio.run(_call(guard, "/v1/chat", [(0, b"{}", False)]))[0]["status"] == 200


def test_gradio_deletes_old_uploads(client, model_folder):
    from llmcxr.serve.ui import build_ui

    blocks = build_ui(client.app.state.service)
    assert blocks.delete_cache == (180, 900)


def test_slow_request_headers_are_cut(unused_port: int):
    import uvicorn

    from llmcxr.serve.timeouts import timed_h11_protocol

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, port=unused_port, http=timed_h11_protocol(0.5), log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", unused_port)) as good:
            good.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert good.recv(1000).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", unused_port), timeout=5) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\n")
            start = time.monotonic()
            for _ in range(4):  # a header line every 0.3 s: before, kept open forever
                time.sleep(0.3)
                try:
                    slow.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    break
            assert slow.recv(1000) == b""  # closed by the server
            assert time.monotonic() - start < 3
    finally:
        server.should_exit = True
        thread.join(5)


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_model_that_does_not_load_leaves_no_temporary_folder(tmp_path, monkeypatch, model_folder):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_folder, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    with pytest.raises(BadInputError, match="unreadable language model"):
        serve_server.serve(ServeConfig(model=broken))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # before: an empty llmcxr-serve-gradio-*
