"""What generation returns: a text (report, answer, reply) or an image, each with its batch's timings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from llmcxr.prompt import PromptParts


@dataclass
class Timings:
    """Wall-clock seconds of the batch a result came from (shared by the results of that batch)."""

    batch_size: int  # inputs in the batch (images generated, for generate_image)
    prepare_s: float = 0.0  # reading + VQ-encoding images, tokenizing prompts
    prefill_s: float = 0.0  # prompt forward pass
    decode_s: float = 0.0  # one-token steps
    render_s: float = 0.0  # VQ-GAN decoding of image tokens to pixels
    rerank_s: float = 0.0  # scoring candidates: images by their report's likelihood, reports by their image's
    new_tokens: int = 0  # tokens generated in the batch, stop tokens included

    @property
    def total_s(self) -> float:
        return self.prepare_s + self.prefill_s + self.decode_s + self.render_s + self.rerank_s


@dataclass
class TextResult:
    """A generated report, answer or chat reply."""

    text: str
    prompt: PromptParts  # what was asked (``<image>`` where the CXR's tokens went)
    stopped: bool  # ended with ``### End``; False = cut at max_new_tokens
    timings: Timings
    candidates: int = 1  # drafts it was chosen from (reports)
    image_log_likelihood: float | None = None  # log p(image | report) that chose it (candidates > 1)
    tokens: list[int] = field(default_factory=list)  # the generated ids, the stop token left out


@dataclass
class ImageResult:
    """A generated CXR."""

    image: Image.Image  # mode "L", the VQ-GAN's resolution
    image_tokens: np.ndarray  # (g, g) int64 VQ codes, row-major as the VQ-GAN reads them
    report: str  # the report it was generated from ("" = unconditional)
    seed: int  # the row's sampling seed: generate_image(report, n=1, seed=seed, candidates=k) redraws it
    guidance_scale: float
    timings: Timings
    candidates: int = 1  # draws it was chosen from
    report_log_likelihood: float | None = None  # log p(report | image) that chose it (candidates > 1)
