"""The web app (Gradio Blocks at /): CXR -> report, report -> CXR, VQA, text chat.

Every button submits to the same model worker as the REST API and waits on its Future, showing the
queue position and then the work in progress. Uploads go through ``uploads.read_upload_file`` (the
project's loader and limits). The app serves only its own temporary files and the example folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from llmcxr.errors import BadInputError
from llmcxr.serve.examples import INSTRUCTIONS, QUESTIONS
from llmcxr.serve.service import GUIDANCE_RANGE, MAX_CANDIDATES, Service
from llmcxr.serve.uploads import UPLOAD_SUFFIXES, Upload
from llmcxr.serve.worker import QueueFull

VIEW_SIDE = 256  # px: generated images are upscaled (nearest neighbour) to this for viewing
INTRO = """# LLM-CXR: one model that reads and draws chest X-rays
Model **{model}** on **{device}**. A research demo, not for clinical use.
The same server answers a REST API: [API docs](/docs).
"""


def _view(image: Image.Image) -> Image.Image:
    scale = max(1, VIEW_SIDE // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _file_path(upload: Any) -> str:
    if upload is None:
        raise gr.Error("Upload a chest X-ray first (PNG, JPEG or DICOM), or pick an example below.")
    return upload if isinstance(upload, str) else upload.name


def _caption(result) -> str:  # an ImageResult
    best_of = f", best of {result.candidates}" if result.candidates > 1 else ""
    return f"seed {result.seed}, guidance {result.guidance_scale:g}{best_of}"


class UI:
    """The handlers behind the web app's buttons."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def _submit(self, submit: Callable[[], Future]) -> Future:
        try:
            return submit()
        except QueueFull as err:
            raise gr.Error(f"The server is busy ({err}); try again in a few seconds.") from None
        except BadInputError as err:
            raise gr.Error(str(err)) from None

    def _wait(self, future: Future, progress: gr.Progress, working: Callable[[], tuple[float, str]]) -> Any:
        """Poll the Future, showing the queue while it waits and ``working()`` while it runs."""
        deadline = time.monotonic() + self.service.config.timeout_s
        while True:
            try:
                return future.result(timeout=0.2)
            except FutureTimeout:
                if time.monotonic() > deadline:
                    future.cancel()
                    raise gr.Error(
                        f"No result within {self.service.config.timeout_s:g} s; the server is busy."
                    ) from None
                if future.running():
                    progress(*working())
                else:
                    progress(0.0, desc=f"waiting for the model ({self.service.worker.depth} requests queued)")
            except BadInputError as err:
                raise gr.Error(str(err)) from None

    def _upload(self, upload: Any) -> Upload:
        """Decoded later on the model worker, like a REST upload (one decode at a time, time-limited)."""
        path = _file_path(upload)
        return Upload(path.rsplit("/", 1)[-1], path=path)

    def preview(self, upload: Any, progress: gr.Progress = gr.Progress()) -> Image.Image | None:
        """The uploaded image as the loader reads it (DICOM windowed), shown before generating."""
        if upload is None:
            return None
        future = self._submit(lambda: self.service.decode(self._upload(upload)))
        pixels = self._wait(future, progress, lambda: (0.5, "reading the image"))
        return Image.fromarray((pixels * 255).round().astype(np.uint8))

    @staticmethod
    def _with_notes(reply) -> str:  # an ImageReply: a stated lateral view is said above the text
        return "".join(f"[{note}]\n\n" for note in reply.notes) + reply.text

    def report(
        self, upload: Any, seed: float, guidance_scale: float = 1.0, progress: gr.Progress = gr.Progress()
    ) -> str:
        image = self._upload(upload)
        future = self._submit(
            lambda: self.service.report(image, int(seed), guidance_scale=float(guidance_scale))
        )
        return self._with_notes(self._wait(future, progress, lambda: (0.5, "writing the report")))

    def answer(self, upload: Any, question: str, seed: float, progress: gr.Progress = gr.Progress()) -> str:
        image = self._upload(upload)
        future = self._submit(lambda: self.service.answer(image, question, int(seed)))
        return self._with_notes(self._wait(future, progress, lambda: (0.5, "answering")))

    def chat(self, instruction: str, context: str, seed: float, progress: gr.Progress = gr.Progress()) -> str:
        future = self._submit(lambda: self.service.chat(instruction, context, int(seed)))
        return self._wait(future, progress, lambda: (0.5, "writing")).text

    def image(
        self,
        report: str,
        guidance_scale: float,
        samples: float,
        seed: float,
        greedy: bool,
        candidates: float = 1,
        progress: gr.Progress = gr.Progress(),
    ) -> list[tuple[Image.Image, str]]:
        n, done = int(samples), [0]

        def advance(finished: int) -> None:  # called on the worker thread after each batch
            done[0] += finished

        future = self._submit(
            lambda: self.service.image(
                report, float(guidance_scale), n, int(seed), bool(greedy), advance, int(candidates)
            )
        )
        results = self._wait(future, progress, lambda: (done[0] / n, f"drawing {n} image(s): {done[0]} done"))
        return [(_view(r.image), _caption(r)) for r in results]


def build_ui(service: Service) -> gr.Blocks:
    ui = UI(service)
    examples = service.examples
    files = gr.File  # one upload widget kind for all image inputs: PNG, JPEG and DICOM alike
    defaults = service.model.defaults  # the model folder's recommended guidance sets the sliders
    # Uploads and outputs older than upload_max_age_s are deleted (checked at a fifth of that age): they
    # would otherwise stay until shutdown (20 x 19 MB did, issue 24); RequestGuard bounds their total.
    age = service.config.upload_max_age_s
    with gr.Blocks(title="llmcxr", analytics_enabled=False, delete_cache=(max(1, age // 5), age)) as blocks:
        gr.Markdown(INTRO.format(model=service.model_name, device=service.model.device))
        with gr.Tabs():
            with gr.Tab("CXR → report", id="report"):
                with gr.Row():
                    with gr.Column():
                        upload = files(
                            label="Chest X-ray (PNG, JPEG or DICOM)",
                            file_types=list(UPLOAD_SUFFIXES),
                            type="filepath",
                            elem_id="report-upload",
                        )
                        preview = gr.Image(
                            label="As the model reads it",
                            interactive=False,
                            height=256,
                            elem_id="report-preview",
                        )
                        seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                        # 1 = none; above 1 needs a model trained with image dropout
                        report_guidance = gr.Slider(
                            *GUIDANCE_RANGE,
                            value=defaults.report_guidance_scale,
                            step=0.5,
                            label="Guidance (against no image)",
                        )
                        button = gr.Button("Write report", variant="primary", elem_id="report-button")
                    report_out = gr.Textbox(label="Report", lines=10, elem_id="report-output")
                upload.change(ui.preview, upload, preview)
                button.click(ui.report, [upload, seed, report_guidance], report_out)
                gr.Examples([[str(e.image)] for e in examples], [upload], label="Example CXRs (synthetic)")

            with gr.Tab("Report → CXR", id="image"):
                with gr.Row():
                    with gr.Column():
                        report_in = gr.Textbox(label="Report", lines=6, elem_id="image-report")
                        guidance = gr.Slider(
                            *GUIDANCE_RANGE,
                            value=defaults.image_guidance_scale,
                            step=0.5,
                            label="Guidance scale (1 = none)",
                        )
                        samples = gr.Slider(1, service.config.max_samples, value=2, step=1, label="Samples")
                        image_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                        greedy = gr.Checkbox(False, label="Greedy (one most likely image; ignores the seed)")
                        candidates = gr.Slider(
                            1,
                            MAX_CANDIDATES,
                            value=1,
                            step=1,
                            label="Best of (draws per image, kept by how well the model reads its report back)",
                        )
                        draw = gr.Button("Draw", variant="primary", elem_id="image-button")
                    gallery = gr.Gallery(
                        label="Generated CXRs", columns=4, object_fit="contain", elem_id="image-gallery"
                    )
                draw.click(ui.image, [report_in, guidance, samples, image_seed, greedy, candidates], gallery)
                gr.Examples([[e.report] for e in examples], [report_in], label="Example reports")

            with gr.Tab("Visual question answering", id="vqa"):
                with gr.Row():
                    with gr.Column():
                        vqa_upload = files(
                            label="Chest X-ray", file_types=list(UPLOAD_SUFFIXES), type="filepath"
                        )
                        question = gr.Textbox(label="Question", lines=2)
                        vqa_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                        ask = gr.Button("Answer", variant="primary")
                    answer_out = gr.Textbox(label="Answer", lines=4)
                ask.click(ui.answer, [vqa_upload, question, vqa_seed], answer_out)
                gr.Examples(
                    [[str(e.image), q] for e, q in zip(examples, QUESTIONS, strict=False)],
                    [vqa_upload, question],
                    label="Examples",
                )

            with gr.Tab("Text instruction", id="chat"):
                gr.Markdown(f"Answered by **{service.health()['chat_model']}**.")
                with gr.Row():
                    with gr.Column():
                        instruction = gr.Textbox(label="Instruction", lines=3)
                        context = gr.Textbox(label="Input (optional context)", lines=3)
                        chat_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                        send = gr.Button("Send", variant="primary")
                    reply = gr.Textbox(label="Response", lines=8)
                send.click(ui.chat, [instruction, context, chat_seed], reply)
                gr.Examples([[i] for i in INSTRUCTIONS], [instruction], label="Examples")
    # Events past the limit wait in Gradio's own queue (position shown); up to this many wait on the worker.
    blocks.queue(max_size=service.config.max_queue, default_concurrency_limit=8)
    return blocks


def mount_ui(app, service: Service, examples_dir: str):
    """Mount the web app at / on ``app``; it may serve its own temp files and ``examples_dir`` only."""
    return gr.mount_gradio_app(
        app,
        build_ui(service),
        path="/",
        allowed_paths=[examples_dir],
        max_file_size=service.config.max_request_bytes,
        footer_links=[],
        run_history=False,
        show_error=True,
        mcp_server=False,
    )
