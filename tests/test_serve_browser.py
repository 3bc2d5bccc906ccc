"""The web app in a real browser: Debian's headless Chromium driven by Playwright against `llmcxr serve`.

Uploads a CXR and gets a report (the same text the REST API gives for that image and seed), draws
images from a report, and saves screenshots under ``test-artifacts/`` (or ``$LLMCXR_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from llmcxr.generation import LLMCXR
from llmcxr.model.recommended import GenerationDefaults
from llmcxr.serve import ServeConfig, build_app
from llmcxr.synth import FindingSpec, render_cxr

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("LLMCXR_TEST_ARTIFACTS", ROOT / "test-artifacts"))
WAIT_MS = 60_000
IMAGE_GUIDANCE = 3.0  # written into the test folder: the web app's slider must start there

if not CHROMIUM.is_file():
    pytest.skip(
        f"{CHROMIUM} not found (Debian: apt-get install chromium); the browser test needs it",
        allow_module_level=True,
    )
for _module in ("fastapi", "gradio", "multipart", "uvicorn", "httpx"):
    pytest.importorskip(_module, reason="the serve extra is not installed (pip install 'llmcxr[serve]')")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)

from _tiny_lm import tiny_llmcxr_folder  # noqa: E402
from test_serve_api import MAX_NEW_TOKENS, REPORTS  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`llmcxr serve`'s app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    folder = tiny_llmcxr_folder(tmp_path_factory.mktemp("browser"), REPORTS * 5)
    # The folder's recommended guidance sets the sliders (the tiny folder has none: 1 by default).
    GenerationDefaults(report_guidance_scale=1.0, image_guidance_scale=IMAGE_GUIDANCE).save(folder)
    llm = LLMCXR.from_pretrained(folder, device="cpu", dtype=torch.float32)
    app = build_app(ServeConfig(model=folder, max_new_tokens=MAX_NEW_TOKENS), model=llm)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here and handed over: no race for the port
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield chromium
        chromium.close()


def test_upload_report_and_draw_in_the_browser(server, browser, tmp_path):
    import httpx

    cxr = tmp_path / "cxr.png"
    Image.fromarray(render_cxr(FindingSpec(cardiomegaly=True), 128, seed=0)).save(cxr)
    reply = httpx.post(f"{server}/v1/report", files={"image": ("cxr.png", cxr.read_bytes())}, timeout=60)
    expected = reply.json()["text"]
    assert reply.status_code == 200 and expected  # seed 0 of this random model writes something

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_selector("#report-upload", timeout=WAIT_MS)
    assert page.title() == "llmcxr"
    assert "LLM-CXR: one model that reads and draws chest X-rays" in page.inner_text("body")

    # CXR -> report: the upload is shown as read, the report is the API's for the same image and seed
    page.set_input_files("#report-upload input[type=file]", str(cxr))
    page.wait_for_selector("#report-preview img", timeout=WAIT_MS)
    page.click("#report-button")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.wait_for_function(
            "() => document.querySelector('#report-output textarea').value.length > 0", timeout=WAIT_MS
        )
    finally:
        page.screenshot(path=str(ARTIFACTS / "serve_browser_report.png"), full_page=True)
    # a textarea's value normalises line breaks to \n (HTML spec); the random model writes any byte
    assert page.input_value("#report-output textarea") == expected.replace("\r\n", "\n").replace("\r", "\n")

    # report -> CXR: two samples (the default) in the gallery, captioned with their seeds
    page.get_by_role("tab", name="Report → CXR").click()
    page.fill("#image-report textarea", REPORTS[1])
    page.click("#image-button")
    page.wait_for_function(
        "() => { const images = [...document.querySelectorAll('#image-gallery img')];"
        " return images.length >= 2 && images.every((i) => i.complete && i.naturalWidth > 0); }",
        timeout=WAIT_MS,
    )
    gallery = page.inner_text("#image-gallery")
    assert (
        f"seed 0, guidance {IMAGE_GUIDANCE:g}" in gallery
        and f"seed 1, guidance {IMAGE_GUIDANCE:g}" in gallery
    )
    page.screenshot(path=str(ARTIFACTS / "serve_browser.png"), full_page=True)
    assert (ARTIFACTS / "serve_browser.png").stat().st_size > 10_000
    page.close()
