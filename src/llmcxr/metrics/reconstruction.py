"""Image reconstruction quality: PSNR and SSIM (torchmetrics), the one implementation llmcxr uses.

Convention, stated once: both images are first mapped from their value range ((-1, 1) for llmcxr
tensors, (0, 1) for plain pixels) onto [0, 1] and clamped, then scored with ``data_range=1.0``.
PSNR is computed per image and averaged over images (not over the pooled pixels of a set); SSIM is
the Gaussian-window SSIM of Wang et al. 2004 (11x11, sigma 1.5, k1 0.01, k2 0.03) per image, averaged.
Scores are on float images, before any 8-bit rounding.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

ValueRange = tuple[float, float]
SIGNED: ValueRange = (-1.0, 1.0)
"""The value range of llmcxr image tensors (``llmcxr.imaging.preprocess``, ``VQGAN.decode``)."""


def to_unit_range(images: torch.Tensor, value_range: ValueRange = SIGNED) -> torch.Tensor:
    """Images in ``value_range`` -> float32 in [0, 1], clamped."""
    low, high = value_range
    return ((images.detach().float() - low) / (high - low)).clamp(0.0, 1.0)


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    """(H, W), (C, H, W) or (B, C, H, W) -> (B, C, H, W)."""
    while images.dim() < 4:
        images = images.unsqueeze(0)
    return images


def per_image_scores(
    original: torch.Tensor, reconstruction: torch.Tensor, value_range: ValueRange = SIGNED
) -> dict[str, torch.Tensor]:
    """PSNR (dB) and SSIM of each image pair: ``{"psnr": (B,), "ssim": (B,)}`` for (B, C, H, W) inputs."""
    if original.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {tuple(original.shape)} vs {tuple(reconstruction.shape)}")
    target = to_unit_range(_as_batch(original), value_range)
    preds = to_unit_range(_as_batch(reconstruction), value_range)
    psnr = peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(preds, target, data_range=1.0, reduction="none")
    return {"psnr": psnr.reshape(-1), "ssim": ssim.reshape(-1)}


def reconstruction_scores(
    original: torch.Tensor, reconstruction: torch.Tensor, value_range: ValueRange = SIGNED
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over a batch of image pairs, plus the image count."""
    scores = ReconstructionScores(value_range)
    scores.update(original, reconstruction)
    return scores.compute()


class ReconstructionScores:
    """Accumulates per-image PSNR/SSIM over batches; ``compute()`` gives the means over all images."""

    def __init__(self, value_range: ValueRange = SIGNED) -> None:
        self.value_range = value_range
        self.psnr: list[torch.Tensor] = []
        self.ssim: list[torch.Tensor] = []

    def update(self, original: torch.Tensor, reconstruction: torch.Tensor) -> None:
        """Add a batch: (B, C, H, W) (or fewer leading dims) in ``value_range``."""
        scores = per_image_scores(original, reconstruction, self.value_range)
        self.psnr.append(scores["psnr"].cpu())
        self.ssim.append(scores["ssim"].cpu())

    def compute(self) -> dict[str, float]:
        """``{"psnr": mean dB, "ssim": mean, "psnr_std": ..., "ssim_std": ..., "n_images": N}``."""
        if not self.psnr:
            return {
                "psnr": float("nan"),
                "ssim": float("nan"),
                "psnr_std": float("nan"),
                "ssim_std": float("nan"),
                "n_images": 0,
            }
        psnr, ssim = torch.cat(self.psnr).double(), torch.cat(self.ssim).double()
        return {
            "psnr": float(psnr.mean()),
            "ssim": float(ssim.mean()),
            "psnr_std": float(psnr.std(unbiased=False)),
            "ssim_std": float(ssim.std(unbiased=False)),
            "n_images": int(psnr.numel()),
        }


def bicubic_baseline(images: torch.Tensor, grid_size: int, value_range: ValueRange = SIGNED) -> torch.Tensor:
    """The plain baseline a tokenizer must beat: (B, C, R, R) -> bicubic down to (grid, grid) and back.

    It keeps grid_size**2 numbers per image, as many as the tokenizer's tokens (though each a float,
    not one of K codes). Downsampling is antialiased (PIL-like); the result is clamped to
    ``value_range``. Measured on ../shared/data/cxr-real (673 images, per-image means): 256 px via
    16x16 27.0 dB / SSIM 0.751; 128 px via 16x16 27.4 dB / 0.726; 64 px via 8x8 23.8 dB / 0.629.
    """
    small = torch.nn.functional.interpolate(
        images.float(), size=(grid_size, grid_size), mode="bicubic", antialias=True
    )
    size = tuple(images.shape[-2:])
    return torch.nn.functional.interpolate(small, size=size, mode="bicubic").clamp(*value_range)
