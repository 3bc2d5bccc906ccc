"""PatchGAN discriminator (pix2pix, Isola et al. 2017), as taming-transformers' `NLayerDiscriminator`.

(B, 1, R, R) image -> (B, 1, R', R') logits, one per overlapping patch (70x70 receptive field with
taming's 3 layers). Layers live in `main` with taming's indices, so `loss.discriminator.main.*` of a
taming checkpoint maps onto it.
"""

from __future__ import annotations

import torch
from torch import nn


def init_weights(module: nn.Module) -> None:
    """taming's `weights_init`: N(0, 0.02) convs, N(1, 0.02) batch-norm scales (DCGAN)."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class PatchDiscriminator(nn.Module):
    """Strided 4x4 convs with BatchNorm and LeakyReLU(0.2); `n_layers` halvings of resolution."""

    def __init__(self, in_channels: int = 1, channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last of these keeps the resolution (taming)
            layers += [
                nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) -> (B, 1, R', R') patch logits."""
        return self.main(images)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each LeakyReLU (for feature matching, pix2pixHD, Wang et al. 2018)."""
        feats = []
        h = images
        for layer in self.main:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(h)
        return feats
