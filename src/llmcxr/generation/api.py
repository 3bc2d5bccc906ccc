"""The Python face of a trained model: reports from CXRs, CXRs from reports, VQA, text chat.

    from llmcxr.generation import LLMCXR
    model = LLMCXR.from_pretrained("runs/tiny-cpu/run/model")
    model.report("cxr.png").text
    model.generate_image("Small left pleural effusion.", guidance_scale=2.0, n=4)[0].image.save("a.png")
    model.generate_image("Small left pleural effusion.", candidates=4).image  # best of 4 draws
    model.answer("cxr.png", "Is there cardiomegaly?").text
    model.chat("Name three causes of cardiomegaly.").text

Every method takes one input (returns one result) or a list (returns a list); lists run in batches
of ``batch_size`` with left padding and a KV cache (``decode.py``). Prompts are built by
``llmcxr.prompt.encode_parts``, so user text can never become a control or image token.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from llmcxr.errors import BadInputError
from llmcxr.generation.constraints import ImageTokenConstraint, SpecialIds, TextOnlyConstraint
from llmcxr.generation.context import check_fits, fit_text_reply, max_positions, warn_if_cut
from llmcxr.generation.decode import DecodeOutput, SamplingConfig, decode
from llmcxr.generation.devices import default_device, default_dtype
from llmcxr.generation.guidance import Guidance, unconditional_parts
from llmcxr.generation.likelihood import response_log_likelihood
from llmcxr.generation.results import ImageResult, TextResult, Timings
from llmcxr.imaging import load_cxr, to_pil
from llmcxr.model import LLMCXRFolder, load_llmcxr_folder
from llmcxr.model.folder import trained_only_on_synthetic
from llmcxr.prompt import (
    IMAGE_PLACEHOLDER,
    PromptParts,
    encode_parts,
    image_response_frame,
    phrasings_for,
)

Progress = Callable[[int], None]  # called with the number of inputs finished after each batch


def _as_list(value: Any) -> tuple[list[Any], bool]:
    """(items, was_single): one input (str, Path, PIL, array) or a list/tuple of them."""
    if isinstance(value, (list, tuple)):
        return list(value), False
    return [value], True


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class LLMCXR:
    """A language model with image tokens plus its VQ-GAN, ready to generate."""

    def __init__(self, loaded: LLMCXRFolder, vq=None) -> None:
        self.folder = loaded.folder
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.image_tokens = loaded.image_tokens
        self.train_config = loaded.train_config  # the recipe it was trained with ({} if unknown)
        # its recipe names synthetic worlds only: its output for a real CXR is not a medical reading
        self.synthetic_only = trained_only_on_synthetic(self.train_config)
        self.defaults = loaded.generation  # the folder's recommended settings: used where a call gives none
        phrasings = phrasings_for(self.image_tokens.prompt_layout)
        self.report_instruction = self.defaults.report_instruction or phrasings["report_generation"][0]
        self.image_instruction = self.defaults.image_instruction or phrasings["image_generation"][0]
        self.special = SpecialIds.from_tokenizer(self.tokenizer, self.image_tokens.prompt_layout)
        # what the prompt layout writes around an image block in a response (forced when drawing)
        self.image_opening, self.image_closing = image_response_frame(self.tokenizer, self.image_tokens)
        self.vq = vq
        if vq is not None and (
            vq.cfg.codebook_size != self.image_tokens.codebook_size
            or vq.cfg.num_tokens != self.image_tokens.tokens_per_image
        ):
            raise BadInputError(
                self.folder,
                f"VQ-GAN ({vq.cfg.codebook_size} codes, {vq.cfg.num_tokens} tokens) does not match the "
                f"image tokens ({self.image_tokens.codebook_size} codes, {self.image_tokens.tokens_per_image})",
                "export the model with the VQ-GAN its token store was made with",
            )

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> LLMCXR:
        """Load a model folder (``llmcxr.model.save_llmcxr_folder``); the VQ-GAN from its ``vq/``.

        ``device`` defaults to CUDA when present; ``dtype`` to ``default_dtype(device)``.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise BadInputError(folder, "model folder not found", "give the folder `llmcxr train` wrote")
        device = str(device or default_device())
        loaded = load_llmcxr_folder(folder, device=device, dtype=dtype or default_dtype(device))
        vq = loaded.load_vq(device) if loaded.vq_folder is not None else None
        return cls(loaded, vq)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def default_sampling(self) -> SamplingConfig:
        """Sampling as the model folder recommends (``llmcxr.model.GenerationDefaults``)."""
        d = self.defaults
        return SamplingConfig(do_sample=d.do_sample, temperature=d.temperature, top_p=d.top_p, top_k=d.top_k)

    # --- pieces -------------------------------------------------------------------------------

    def _require_vq(self):
        if self.vq is None:
            raise BadInputError(
                self.folder, "has no vq/ subfolder (VQ-GAN)", "export the model with its VQ-GAN"
            )
        return self.vq

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Image sources (paths, PIL, numpy, DICOM) -> VQ codes (B, tokens_per_image) int64."""
        vq = self._require_vq()
        size, pipeline = vq.cfg.resolution, vq.cfg.preprocessing
        pixels = torch.stack([load_cxr(image, size, pipeline=pipeline) for image in images]).to(self.device)
        return vq.encode(pixels).reshape(len(images), -1).cpu().numpy()

    @torch.no_grad()
    def render(self, image_tokens: np.ndarray) -> list[Image.Image]:
        """VQ codes (B, g, g) -> PIL images (mode "L")."""
        codes = torch.as_tensor(image_tokens, dtype=torch.long, device=self.device)
        return [to_pil(image.cpu()) for image in self._require_vq().decode(codes)]

    def prompt_ids(self, parts: PromptParts, image_codes: np.ndarray | None = None) -> list[int]:
        """Token ids of a generation prompt; ``image_codes`` fill the ``<image>`` input."""
        field = "input" if image_codes is not None else None
        return encode_parts(parts, self.tokenizer, self.image_tokens, image_codes, field).input_ids

    def report_log_likelihood(
        self,
        image_tokens: np.ndarray,
        reports: Sequence[str],
        instruction: str | None = None,
        batch_size: int = 16,
    ) -> np.ndarray:
        """log p(report | image) for each pair: how likely the model's CXR -> report direction finds
        ``reports[i]`` (and the ``### End`` after it) as the report of the image with VQ codes
        ``image_tokens[i]`` ((B, g, g) or (B, tokens_per_image); ``encode_images`` gives them)."""
        parts = [PromptParts(instruction or self.report_instruction, IMAGE_PLACEHOLDER, r) for r in reports]
        return self._response_log_likelihood(parts, image_tokens, "input", batch_size)

    def image_log_likelihood(
        self,
        image_tokens: np.ndarray,
        reports: Sequence[str],
        instruction: str | None = None,
        batch_size: int = 16,
    ) -> np.ndarray:
        """log p(image | report) for each pair: how likely the model's report -> CXR direction finds the
        image with VQ codes ``image_tokens[i]`` (and the ``### End`` after it) as the picture of
        ``reports[i]``. The reverse of ``report_log_likelihood``."""
        parts = [PromptParts(instruction or self.image_instruction, r, IMAGE_PLACEHOLDER) for r in reports]
        return self._response_log_likelihood(parts, image_tokens, "response", batch_size)

    def _response_log_likelihood(
        self, parts: list[PromptParts], image_tokens: np.ndarray, image_field: str, batch_size: int
    ) -> np.ndarray:
        """Teacher-forced log p(response | prompt) of each of ``parts``, its ``<image>`` (in
        ``image_field``) filled with the codes ``image_tokens[i]``."""
        codes = np.asarray(image_tokens).reshape(len(parts), -1)
        examples = [
            encode_parts(p, self.tokenizer, self.image_tokens, c, image_field)
            for p, c in zip(parts, codes, strict=True)
        ]
        lengths = [len(e.input_ids) for e in examples]
        check_fits("report", lengths, 0, max_positions(self.model), "its image and report")
        return response_log_likelihood(self.model, examples, self.special.pad, batch_size)

    def _text(
        self,
        prompts: list[list[int]],
        sampling: SamplingConfig,
        seeds: list[int],
        guidance: Guidance | None = None,
    ) -> DecodeOutput:
        constraint = TextOnlyConstraint(self.image_tokens, self.special)
        limit = max_positions(self.model)
        reply = fit_text_reply("prompt", prompts, sampling.max_new_tokens, limit)
        out = decode(
            self.model,
            prompts,
            self.special,
            [constraint],
            replace(sampling, max_new_tokens=reply),
            seeds=seeds,
            guidance=guidance,
        )
        warn_if_cut(out.new_tokens, out.stopped, reply, sampling.max_new_tokens, limit)
        return out

    def _text_results(
        self, out: DecodeOutput, parts: list[PromptParts], timings: Timings
    ) -> list[TextResult]:
        timings.prefill_s, timings.decode_s, timings.new_tokens = (
            out.prefill_s,
            out.decode_s,
            sum(out.new_tokens),
        )
        texts = [self.tokenizer.decode(ids, clean_up_tokenization_spaces=False).strip() for ids in out.tokens]
        return [
            TextResult(t, p, s, timings, tokens=list(ids))
            for t, p, s, ids in zip(texts, parts, out.stopped, out.tokens, strict=True)
        ]

    def _run_text(
        self,
        parts: list[PromptParts],
        images: list[Any] | None,
        sampling: SamplingConfig | None,
        batch_size: int,
        progress: Progress | None,
        guidance_scale: float = 1.0,
        candidates: int = 1,
    ) -> list[TextResult]:
        """Row i samples with seed ``sampling.seed + i``; with k candidates, its draft c with seed
        ``(sampling.seed + i) * k + c`` and the best draft by ``_best_reports`` is kept."""
        sampling = sampling or self.default_sampling()
        results: list[TextResult] = []
        for rows in _chunks(len(parts), max(1, batch_size // candidates)):
            start = time.perf_counter()
            codes = self.encode_images([images[i] for i in rows]) if images is not None else None
            # the row (its position in rows) each draft is for
            draws = [k for k in range(len(rows)) for _ in range(candidates)]
            prompts = [self.prompt_ids(parts[rows[k]], None if codes is None else codes[k]) for k in draws]
            guidance = None
            if guidance_scale != 1.0:  # each row's twin: its instruction with no image
                twins = [self.prompt_ids(unconditional_parts(parts[rows[k]].instruction)) for k in draws]
                guidance = Guidance(twins, guidance_scale)
            timings = Timings(len(rows), prepare_s=time.perf_counter() - start)
            seeds = [(sampling.seed + i) * candidates + c for i in rows for c in range(candidates)]
            out = self._text(prompts, sampling, seeds, guidance)
            drafts = self._text_results(out, [parts[rows[k]] for k in draws], timings)
            if candidates > 1:
                start = time.perf_counter()
                drafts = self._best_reports(drafts, codes, candidates)
                timings.rerank_s = time.perf_counter() - start
            results += drafts
            if progress is not None:
                progress(len(rows))
        return results

    def _best_reports(self, drafts: list[TextResult], codes: np.ndarray, candidates: int) -> list[TextResult]:
        """rows * k drafts -> each row's draft under which the model finds its image most likely
        (log p(image | report)). Empty drafts are not scored; a row with only empty drafts keeps its first."""
        scores = np.full(len(drafts), -np.inf)
        scored = [d for d, draft in enumerate(drafts) if draft.text]
        if scored:
            scores[scored] = self.image_log_likelihood(
                codes[[d // candidates for d in scored]], [drafts[d].text for d in scored]
            )
        scores = scores.reshape(-1, candidates)
        best = scores.argmax(axis=1)
        return [
            replace(
                drafts[row * candidates + b],
                candidates=candidates,
                image_log_likelihood=float(scores[row, b]) if np.isfinite(scores[row, b]) else None,
            )
            for row, b in enumerate(best)
        ]

    # --- the four tasks -----------------------------------------------------------------------

    def report(
        self,
        images: Any,
        instruction: str | None = None,
        sampling: SamplingConfig | None = None,
        batch_size: int = 16,
        progress: Progress | None = None,
        guidance_scale: float | None = None,
        candidates: int = 1,
    ) -> TextResult | list[TextResult]:
        """CXR -> report. ``images``: one image source or a list of them. ``instruction``, ``sampling``
        and ``guidance_scale`` default to the model folder's recommendation (``self.defaults``).

        ``guidance_scale`` s > 1 applies classifier-free guidance against the same prompt with no
        image: words the image makes more likely than the average report get weight s. It needs a
        model trained with ``unconditional_report_fraction`` > 0 (otherwise the no-image prompt is
        one it never saw).

        ``candidates`` k > 1 samples k drafts per image and keeps the one under which the model's own
        report -> CXR direction finds the image most likely (``image_log_likelihood``): a draft that
        leaves out a finding the image shows explains the image worse. The mirror of
        ``generate_image(..., candidates=k)``; it needs sampling and costs about k times the time."""
        sampling = sampling or self.default_sampling()
        if guidance_scale is None:
            guidance_scale = self.defaults.report_guidance_scale
        if candidates < 1:
            raise BadInputError("candidates", f"must be at least 1, got {candidates}")
        if candidates > 1 and not sampling.do_sample:
            raise BadInputError(
                "candidates", f"{candidates} greedy drafts are all the same report", "sample (top-p) instead"
            )
        if (
            guidance_scale != 1.0
            and self.train_config
            and not self.train_config.get("unconditional_report_fraction")
        ):
            warnings.warn(
                f"{self.folder} was trained without unconditional_report_fraction: the no-image prompt "
                "that report guidance contrasts with is one it never saw",
                stacklevel=2,
            )
        items, single = _as_list(images)
        parts = [PromptParts(instruction or self.report_instruction, IMAGE_PLACEHOLDER) for _ in items]
        results = self._run_text(parts, items, sampling, batch_size, progress, guidance_scale, candidates)
        return results[0] if single else results

    def answer(
        self,
        images: Any,
        questions: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        batch_size: int = 16,
        progress: Progress | None = None,
    ) -> TextResult | list[TextResult]:
        """VQA: the question is the instruction and the CXR the input (as in training).

        One image and one question, or lists of equal length, or a list of images and one question."""
        items, single = _as_list(images)
        asked, single_question = _as_list(questions)
        if single_question:
            asked = asked * len(items)
        if len(asked) != len(items):
            raise BadInputError(
                "questions", f"{len(asked)} questions for {len(items)} images", "give one per image"
            )
        parts = [PromptParts(q, IMAGE_PLACEHOLDER) for q in asked]
        results = self._run_text(parts, items, sampling, batch_size, progress)
        return results[0] if single and single_question else results

    def chat(
        self,
        instructions: str | Sequence[str],
        input: str | None = None,
        sampling: SamplingConfig | None = None,
        batch_size: int = 16,
        progress: Progress | None = None,
    ) -> TextResult | list[TextResult]:
        """A plain Dolly instruction (with an optional ``Input:`` context); never emits image tokens."""
        items, single = _as_list(instructions)
        parts = [PromptParts(text, input) for text in items]
        results = self._run_text(parts, None, sampling, batch_size, progress)
        return results[0] if single else results

    def generate_image(
        self,
        reports: str | Sequence[str],
        guidance_scale: float | None = None,
        n: int = 1,
        seed: int = 0,
        sampling: SamplingConfig | None = None,
        instruction: str | None = None,
        batch_size: int = 16,
        progress: Progress | None = None,
        candidates: int = 1,
    ) -> ImageResult | list[ImageResult]:
        """Report -> CXR: ``n`` images per report, each exactly ``tokens_per_image`` tokens.

        Image j of report i is row ``i * n + j`` and samples with seed ``seed + i * n + j``, whatever
        ``batch_size`` is. ``guidance_scale`` s > 1 applies classifier-free guidance (``guidance.py``).

        ``candidates`` k > 1 makes each image the best of k draws (row seed s: draw c samples with
        seed ``s * k + c``): the one whose codes make the report most likely under the model's own
        CXR -> report direction (``report_log_likelihood``), so the model checks its drawing by
        reading it. It needs sampling (greedy draws k equal images) and costs about k times the
        time; a row with an empty report keeps its first draw (there is nothing to check).
        Returns one result for one report with n = 1, else a list in row order.
        """
        self._require_vq()
        items, single = _as_list(reports)
        if n < 1:
            raise BadInputError("n", f"must be at least 1, got {n}")
        if candidates < 1:
            raise BadInputError("candidates", f"must be at least 1, got {candidates}")
        sampling = replace(sampling or self.default_sampling(), seed=seed)
        if guidance_scale is None:
            guidance_scale = self.defaults.image_guidance_scale
        if candidates > 1 and not sampling.do_sample:
            raise BadInputError(
                "candidates", f"{candidates} greedy draws are all the same image", "sample (top-p) instead"
            )
        instruction = instruction or self.image_instruction
        texts = [report for report in items for _ in range(n)]
        uncond = self.prompt_ids(unconditional_parts(instruction))
        image_reply = len(self.image_opening) + self.image_tokens.block_length + len(self.image_closing)
        check_fits(  # every report once, before any is drawn
            "report",
            [len(self.prompt_ids(PromptParts(instruction, report))) for report in items],
            image_reply,
            max_positions(self.model),
            f"the {image_reply} image tokens to draw",
        )
        results: list[ImageResult] = []
        for rows in _chunks(len(texts), max(1, batch_size // candidates)):
            start = time.perf_counter()
            draws = [i for i in rows for _ in range(candidates)]  # the row each draw is for
            prompts = [self.prompt_ids(PromptParts(instruction, texts[i])) for i in draws]
            guidance = Guidance([uncond] * len(draws), guidance_scale) if guidance_scale != 1.0 else None
            timings = Timings(len(rows), prepare_s=time.perf_counter() - start)
            out = decode(
                self.model,
                prompts,
                self.special,
                sampling=sampling,
                max_new_tokens=image_reply,
                guidance=guidance,
                make_processors=lambda width: [
                    ImageTokenConstraint(
                        self.image_tokens, self.special, width, self.image_opening, self.image_closing
                    )
                ],
                seeds=[(seed + i) * candidates + c for i in rows for c in range(candidates)],
            )
            timings.prefill_s, timings.decode_s, timings.new_tokens = (
                out.prefill_s,
                out.decode_s,
                sum(out.new_tokens),
            )
            g = self.vq.cfg.grid_size
            start = len(self.image_opening)
            blocks = np.asarray([t[start : start + self.image_tokens.block_length] for t in out.tokens])
            codes = self.image_tokens.block_codes(blocks.astype(np.int64)).reshape(-1, g, g)
            scores: list[float | None] = [None] * len(rows)
            if candidates > 1:
                start = time.perf_counter()
                codes, scores = self._best_draws(codes, [texts[i] for i in rows], candidates)
                timings.rerank_s = time.perf_counter() - start
            start = time.perf_counter()
            images = self.render(codes)
            timings.render_s = time.perf_counter() - start
            results += [
                ImageResult(
                    image, codes[k], texts[i], seed + i, guidance_scale, timings, candidates, scores[k]
                )
                for k, (i, image) in enumerate(zip(rows, images, strict=True))
            ]
            if progress is not None:
                progress(len(rows))
        return results[0] if single and n == 1 else results

    def _best_draws(
        self, codes: np.ndarray, reports: list[str], candidates: int
    ) -> tuple[np.ndarray, list[float | None]]:
        """(rows * candidates, g, g) draws -> each row's draw of highest log p(report | image), and that score.
        A row with an empty report has nothing to score its draws by: it keeps its first, unscored."""
        draws = codes.reshape(len(reports), candidates, *codes.shape[1:])
        best = np.zeros(len(reports), dtype=np.int64)
        scores: list[float | None] = [None] * len(reports)
        scored = [k for k, report in enumerate(reports) if report]
        if scored:
            likelihood = self.report_log_likelihood(
                draws[scored].reshape(-1, *codes.shape[1:]),
                [reports[k] for k in scored for _ in range(candidates)],
            ).reshape(len(scored), candidates)
            for row, k in enumerate(scored):
                best[k] = likelihood[row].argmax()
                scores[k] = float(likelihood[row, best[k]])
        return draws[np.arange(len(reports)), best], scores
