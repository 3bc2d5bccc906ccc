"""`llmcxr serve`'s REST API on a tiny random model: endpoints, JSON errors, limits, queue, timeout, files."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _dicom import write_dicom
from _tiny_lm import tiny_llmcxr_folder
from llmcxr.errors import BadInputError
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.imaging import load_image
from llmcxr.serve import ServeConfig, build_app
from llmcxr.serve import server as serve_server

for _module in ("fastapi", "gradio", "multipart", "uvicorn"):
    pytest.importorskip(_module, reason="the serve extra is not installed (pip install 'llmcxr[serve]')")
TestClient = pytest.importorskip("fastapi.testclient").TestClient

REPORTS = [
    "FINDINGS: The heart is normal in size. The lungs are clear. IMPRESSION: No acute disease.",
    "FINDINGS: Moderate cardiomegaly. Small left pleural effusion. IMPRESSION: Cardiomegaly.",
    "Is there cardiomegaly? yes no. What is a chest X-ray used for?",
]
MAX_NEW_TOKENS = 24  # short replies keep every request to milliseconds


def cxr_png(seed: int = 0, size: tuple[int, int] = (96, 80)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def cxr_jpeg(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(cxr_png(seed))).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def cxr_dicom(path: Path) -> bytes:
    """A 72 x 64 DX DICOM holding a 12-bit ramp."""
    ramp = np.round(np.linspace(0, 4095, 72 * 64)).reshape(72, 64)
    return write_dicom(path, ramp).read_bytes()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return tiny_llmcxr_folder(tmp_path_factory.mktemp("serve"), REPORTS * 5)


@pytest.fixture(scope="module")
def llm(model_folder) -> LLMCXR:
    return LLMCXR.from_pretrained(model_folder, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def client(model_folder, llm):
    """The full app (REST + web app), its lifespan running."""
    config = ServeConfig(model=model_folder, max_new_tokens=MAX_NEW_TOKENS)
    with TestClient(build_app(config, model=llm)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def strict_client(model_folder, llm):
    """REST only, with tight limits: 10 kB bodies, a queue of 1, a 0.3 s timeout."""
    config = ServeConfig(
        model=model_folder,
        max_new_tokens=MAX_NEW_TOKENS,
        max_request_bytes=10_000,
        max_queue=1,
        timeout_s=0.3,
        ui=False,
    )
    with TestClient(build_app(config, model=llm)) as test_client:
        yield test_client


def sampling(seed: int = 0) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, seed=seed)


# --- the endpoints ------------------------------------------------------------------------------


def test_health(client):
    reply = client.get("/v1/health")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "ok",
        "model": "serve0",  # run/model -> the run's folder (pytest's mktemp name)
        "chat_model": "serve0",  # no --chat-model: the one model answers text instructions too
        "device": "cpu",
        "dtype": "float32",
        "image_size": 16,
        "queue_depth": 0,
        "max_queue": 64,
        "timeout_s": 60.0,
    }


@pytest.mark.parametrize("kind", ["png", "jpeg", "dicom"])
def test_report_from_each_upload_kind_matches_the_library(client, llm, tmp_path, kind):
    data = {"png": cxr_png, "jpeg": cxr_jpeg, "dicom": lambda: cxr_dicom(tmp_path / "cxr.dcm")}[kind]()
    (tmp_path / "upload").write_bytes(data)
    expected = llm.report(load_image(tmp_path / "upload"), sampling=sampling(3)).text
    reply = client.post("/v1/report", files={"image": (f"cxr.{kind}", data)}, data={"seed": "3"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["text"] == expected
    assert isinstance(body["stopped"], bool) and body["seconds"] >= body["compute_s"] > 0


def test_report_guidance_matches_the_library(client, llm):
    pixels = load_image(Image.open(io.BytesIO(cxr_png(6))))
    # The tiny model was trained without image dropout: the library warns, the server still answers.
    with pytest.warns(UserWarning, match="unconditional_report_fraction"):
        expected = llm.report(pixels, sampling=sampling(4), guidance_scale=2.0).text
    with pytest.warns(UserWarning, match="unconditional_report_fraction"):  # on the worker thread
        guided = client.post(
            "/v1/report", files={"image": ("g.png", cxr_png(6))}, data={"seed": "4", "guidance_scale": "2.0"}
        )
    assert guided.status_code == 200, guided.text
    assert guided.json()["text"] == expected


def test_report_guidance_defaults_to_none(client, llm):
    pixels = load_image(Image.open(io.BytesIO(cxr_png(6))))
    default = client.post("/v1/report", files={"image": ("g.png", cxr_png(6))}, data={"seed": "4"})
    one = client.post(
        "/v1/report", files={"image": ("g.png", cxr_png(6))}, data={"seed": "4", "guidance_scale": "1.0"}
    )
    assert default.status_code == one.status_code == 200, default.text
    assert default.json()["text"] == one.json()["text"] == llm.report(pixels, sampling=sampling(4)).text


def test_report_guidance_out_of_range(client):
    for scale in ("50", "-1"):
        reply = client.post(
            "/v1/report", files={"image": ("g.png", cxr_png(6))}, data={"guidance_scale": scale}
        )
        assert reply.status_code == 422, scale
        assert reply.json()["error"] == "invalid_request"
        assert reply.json()["reason"].startswith("guidance_scale")
    with pytest.raises(BadInputError, match=r"guidance_scale: 50.0 is outside 0.0..20.0"):
        client.app.state.service.report(np.zeros((64, 64), np.float32), guidance_scale=50.0)


def test_image_is_a_png_of_the_model_resolution_and_seeded(client, llm):
    request = {"report": REPORTS[1], "guidance_scale": 2.0, "seed": 5}
    first = client.post("/v1/image", json=request)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png" and first.headers["x-seed"] == "5"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "PNG" and image.size == (16, 16) and image.mode == "L"
    expected = llm.generate_image(REPORTS[1], guidance_scale=2.0, seed=5, sampling=sampling(5)).image
    assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert client.post("/v1/image", json=request).content == first.content  # same seed, same bytes


def test_best_of_k_image_matches_the_library(client, llm):
    request = {"report": REPORTS[1], "guidance_scale": 2.0, "seed": 5, "candidates": 3}
    reply = client.post("/v1/image", json=request)
    assert reply.status_code == 200, reply.text
    expected = llm.generate_image(REPORTS[1], guidance_scale=2.0, seed=5, sampling=sampling(5), candidates=3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(reply.content))), np.asarray(expected.image))
    for bad in ({"candidates": 0}, {"candidates": 9}, {"candidates": 2, "greedy": True}):
        reply = client.post("/v1/image", json={"report": REPORTS[1]} | bad)
        assert reply.status_code in (400, 422), bad
        assert reply.json()["reason"].startswith("candidates"), reply.json()


def test_answer_and_chat(client, llm):
    question = "Is there cardiomegaly?"
    reply = client.post(
        "/v1/answer", files={"image": ("a.png", cxr_png(1))}, data={"question": question, "seed": "2"}
    )
    assert reply.status_code == 200, reply.text
    pixels = load_image(Image.open(io.BytesIO(cxr_png(1))))
    assert reply.json()["text"] == llm.answer(pixels, question, sampling=sampling(2)).text
    chat = client.post("/v1/chat", json={"instruction": "What is a chest X-ray used for?", "seed": 1})
    assert chat.status_code == 200
    assert chat.json()["text"] == llm.chat("What is a chest X-ray used for?", sampling=sampling(1)).text


def test_a_chat_model_answers_text_instructions_and_the_model_the_rest(model_folder, llm, tmp_path):
    """``--chat-model`` (an instruct base tuned with llmcxr keeps its language): /v1/chat goes to it,
    the image tasks stay with ``--model``."""
    chat_folder = tiny_llmcxr_folder(tmp_path / "chat", REPORTS * 5, seed=7)
    chat_llm = LLMCXR.from_pretrained(chat_folder, device="cpu", dtype=torch.float32)
    config = ServeConfig(
        model=model_folder, chat_model=chat_folder, max_new_tokens=MAX_NEW_TOKENS, ui=False, dtype="fp32"
    )
    instruction = "What is a chest X-ray used for?"
    with TestClient(build_app(config, model=llm)) as chat_client:
        assert chat_client.get("/v1/health").json()["chat_model"] == "chat"
        reply = chat_client.post("/v1/chat", json={"instruction": instruction, "seed": 1}).json()["text"]
    assert reply == chat_llm.chat(instruction, sampling=sampling(1)).text
    assert reply != llm.chat(instruction, sampling=sampling(1)).text  # another model's answer


def test_openapi_lists_the_endpoints(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/report", "/v1/image", "/v1/answer", "/v1/chat", "/v1/health"} <= set(schema["paths"])
    assert "image/png" in schema["paths"]["/v1/image"]["post"]["responses"]["200"]["content"]
    report_form = schema["paths"]["/v1/report"]["post"]["requestBody"]["content"]["multipart/form-data"]
    form_schema = report_form["schema"]
    if "$ref" in form_schema:
        form_schema = schema["components"]["schemas"][form_schema["$ref"].rsplit("/", 1)[-1]]
    guidance = form_schema["properties"]["guidance_scale"]
    assert guidance.get("default") is None and "model folder" in guidance["description"]  # its recommendation
    assert client.get("/docs").status_code == 200


# --- errors are JSON with a reason ----------------------------------------------------------------


def test_bad_image_bytes(client):
    reply = client.post("/v1/report", files={"image": ("/home/me/notes.png", b"not an image at all")})
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "bad_input",
        "reason": "upload 'notes.png': not an image (no reader recognises this file)",
    }
    small = client.post("/v1/report", files={"image": ("s.png", cxr_png(0, (32, 32)))})
    assert small.status_code == 400 and "smaller than the minimum side of 64" in small.json()["reason"]
    broken = client.post("/v1/report", files={"image": ("b.dcm", b"\0" * 128 + b"DICM" + b"\x01" * 50)})
    assert broken.status_code == 400 and "DICOM" in broken.json()["reason"]


def test_missing_fields_and_out_of_range_values(client):
    missing = client.post("/v1/report")
    assert missing.status_code == 422
    assert missing.json() == {"error": "invalid_request", "reason": "image: Field required"}
    no_question = client.post("/v1/answer", files={"image": ("a.png", cxr_png())})
    assert no_question.status_code == 422 and "question: Field required" in no_question.json()["reason"]
    guidance = client.post("/v1/image", json={"report": "x", "guidance_scale": 50})
    assert guidance.status_code == 422 and guidance.json()["reason"].startswith("guidance_scale:")
    not_json = client.post("/v1/image", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["error"] == "invalid_request"
    assert client.get("/v1/nothing").json() == {
        "error": "not_found",
        "reason": "no endpoint /v1/nothing; the API is listed at /docs",
    }
    wrong_method = client.get("/v1/report")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


def test_text_limits(client):
    too_long = client.post("/v1/image", json={"report": "a" * 4001})
    assert too_long.status_code == 400
    assert too_long.json()["reason"] == "report: 4,001 characters is over the limit of 4,000. shorten it"
    empty = client.post("/v1/chat", json={"instruction": "   "})
    assert empty.status_code == 400 and empty.json()["reason"].startswith("instruction: is empty")


def test_request_over_the_size_limit(strict_client):
    reply = strict_client.post("/v1/report", files={"image": ("big.png", b"\0" * 20_000)})
    assert reply.status_code == 413
    assert reply.json()["error"] == "too_large" and "over the limit of 10,000 bytes" in reply.json()["reason"]

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(20):
            yield b"\0" * 1000

    streamed = strict_client.post("/v1/chat", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "too_large"


# --- queue, concurrency, timeout ------------------------------------------------------------------


def block_worker(client) -> tuple[threading.Event, threading.Event]:
    """Occupy the model worker with a job that runs until ``release`` is set; returns (started, release)."""
    started, release = threading.Event(), threading.Event()

    def job(model):
        started.set()
        release.wait(10)

    client.app.state.service.worker.submit(job)
    assert started.wait(5)
    return started, release


def test_concurrent_requests_all_succeed_in_order(client):
    def one(i: int):
        return client.post("/v1/report", files={"image": ("a.png", cxr_png(i))}, data={"seed": str(i)})

    serial = [one(i).json()["text"] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(one, range(8)))
    assert [r.status_code for r in replies] == [200] * 8
    assert [r.json()["text"] for r in replies] == serial  # queued, not mixed up


def test_timeout_gives_504_and_the_worker_carries_on(strict_client):
    _, release = block_worker(strict_client)
    try:
        reply = strict_client.post("/v1/chat", json={"instruction": "Hello"})
    finally:
        release.set()
    assert reply.status_code == 504
    assert reply.json()["error"] == "timeout" and "no result within 0.3 s" in reply.json()["reason"]
    # The next request is answered: with a long timeout, so a busy CPU cannot make this test fail.
    service = strict_client.app.state.service
    strict = service.config
    service.config = dataclasses.replace(strict, timeout_s=120.0)
    try:
        after = strict_client.post("/v1/chat", json={"instruction": "Hello"})
    finally:
        service.config = strict
    assert after.status_code == 200


def test_full_queue_gives_503(strict_client):
    _, release = block_worker(strict_client)
    worker = strict_client.app.state.service.worker
    try:
        worker.submit(lambda model: None)  # fills the queue of one
        assert strict_client.get("/v1/health").json()["queue_depth"] == 2
        reply = strict_client.post("/v1/chat", json={"instruction": "Hello"})
    finally:
        release.set()
    assert reply.status_code == 503
    assert reply.json() == {
        "error": "queue_full",
        "reason": "1 requests are already waiting for the model; retry in a few seconds",
    }


# --- security defaults ----------------------------------------------------------------------------


def test_defaults_bind_loopback_only():
    config = ServeConfig(model=Path("m"))
    assert config.host == "127.0.0.1" and config.is_loopback()
    assert ServeConfig(model=Path("m"), host="localhost").is_loopback()
    assert not ServeConfig(model=Path("m"), host="0.0.0.0").is_loopback()
    with pytest.raises(BadInputError, match="max_queue: 0 is outside"):
        ServeConfig(model=Path("m"), max_queue=0).check()


def test_non_loopback_host_is_warned_about(monkeypatch, capsys, tmp_path):
    import uvicorn

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # else serve() makes a private one
    calls = []
    monkeypatch.setattr(serve_server, "build_app", lambda config: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    serve_server.serve(ServeConfig(model=Path("m")))
    assert calls[-1]["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err
    serve_server.serve(ServeConfig(model=Path("m"), host="0.0.0.0"))
    assert calls[-1]["host"] == "0.0.0.0" and "warning: serving on 0.0.0.0" in capsys.readouterr().err


def test_no_files_from_arbitrary_paths(client, tmp_path):
    secret = tmp_path / "private.txt"  # in the system temp folder, like the server's own files
    secret.write_text("TOPSECRET-42")
    for path in ["/etc/passwd", str(secret), "../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd"]:
        reply = client.get(f"/gradio_api/file={path}")
        assert reply.status_code in (403, 404), path
        assert "TOPSECRET" not in reply.text and "root:" not in reply.text
    proxied = client.get("/gradio_api/file=https://example.com/x.png")
    assert proxied.status_code == 403 and proxied.json()["error"] == "forbidden"
    assert client.get("/gradio_api/file/http://127.0.0.1:1/").status_code == 403
    # the server's own examples are served
    example = client.app.state.service.examples[0].image
    assert client.get(f"/gradio_api/file={example}").status_code == 200


def test_missing_extra_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "gradio" else real(name))
    with pytest.raises(
        BadInputError, match=r"missing: gradio\). install them with: pip install 'llmcxr\[serve\]'"
    ):
        serve_server.require_serve_extra()


def test_cli_serve_is_registered_and_refuses_a_missing_model(tmp_path):
    from typer.testing import CliRunner

    from llmcxr.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["serve", "--help"]).output
    assert "--max-queue" in help_text and "--timeout-s" in help_text and "127.0.0.1" in help_text
    result = runner.invoke(app, ["serve", "--model", str(tmp_path / "nope")])
    assert isinstance(result.exception, BadInputError)
    assert "model folder not found" in str(result.exception)


@pytest.mark.filterwarnings("ignore:.*unconditional_report_fraction:UserWarning")  # report guidance
def test_web_app_handlers_share_the_worker_and_explain_errors(client, tmp_path):
    import gradio as gr

    from llmcxr.serve.ui import UI

    ui = UI(client.app.state.service)
    quiet = lambda *args, **kwargs: None  # noqa: E731 - stands in for gr.Progress
    good, bad = tmp_path / "cxr.png", tmp_path / "bad.png"
    good.write_bytes(cxr_png(4))
    bad.write_bytes(b"nope")
    api = client.post("/v1/report", files={"image": ("cxr.png", cxr_png(4))}, data={"seed": "2"}).json()
    assert ui.report(str(good), 2, progress=quiet) == api["text"]
    assert ui.preview(str(good)).size == (96, 80)
    with pytest.raises(gr.Error, match="Upload a chest X-ray first"):
        ui.report(None, 0, progress=quiet)
    with pytest.raises(gr.Error, match="upload 'bad.png': not an image"):
        ui.report(str(bad), 0, progress=quiet)
    guided = client.post(
        "/v1/report", files={"image": ("cxr.png", cxr_png(4))}, data={"seed": "2", "guidance_scale": "2.5"}
    ).json()
    assert ui.report(str(good), 2, 2.5, progress=quiet) == guided["text"]
    with pytest.raises(gr.Error, match="guidance_scale: 50.0 is outside"):
        ui.report(str(good), 2, 50, progress=quiet)
    with pytest.raises(gr.Error, match="question: is empty"):
        ui.answer(str(good), " ", 0, progress=quiet)
    drawn = ui.image(REPORTS[0], 1.5, 3, 7, False, progress=quiet)
    assert [caption for _, caption in drawn] == [f"seed {s}, guidance 1.5" for s in (7, 8, 9)]
    assert drawn[0][0].size == (256, 256)  # 16 px upscaled for viewing


def test_defaults_come_from_the_model_folder(tmp_path):
    """A folder's llmcxr_generation.json sets what the Python API, the CLI and the server use when the
    caller gives no value: the same guidance, sampling and therefore the same image tokens in all three."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from llmcxr.cli import app
    from llmcxr.model import GenerationDefaults

    folder = tiny_llmcxr_folder(tmp_path / "m", REPORTS * 5)
    GenerationDefaults(image_guidance_scale=2.0, report_guidance_scale=1.5, top_p=0.5).save(folder)
    llm = LLMCXR.from_pretrained(folder, device="cpu", dtype=torch.float32)
    report = "Small left pleural effusion."
    drawn = llm.generate_image(report, seed=3)
    explicit = llm.generate_image(report, 2.0, seed=3, sampling=SamplingConfig(top_p=0.5))
    assert drawn.guidance_scale == 2.0 and np.array_equal(drawn.image_tokens, explicit.image_tokens)
    assert not np.array_equal(drawn.image_tokens, llm.generate_image(report, 1.0, seed=3).image_tokens)

    args = [
        "image",
        report,
        "--model",
        str(folder),
        "--out",
        str(tmp_path / "a.png"),
        "--seed",
        "3",
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = __import__("json").loads(result.stdout)
    assert row["guidance_scale"] == 2.0 and row["image_tokens"] == drawn.image_tokens.tolist()

    with TestClient(build_app(ServeConfig(model=folder, ui=False), model=llm)) as client:
        reply = client.post("/v1/image", json={"report": report, "seed": 3})
    assert reply.status_code == 200
    served = np.asarray(Image.open(io.BytesIO(reply.content)))
    assert np.array_equal(served, np.asarray(drawn.image))
