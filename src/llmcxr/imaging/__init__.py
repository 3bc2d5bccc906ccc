"""Image input: any chest X-ray file or array -> the one normalised tensor the tokenizer reads.

``load_image`` (PNG/JPEG 8/16-bit, gray/RGB/RGBA/palette, DICOM, numpy, PIL -> float32 (H, W) in
[0, 1]), ``preprocess`` (shortest side to ``size`` with Lanczos, centre crop, [-1, 1], one channel),
``load_cxr`` (both), ``to_pil`` (back to an 8-bit image), ``list_images`` (a folder or manifest).
Every bad input raises ``llmcxr.errors.BadInputError`` naming the file and the problem.
"""

from __future__ import annotations

from typing import Any

import torch

from llmcxr.errors import BadInputError
from llmcxr.imaging.limits import ImageLimits, NonFrontalViewWarning, is_frontal
from llmcxr.imaging.listing import ImageEntry, list_images, scan_images
from llmcxr.imaging.load import ImageSource, check_image_path, load_image
from llmcxr.imaging.preprocess import PIXEL_PIPELINES, preprocess, preprocess_official, to_pil, to_unit


def load_cxr(source: ImageSource, size: int, pipeline: str = "llmcxr", **kwargs: Any) -> torch.Tensor:
    """Load and normalise one chest X-ray: float32 tensor (1, size, size) in [-1, 1].

    ``kwargs`` go to ``load_image`` (``limits``, ``frontal_only``, ``view``). ``pipeline`` is the one
    the VQ-GAN was trained on (``VQConfig.preprocessing``; ``preprocess.py`` says how they differ).
    With ours, large JPEGs are decoded at a reduced DCT scale that keeps at least twice ``size`` on the
    shortest side, then resized with Lanczos as usual: the 2x margin leaves the final Lanczos step to
    set the image's sharpness. The official pipeline decodes in full.
    """
    if pipeline not in PIXEL_PIPELINES:
        raise BadInputError(
            "preprocessing", f"unknown pixel pipeline {pipeline!r}", f"one of {PIXEL_PIPELINES}"
        )
    if pipeline == "official":
        return preprocess_official(load_image(source, **kwargs), size)
    kwargs.setdefault("draft_side", 2 * size)
    return preprocess(load_image(source, **kwargs), size)


__all__ = [
    "ImageEntry",
    "ImageLimits",
    "ImageSource",
    "NonFrontalViewWarning",
    "PIXEL_PIPELINES",
    "check_image_path",
    "is_frontal",
    "list_images",
    "load_cxr",
    "load_image",
    "preprocess",
    "preprocess_official",
    "scan_images",
    "to_pil",
    "to_unit",
]
