"""What the REST API and the web app share: the model worker, the limits, the jobs they submit.

Both front ends call these methods, so a request from the browser and one from ``curl`` wait in the
same queue and obey the same limits.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from llmcxr.errors import BadInputError
from llmcxr.generation import SamplingConfig
from llmcxr.serve.config import ServeConfig
from llmcxr.serve.examples import Example
from llmcxr.serve.uploads import Upload
from llmcxr.serve.worker import ModelWorker

GUIDANCE_RANGE = (0.0, 20.0)  # classifier-free guidance; 1 = none, LLM-CXR's figures use up to ~5
MAX_SEED = 2**31 - 1
MAX_CANDIDATES = 8  # best-of-k draws per image: k times the compute of one


@dataclass
class ImageReply:
    """A text result for an image, and what reading the image noted (a stated lateral view)."""

    result: Any  # llmcxr.generation.TextResult
    notes: list[str]

    @property
    def text(self) -> str:
        return self.result.text


@dataclass
class Service:
    config: ServeConfig
    worker: ModelWorker
    examples: list[Example]
    model_name: str
    chat_worker: ModelWorker | None = None  # ServeConfig.chat_model's worker; None: ``worker`` chats
    chat_model_name: str | None = None

    @property
    def model(self) -> Any:  # llmcxr.generation.LLMCXR
        return self.worker.model

    def health(self) -> dict[str, Any]:
        vq = self.model.vq
        return {
            "status": "ok",
            "model": self.model_name,
            "chat_model": self.chat_model_name or self.model_name,
            "device": str(self.model.device),
            "dtype": str(self.model.model.dtype).removeprefix("torch."),
            "image_size": vq.cfg.resolution if vq is not None else None,
            "queue_depth": self.worker.depth,
            "max_queue": self.config.max_queue,
            "timeout_s": self.config.timeout_s,
        }

    # --- checks ---------------------------------------------------------------------------------

    def check_text(self, field: str, text: str | None, required: bool = True) -> str:
        """Strip and bound a user's text; raises BadInputError naming the field."""
        text = (text or "").strip()
        if required and not text:
            raise BadInputError(field, "is empty", f"give the {field} text")
        if len(text) > self.config.max_text_chars:
            raise BadInputError(
                field,
                f"{len(text):,} characters is over the limit of {self.config.max_text_chars:,}",
                "shorten it",
            )
        return text

    def check_guidance(self, guidance_scale: float | None) -> float | None:
        """Bound a classifier-free guidance scale to GUIDANCE_RANGE (None: the model folder's); raises
        BadInputError."""
        low, high = GUIDANCE_RANGE
        if guidance_scale is not None and not low <= guidance_scale <= high:
            raise BadInputError("guidance_scale", f"{guidance_scale} is outside {low}..{high}")
        return guidance_scale

    def sampling(self, seed: int, greedy: bool) -> SamplingConfig:
        """The model folder's recommended sampling, with the request's seed (and greedy choice)."""
        if not 0 <= seed <= MAX_SEED:
            raise BadInputError("seed", f"{seed} is outside 0..{MAX_SEED}")
        recommended = self.model.default_sampling()
        return replace(
            recommended,
            do_sample=recommended.do_sample and not greedy,
            max_new_tokens=self.config.max_new_tokens,
            seed=seed,
        )

    def _pixels(self, image: np.ndarray | Upload, notes: list[str]) -> np.ndarray:
        """Decode an upload (on the worker: within the queue bound, one at a time, under the timeout)."""
        return image.pixels(self.config.image_limits, notes) if isinstance(image, Upload) else image

    # --- jobs (each returns the worker's Future) ----------------------------------------------------

    def decode(self, image: Upload) -> Future:
        """Future of the upload's float32 (H, W) pixels in [0, 1] (the web app's preview)."""
        return self.worker.submit(lambda model: self._pixels(image, []))

    def report(
        self,
        image: np.ndarray | Upload,
        seed: int = 0,
        greedy: bool = False,
        guidance_scale: float | None = None,
    ) -> Future:
        """Future of an ImageReply; ``guidance_scale`` > 1 contrasts with the same prompt with no image
        (the model warns, without failing, when it was trained without image dropout)."""
        guidance_scale = self.check_guidance(guidance_scale)
        sampling = self.sampling(seed, greedy)

        def job(model) -> ImageReply:
            notes: list[str] = []
            pixels = self._pixels(image, notes)
            return ImageReply(model.report(pixels, sampling=sampling, guidance_scale=guidance_scale), notes)

        return self.worker.submit(job)

    def answer(
        self, image: np.ndarray | Upload, question: str, seed: int = 0, greedy: bool = False
    ) -> Future:
        """Future of an ImageReply."""
        question = self.check_text("question", question)
        sampling = self.sampling(seed, greedy)

        def job(model) -> ImageReply:
            notes: list[str] = []
            pixels = self._pixels(image, notes)
            return ImageReply(model.answer(pixels, question, sampling=sampling), notes)

        return self.worker.submit(job)

    def chat(self, instruction: str, context: str | None, seed: int = 0, greedy: bool = False) -> Future:
        instruction = self.check_text("instruction", instruction)
        context = self.check_text("input", context, required=False) or None
        sampling = self.sampling(seed, greedy)
        worker = self.chat_worker or self.worker
        return worker.submit(lambda model: model.chat(instruction, context, sampling=sampling))

    def image(
        self,
        report: str,
        guidance_scale: float | None = None,
        n: int = 1,
        seed: int = 0,
        greedy: bool = False,
        progress: Any = None,
        candidates: int = 1,
    ) -> Future:
        """Future of a list of ``n`` ImageResults (progress: called with images finished per batch);
        ``candidates`` k > 1 makes each the best of k draws (``LLMCXR.generate_image``)."""
        report = self.check_text("report", report)
        guidance_scale = self.check_guidance(guidance_scale)
        if not 1 <= n <= self.config.max_samples:
            raise BadInputError("n", f"{n} images is outside 1..{self.config.max_samples}")
        if not 1 <= candidates <= MAX_CANDIDATES:
            raise BadInputError("candidates", f"{candidates} is outside 1..{MAX_CANDIDATES}")
        if greedy and candidates > 1:
            raise BadInputError("candidates", "greedy draws are all one image", "sample, or ask for 1")
        sampling = replace(self.sampling(seed, greedy), seed=seed)

        def job(model):
            results = model.generate_image(
                [report],
                guidance_scale,
                n,
                seed,
                sampling,
                batch_size=4 * candidates,
                progress=progress,
                candidates=candidates,
            )
            return results if isinstance(results, list) else [results]

        return self.worker.submit(job)
