"""Vector quantizer: each latent vector becomes the index of its nearest codebook entry.

Codebook health is what matters here (every unused code is a wasted LM token), so this quantizer
combines three known fixes for codebook collapse:
- a low-dimensional lookup (`codebook_dim` ~16; `quant_conv` projects down to it) and
- l2-normalised codes looked up by cosine similarity (both: ViT-VQGAN, Yu et al. 2022, sec. 3.2),
- restarting dead codes from random encoder outputs of the current batch (Jukebox, Dhariwal et al.
  2020; Zeghidour et al. 2021), with an EMA of per-code hit counts to decide what is dead.
The codebook itself is learned by gradient with the codebook + commitment losses of VQ-VAE
(van den Oord et al. 2017), and the encoder gets gradients through the straight-through estimator.
The parameter is named `embedding.weight` as in taming-transformers, so converted checkpoints map 1:1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """(B, D, h, w) latents -> (quantized (B, D, h, w), loss (), codes (B, h, w) int64)."""

    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        commitment_weight: float = 0.25,
        l2_normalized: bool = True,
        usage_decay: float = 0.95,
        dead_code_threshold: float = 0.03,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.commitment_weight = commitment_weight
        self.l2_normalized = l2_normalized
        self.usage_decay = usage_decay
        self.dead_code_threshold = dead_code_threshold
        self.embedding = nn.Embedding(codebook_size, codebook_dim)
        if l2_normalized:
            nn.init.normal_(self.embedding.weight)
        else:  # taming's VectorQuantizer2 initialisation
            nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        # EMA of hits per code per training batch; starts at 1 so no code is "dead" before it had a chance.
        self.register_buffer("usage", torch.ones(codebook_size))

    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors as used for lookup (l2-normalised when configured)."""
        weight = self.embedding.weight.float()
        return F.normalize(weight, dim=1) if self.l2_normalized else weight

    def _prepare(self, latents_flat: torch.Tensor) -> torch.Tensor:
        return F.normalize(latents_flat, dim=1) if self.l2_normalized else latents_flat

    def nearest_codes(self, latents_flat: torch.Tensor) -> torch.Tensor:
        """(N, D) prepared latents -> (N,) int64 index of the nearest code."""
        codebook = self.codebook()
        if self.l2_normalized:  # unit vectors: nearest in L2 = largest cosine similarity
            return (latents_flat @ codebook.t()).argmax(dim=1)
        distances = (
            latents_flat.pow(2).sum(1, keepdim=True)
            - 2 * latents_flat @ codebook.t()
            + codebook.pow(2).sum(1)[None, :]
        )
        return distances.argmin(dim=1)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, dim, height, width = latents.shape
        # Lookup in fp32 even under bf16 autocast: bf16 distances would pick wrong codes.
        with torch.autocast(device_type=latents.device.type, enabled=False):
            flat = self._prepare(latents.float().permute(0, 2, 3, 1).reshape(-1, dim))  # (N, D)
            codes = self.nearest_codes(flat)  # (N,)
            quantized = self.codebook()[codes]  # (N, D)
            codebook_loss = F.mse_loss(quantized, flat.detach())
            commitment_loss = F.mse_loss(flat, quantized.detach())
            loss = codebook_loss + self.commitment_weight * commitment_loss
            quantized = flat + (quantized - flat).detach()  # straight-through estimator
            if self.training:
                self._restart_dead_codes(flat.detach(), codes)
        quantized = quantized.reshape(batch, height, width, dim).permute(0, 3, 1, 2).contiguous()
        return quantized, loss, codes.reshape(batch, height, width)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """Update hit-count EMA; move codes below the threshold onto random latents of this batch."""
        hits = torch.bincount(codes, minlength=self.codebook_size).float()
        self.usage.mul_(self.usage_decay).add_(hits, alpha=1 - self.usage_decay)
        if self.dead_code_threshold <= 0:
            return
        dead = (self.usage < self.dead_code_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        picks = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        # A little noise so that codes restarted on the same latent do not stay identical.
        fresh = flat[picks] + 0.01 * torch.randn_like(flat[picks]) * flat.std()
        self.embedding.weight.data[dead] = fresh.to(self.embedding.weight.dtype)
        self.usage[dead] = 1.0

    @torch.no_grad()
    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int64 codes -> (B, D, h, w) code vectors."""
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Usage and perplexity of codes of any shape.

    `usage` = fraction of the K codes that occur at least once; `perplexity` = exp(entropy) of the
    code histogram (K for a uniform use of all codes, 1 for a collapsed codebook).
    """
    counts = torch.bincount(codes.reshape(-1).long().cpu(), minlength=codebook_size).double()
    total = counts.sum().item()
    if total == 0:
        return {"usage": 0.0, "perplexity": 0.0, "used_codes": 0, "codebook_size": codebook_size}
    probs = counts[counts > 0] / total
    entropy = -(probs * probs.log()).sum().item()
    return {
        "usage": float((counts > 0).double().mean().item()),
        "perplexity": float(math.exp(entropy)),
        "used_codes": int((counts > 0).sum().item()),
        "codebook_size": codebook_size,
    }
