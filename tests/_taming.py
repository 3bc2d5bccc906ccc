"""A fake taming-transformers VQ-GAN checkpoint (RGB, taming's key names, its LPIPS) for the tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import yaml

from _tiny_vq import MICRO_VQ
from llmcxr.vq import VQGAN

# taming's ddconfig vocabulary, at a tiny size (LLM-CXR's: ch 128, ch_mult [1,1,2,2,4], resolution 256).
DDCONFIG = {
    "double_z": False,
    "z_channels": 8,
    "resolution": 16,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 8,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [4],
    "dropout": 0.0,
}


# taming's LPIPS as it sits in a VQModel checkpoint (taming/modules/losses/lpips.py): a ScalingLayer
# module with shift/scale buffers, torchvision vgg16 `features` split into slice1..5 (conv indices
# below), one NetLinLayer (Dropout, 1x1 conv) per slice. Written out here, not taken from our LPIPS.
VGG16_CONVS = {  # features index -> (slice, in, out)
    0: (1, 3, 64), 2: (1, 64, 64), 5: (2, 64, 128), 7: (2, 128, 128), 10: (3, 128, 256),
    12: (3, 256, 256), 14: (3, 256, 256), 17: (4, 256, 512), 19: (4, 512, 512), 21: (4, 512, 512),
    24: (5, 512, 512), 26: (5, 512, 512), 28: (5, 512, 512),
}  # fmt: skip


def taming_lpips_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    prefix = "loss.perceptual_loss."
    state = {
        f"{prefix}scaling_layer.shift": torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None],
        f"{prefix}scaling_layer.scale": torch.tensor([0.458, 0.448, 0.450])[None, :, None, None],
    }
    for index, (part, c_in, c_out) in VGG16_CONVS.items():
        state[f"{prefix}net.slice{part}.{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=generator)
        state[f"{prefix}net.slice{part}.{index}.bias"] = torch.randn(c_out, generator=generator)
    for n, channels in enumerate((64, 128, 256, 512, 512)):
        state[f"{prefix}lin{n}.model.1.weight"] = torch.rand(1, channels, 1, 1, generator=generator)
    return state


class Opaque:
    """A pickled object that `weights_only=True` must refuse to rebuild."""


def fake_taming_checkpoint(folder: Path) -> tuple[Path, Path, VQGAN]:
    """An RGB taming-style VQModel: Lightning checkpoint with `state_dict`, plus its YAML."""
    torch.manual_seed(0)
    rgb_cfg = dataclasses.replace(
        MICRO_VQ, in_channels=3, codebook_dim=6, l2_normalized_codes=False, dead_code_threshold=0.0
    )
    rgb = VQGAN(rgb_cfg).eval()
    state = {k: v for k, v in rgb.state_dict().items() if k != "quantize.usage"}
    state["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    state["loss.logvar"] = torch.zeros(())
    state.update(taming_lpips_state())
    ckpt = folder / "last.ckpt"
    torch.save({"state_dict": state, "global_step": 1000, "epoch": 3}, ckpt)
    config = folder / "vqgan.yaml"
    document = {
        "model": {
            "base_learning_rate": 4.5e-6,
            "target": "taming.models.vqgan.VQModel",
            "params": {"embed_dim": 6, "n_embed": 32, "ddconfig": DDCONFIG, "lossconfig": {"target": "x"}},
        }
    }
    config.write_text(yaml.safe_dump(document))
    return ckpt, config, rgb
