"""Losses of VQ-GAN training: reconstruction, perceptual, adversarial (hinge, adaptive weight) and the
clinical feature loss of LLM-CXR.

Feature networks and what they are worth:
- `RandomFeaturePerceptual` (the offline default; nothing to download): a fixed, randomly initialised
  multi-scale conv net whose channel-normalised activations are compared as in LPIPS. Random deep
  conv features are a known working perceptual loss (Liu et al., "Generic Perceptual Loss for Modeling
  Structured Output Dependencies", CVPR 2021; Ulyanov et al., "Deep Image Prior", 2018): they penalise
  local structure and edges beyond per-pixel error. They carry no learned notion of what a human or a
  radiologist notices, so expect less perceptual sharpness than with LPIPS.
- `LPIPS` (when `lpips_weights` points to a safetensors file, e.g. the one `llmcxr vq convert` extracts
  from the official LLM-CXR checkpoint, which stores taming's LPIPS under `loss.perceptual_loss.`):
  VGG16 features with learned linear heads (Zhang et al. 2018), taming's module names.
- Clinical feature loss: LLM-CXR (Lee et al. 2024, sec. 3.2) matches features of a CXR classifier
  between image and reconstruction. With `xrv_densenet_weights` it uses the torchxrayvision
  DenseNet-121 (`llmcxr.vq.densenet`); without, it matches the PatchGAN discriminator's features
  (pix2pixHD feature matching, Wang et al. 2018): a network trained on CXRs, but to tell real from
  reconstructed, not to find disease, so it is a weak stand-in for the clinical loss.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from llmcxr.errors import BadInputError


def normalize_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """(B, C, H, W) -> unit length along C at every position (LPIPS's `normalize_tensor`)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def feature_distance(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean squared distance of channel-normalised features."""
    terms = [
        (normalize_channels(r) - normalize_channels(f)).pow(2).sum(1).mean()
        for r, f in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).sum()


class RandomFeaturePerceptual(nn.Module):
    """Perceptual loss on a frozen random conv net: 4 scales (full, 1/2, 1/4, 1/8), 2 convs each.

    The weights come from their own seeded generator (not the global RNG), so the net is the same in
    every run and needs no file. (B, 1, R, R), (B, 1, R, R) in [-1, 1] -> scalar.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 96), seed: int = 1234) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        c_in = 1
        for i, c_out in enumerate(channels):
            stage = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.ReLU(),
            )
            for conv in (stage[0], stage[2]):
                fan_in = conv.in_channels * 9
                conv.weight.data = torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                conv.bias.data.zero_()
            self.stages.append(stage)
            c_in = c_out
        self.requires_grad_(False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [], images
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        return feature_distance(self.features(images), self.features(reconstructions))


# VGG16 `features` layer indices of taming's LPIPS slices (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_SLICE_ENDS = (4, 9, 16, 23, 30)


class VGG16Slices(nn.Module):
    """VGG16 conv layers split as taming's `vgg16` class: keys `slice1.0.weight` ... `slice5.28.bias`."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in _VGG16_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(item)
        start = 0
        for n, end in enumerate(_SLICE_ENDS, start=1):
            named = OrderedDict((str(i), layers[i]) for i in range(start, end))
            setattr(self, f"slice{n}", nn.Sequential(named))
            start = end

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [], images
        for n in range(1, len(_SLICE_ENDS) + 1):
            h = getattr(self, f"slice{n}")(h)
            feats.append(h)
        return feats


def lpips_state_from_taming(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """taming's LPIPS names -> ours: the checkpoint prefix ``loss.perceptual_loss.`` dropped, and its
    ``ScalingLayer`` buffers ``scaling_layer.shift/scale`` (taming ``modules/losses/lpips.py``) become
    our top-level ``shift/scale``; every other name (``net.slice*``, ``lin*.model.1``) is the same."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("loss.perceptual_loss.")
        renamed[key.removeprefix("scaling_layer.")] = value
    return renamed


class LPIPS(nn.Module):
    """LPIPS-VGG (Zhang et al. 2018) with taming's names (`net.*`, `lin0.model.1.weight`, ...).

    Grayscale images are repeated to 3 channels. (B, 1, R, R) x2 in [-1, 1] -> scalar (batch mean).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = VGG16Slices()
        for n, channels in enumerate((64, 128, 256, 512, 512)):
            head = nn.Module()
            head.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))
            setattr(self, f"lin{n}", head)
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(path, "LPIPS weights not found", "point lpips_weights to a .safetensors file")
        model = cls()
        state = lpips_state_from_taming(load_file(str(path)))  # a file in taming's names loads too
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise BadInputError(path, f"not LPIPS-VGG weights: missing {result.missing_keys[:5]}")
        return model.eval()

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        a = (images.repeat(1, 3, 1, 1) - self.shift) / self.scale
        b = (reconstructions.repeat(1, 3, 1, 1) - self.shift) / self.scale
        total = images.new_zeros(())
        for n, (fa, fb) in enumerate(zip(self.net(a), self.net(b), strict=True)):
            diff = (normalize_channels(fa) - normalize_channels(fb)).pow(2)
            total = total + getattr(self, f"lin{n}").model(diff).mean()
        return total


def reconstruction_loss(
    images: torch.Tensor, reconstructions: torch.Tensor, l1_weight: float, l2_weight: float
) -> torch.Tensor:
    """Weighted L1 + MSE between (B, 1, R, R) images (taming uses L1 only; MSE is what PSNR measures)."""
    diff = images.float() - reconstructions.float()
    return l1_weight * diff.abs().mean() + l2_weight * diff.pow(2).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (taming's `hinge_d_loss`)."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: raise the discriminator's logits on reconstructions."""
    return -fake_logits.mean()


def adaptive_weight(
    reconstruction_term: torch.Tensor, adversarial_term: torch.Tensor, last_layer: torch.Tensor
) -> torch.Tensor:
    """taming's `calculate_adaptive_weight`: ||grad rec|| / ||grad adv|| at the decoder's last layer,
    so the GAN term never swamps reconstruction (Esser et al. 2021, eq. 7). Clamped to [0, 1e4]."""
    rec_grad = torch.autograd.grad(reconstruction_term, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial_term, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def build_perceptual(lpips_weights: Path | None) -> nn.Module:
    """LPIPS when weights are given, else the offline random-feature perceptual loss."""
    return LPIPS.from_file(lpips_weights) if lpips_weights is not None else RandomFeaturePerceptual()
