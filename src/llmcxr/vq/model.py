"""The VQ-GAN image tokenizer: a CXR (B, 1, R, R) in [-1, 1] <-> a grid of codes (B, g, g).

Architecture and module names follow taming-transformers (Esser et al. 2021,
`taming/modules/diffusionmodules/model.py`), which LLM-CXR's released tokenizer uses, so its
checkpoint converts key for key (`llmcxr.vq.convert`). Read top to bottom: small pieces, then the
encoder and decoder, then `VQGAN`, then saving and loading.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from llmcxr import atomic
from llmcxr.config import load_config, save_config
from llmcxr.errors import BadInputError
from llmcxr.vq.config import VQConfig
from llmcxr.vq.quantizer import VectorQuantizer

CONFIG_NAME = "vq_config.json"
WEIGHTS_NAME = "vqgan.safetensors"


def group_norm(channels: int) -> nn.GroupNorm:
    """taming's `Normalize`: GroupNorm with 32 groups (fewer when `channels` is small), eps 1e-6."""
    return nn.GroupNorm(num_groups=math.gcd(32, channels), num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W): two GroupNorm-swish-conv layers plus a skip connection."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # taming's 1x1 "nin_shortcut" when the channel count changes.
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return skip + h


class AttnBlock(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): single-head self-attention over the H*W positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one head, as taming (softmax(q k^T / sqrt(C)) v).
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, 1, H*W, C)
        return x + self.proj_out(attended.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, C, H/2, W/2): stride-2 3x3 conv with taming's asymmetric (0, 1, 0, 1) pad."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C, 2H, 2W): nearest-neighbour upsampling then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResNet blocks (each followed by attention at attention resolutions),
    then an optional resampling layer (`downsample` in the encoder, `upsample` in the decoder)."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[i](x)
        return x


class Middle(nn.Module):
    """ResNet block, attention, ResNet block at the lowest resolution (taming's `mid`)."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """(B, in_channels, R, R) image -> (B, z_channels, g, g) latents, g = R / 2**(levels-1)."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        levels = len(cfg.channel_mult)
        in_mult = (1, *cfg.channel_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        side = cfg.resolution
        for i in range(levels):
            c_in, c_out = cfg.base_channels * in_mult[i], cfg.base_channels * cfg.channel_mult[i]
            blocks: list[nn.Module] = []
            attns: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(c_in, c_out, cfg.dropout))
                c_in = c_out
                if side in cfg.attn_resolutions:
                    attns.append(AttnBlock(c_out))
            level = Level(blocks, attns)
            if i != levels - 1:
                level.downsample = Downsample(c_out)
                side //= 2
            self.down.append(level)
        self.mid = Middle(c_out, cfg.dropout)
        self.norm_out = group_norm(c_out)
        self.conv_out = nn.Conv2d(c_out, cfg.z_channels, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(images)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, g, g) latents -> (B, in_channels, R, R) image (unclamped)."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        levels = len(cfg.channel_mult)
        c_in = cfg.base_channels * cfg.channel_mult[-1]
        side = cfg.grid_size
        self.conv_in = nn.Conv2d(cfg.z_channels, c_in, 3, padding=1)
        self.mid = Middle(c_in, cfg.dropout)
        # Built from the lowest resolution up but stored in taming's order: up[0] is full resolution.
        up_levels: list[Level] = []
        for i in reversed(range(levels)):
            c_out = cfg.base_channels * cfg.channel_mult[i]
            blocks: list[nn.Module] = []
            attns: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(c_in, c_out, cfg.dropout))
                c_in = c_out
                if side in cfg.attn_resolutions:
                    attns.append(AttnBlock(c_out))
            level = Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(c_in)
                side *= 2
            up_levels.insert(0, level)
        self.up = nn.ModuleList(up_levels)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, cfg.in_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(latents))
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGAN(nn.Module):
    """The image tokenizer. Images are (B, 1, R, R) float in [-1, 1]; codes are (B, g, g) int64 in
    [0, codebook_size), row-major when flattened to `num_tokens` image tokens."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(
            cfg.codebook_size,
            cfg.codebook_dim,
            commitment_weight=cfg.commitment_weight,
            l2_normalized=cfg.l2_normalized_codes,
            usage_decay=cfg.usage_decay,
            dead_code_threshold=cfg.dead_code_threshold,
        )
        # 1x1 convs between the encoder/decoder width and the (low-dimensional) code space.
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_dim, cfg.z_channels, 1)

    def _check_images(self, images: torch.Tensor) -> None:
        r = self.cfg.resolution
        if images.ndim != 4 or images.shape[1] != self.cfg.in_channels or images.shape[2:] != (r, r):
            raise BadInputError(
                "images",
                f"expected a (B, {self.cfg.in_channels}, {r}, {r}) tensor, got {tuple(images.shape)}",
                f"preprocess with llmcxr.imaging.load_cxr(source, size={r})",
            )

    def quantize_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1, R, R) -> (quantized latents (B, D, g, g), quantizer loss (), codes (B, g, g))."""
        self._check_images(images)
        return self.quantize(self.quant_conv(self.encoder(images)))

    def decode_latents(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, D, g, g) code vectors -> (B, 1, R, R) reconstruction, unclamped."""
        return self.decoder(self.post_quant_conv(quantized))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1, R, R) -> (reconstruction (B, 1, R, R) unclamped, quantizer loss (), codes (B, g, g))."""
        quantized, quantizer_loss, codes = self.quantize_images(images)
        return self.decode_latents(quantized), quantizer_loss, codes

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) in [-1, 1] -> (B, g, g) int64 codes."""
        return self.quantize_images(images)[2]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, g, g) int64 codes -> (B, 1, R, R) images clamped to [-1, 1]."""
        g, k = self.cfg.grid_size, self.cfg.codebook_size
        if codes.ndim != 3 or codes.shape[1:] != (g, g):
            raise BadInputError("codes", f"expected a (B, {g}, {g}) tensor, got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise BadInputError("codes", f"code out of range [0, {k})", "were these made by this tokenizer?")
        quantized = self.quantize.lookup(codes.long()).to(self.post_quant_conv.weight.dtype)
        return self.decode_latents(quantized).clamp(-1.0, 1.0)

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's output conv, for taming's adaptive adversarial weight."""
        return self.decoder.conv_out.weight


def save_vqgan(model: VQGAN, folder: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write `folder/vqgan.safetensors` then `folder/vq_config.json`, each atomically.

    `dtype=torch.bfloat16` halves the file (used for the checkpoint shipped in the repository);
    `load_vqgan` always returns float32 weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    with atomic.atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "llmcxr": "vqgan"})
    save_config(model.cfg, folder / CONFIG_NAME)


def load_vqgan(folder: str | Path, device: str | torch.device = "cpu") -> VQGAN:
    """Load a VQ-GAN saved by `save_vqgan` (or `llmcxr vq convert`); returned in eval mode, float32."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise BadInputError(
                folder, f"not a VQ-GAN checkpoint folder ({path.name} missing)", "train or convert one first"
            )
    cfg = load_config(VQConfig, config_path)
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types for truncated/garbled files
        raise BadInputError(weights_path, f"unreadable safetensors file ({err})", "re-save it") from None
    model = VQGAN(cfg)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise BadInputError(
            weights_path,
            f"weights do not fit {CONFIG_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {wrong[:5]}",
            "the config and weights must come from the same save",
        )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()
