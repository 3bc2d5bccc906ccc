"""The one image normalisation of llmcxr: pixels in [0, 1] -> a (1, size, size) tensor in [-1, 1].

As LLM-CXR (Lee et al., ICLR 2024) prepares MIMIC-CXR for its VQ-GAN: shortest side resized to
the target with Lanczos, centre crop to a square, intensities scaled to [-1, 1], one channel.

Two pixel pipelines (``VQConfig.preprocessing`` says which one a VQ-GAN was trained on):
- ``llmcxr`` (ours, ``preprocess``): Lanczos on 32-bit floats, so 16-bit PNG and DICOM keep their
  precision; large JPEGs decoded at a reduced DCT scale first (``load_cxr``), for speed; the crop
  offset rounded down. Our VQ-GANs are trained and encoded this way, so it stays as it is.
- ``official`` (``preprocess_official``): what the published LLM-CXR code does (hyn2028/llm-cxr
  ``encode_cxr_all.py`` and its demo): the JPEG decoded in full, 8-bit pixels, Lanczos on 8 bits,
  the crop placed as torchvision's ``center_crop`` places it (offsets rounded, half to even). A
  converted official VQ-GAN is given these, so its codes are the ones the published LM was trained on.
  Where it still differs, on purpose: 16-bit input is scaled to 8 bits by its full range (the original
  would clip it), and a colour image becomes gray by ITU-R 601 luma instead of feeding the VQ-GAN three
  different channels (CXRs are gray; gray copied to 3 channels is what the folded VQ-GAN computes).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from llmcxr.errors import BadInputError


def resize_shortest_side(pixels: np.ndarray, size: int) -> np.ndarray:
    """float32 (H, W) -> float32 (h, w) with min(h, w) == size, Lanczos, aspect ratio kept.

    Resampling runs on PIL's 32-bit float mode "F", so 16-bit and DICOM precision survives.
    """
    height, width = pixels.shape
    scale = size / min(height, width)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_width, new_height) == (width, height):
        return pixels
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((new_width, new_height), Image.Resampling.LANCZOS), dtype=np.float32)


def center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W) with H, W >= size -> the central (size, size) square."""
    height, width = pixels.shape
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[top : top + size, left : left + size]


def preprocess(pixels: np.ndarray, size: int) -> torch.Tensor:
    """float32 (H, W) in [0, 1] -> float32 tensor (1, size, size) in [-1, 1]."""
    if pixels.ndim != 2:
        raise BadInputError("<pixels>", f"expected (H, W) pixels, got shape {pixels.shape}", "use load_image")
    square = center_crop(resize_shortest_side(pixels, size), size)
    # Lanczos overshoots at sharp edges (its kernel has negative lobes): clip back into [0, 1].
    unit = np.clip(square, 0.0, 1.0)
    return torch.from_numpy(unit.copy()).mul_(2.0).sub_(1.0).unsqueeze(0)


PIXEL_PIPELINES = ("llmcxr", "official")


def preprocess_official(pixels: np.ndarray, size: int) -> torch.Tensor:
    """float32 (H, W) in [0, 1] -> (1, size, size) in [-1, 1] as the published LLM-CXR prepares an
    image: 8-bit gray, both sides resized to ``round(side * size / shortest)`` with PIL's 8-bit Lanczos,
    then torchvision's centre crop (top = ``int(round((h - size) / 2))``)."""
    if pixels.ndim != 2:
        raise BadInputError("<pixels>", f"expected (H, W) pixels, got shape {pixels.shape}", "use load_image")
    height, width = pixels.shape
    gray = Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8))  # mode "L"
    scale = size / min(height, width)
    resized = gray.resize((round(scale * width), round(scale * height)), Image.Resampling.LANCZOS)
    unit = np.asarray(resized, dtype=np.float32) / np.float32(255.0)  # torchvision ToTensor
    new_height, new_width = unit.shape
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    square = unit[top : top + size, left : left + size]
    return torch.from_numpy(square.copy()).mul_(2.0).sub_(1.0).unsqueeze(0)


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """Tensor in [-1, 1] (any shape) -> the same in [0, 1], clamped."""
    return ((image.detach().float() + 1.0) / 2.0).clamp_(0.0, 1.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (1, H, W) or (H, W) tensor in [-1, 1] -> an 8-bit grayscale PIL image (mode "L")."""
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 2:
        raise ValueError(f"to_pil expects (1, H, W) or (H, W), got {tuple(image.shape)}")
    pixels = to_unit(image.cpu()).mul_(255.0).round_().to(torch.uint8).numpy()
    return Image.fromarray(pixels)  # uint8 (H, W) -> mode "L"
