"""Convert the official LLM-CXR VQ-GAN (a taming-transformers `.ckpt` + its YAML) into an llmcxr folder.

`llmcxr vq convert CKPT YAML OUT`. Our module names follow taming's, so the state dict maps key for key
(`encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`, `quantize.embedding.weight`); the YAML's
`model.params.ddconfig`, `n_embed` and `embed_dim` become a `VQConfig` with taming's plain Euclidean
code lookup (`l2_normalized_codes=False`) and no dead-code restarts.

Grayscale: the released model is RGB (in_channels = out_ch = 3) and is fed a grayscale CXR copied to
3 channels. We fold it to one channel without changing what it computes on such input:
- `encoder.conv_in.weight` (C, 3, k, k) is SUMMED over its 3 input channels: conv([g, g, g]) = sum_c W_c * g;
- `decoder.conv_out` (3, C, k, k) and its bias are AVERAGED over the 3 output channels: our gray output
  is the mean of the RGB output, which is what converting its RGB image to gray by averaging gives.
Codes are therefore identical to the RGB model's on gray input, and decoded images equal its RGB
decodes averaged over channels (tests/test_vq_convert.py checks both on a fake taming checkpoint).

The checkpoint is read with `torch.load(weights_only=True)` (no arbitrary pickled code runs). Its
LPIPS weights (`loss.perceptual_loss.*`, taming's names) are saved beside as `lpips.safetensors` in
`llmcxr.vq.losses.LPIPS`'s names (`scaling_layer.shift` -> `shift`) for `VQTrainConfig.lpips_weights`; the discriminator (`loss.discriminator.*`, RGB) is not converted.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.vq.config import VQConfig
from llmcxr.vq.losses import lpips_state_from_taming
from llmcxr.vq.model import VQGAN, save_vqgan

MODEL_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.embedding.")
LPIPS_PREFIX = "loss.perceptual_loss."


def read_taming_yaml(path: str | Path) -> dict[str, Any]:
    """`model.params` of a taming VQModel YAML (must hold `ddconfig`, `n_embed`, `embed_dim`)."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        params = document["model"]["params"]
        for key in ("ddconfig", "n_embed", "embed_dim"):
            params[key]
    except (OSError, yaml.YAMLError) as err:
        raise BadInputError(path, f"cannot read the taming YAML ({err})") from None
    except (KeyError, TypeError) as err:
        raise BadInputError(
            path,
            f"not a taming VQModel config: no model.params.{err.args[0] if err.args else ''}",
            "pass the YAML shipped with the .ckpt",
        ) from None
    return params


def config_from_taming(params: dict[str, Any], source: str | Path = "yaml") -> VQConfig:
    """Our `VQConfig` for taming's `ddconfig` / `n_embed` / `embed_dim`, folded to one channel."""
    dd = params["ddconfig"]
    if dd.get("double_z", False):
        raise BadInputError(source, "ddconfig.double_z is true: that is a KL autoencoder, not a VQ-GAN")
    if dd.get("in_channels") != dd.get("out_ch"):
        raise BadInputError(source, f"in_channels {dd.get('in_channels')} != out_ch {dd.get('out_ch')}")
    return VQConfig(
        resolution=int(dd["resolution"]),
        in_channels=1,
        base_channels=int(dd["ch"]),
        channel_mult=tuple(int(m) for m in dd["ch_mult"]),
        num_res_blocks=int(dd["num_res_blocks"]),
        attn_resolutions=tuple(int(r) for r in dd["attn_resolutions"]),
        z_channels=int(dd["z_channels"]),
        codebook_size=int(params["n_embed"]),
        codebook_dim=int(params["embed_dim"]),
        l2_normalized_codes=False,  # taming's VectorQuantizer2: Euclidean lookup, raw code vectors
        dead_code_threshold=0.0,  # a converted model is used as is; fine-tuning may switch restarts on
        dropout=float(dd.get("dropout", 0.0)),
        preprocessing="official",  # the original code's pixels (llmcxr.imaging.preprocess_official)
    )


def load_taming_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of a taming/Lightning checkpoint, unpickled with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise BadInputError(
            path,
            f"refused to unpickle a non-tensor object ({str(err).splitlines()[0][:200]})",
            "if you trust the file, keep only its weights: torch.save({'state_dict': "
            "torch.load(CKPT, weights_only=False)['state_dict']}, 'weights.ckpt'), and convert that",
        ) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise BadInputError(path, f"unreadable checkpoint ({err})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("encoder.") for k in state):
        raise BadInputError(path, "no taming VQ-GAN state_dict in it (no 'encoder.*' weights)")
    return state


def fold_to_grayscale(state: dict[str, torch.Tensor], rgb_channels: int) -> dict[str, torch.Tensor]:
    """Sum the encoder's first conv over input channels; average the decoder's last conv over outputs."""
    state = dict(state)
    if rgb_channels == 1:
        return state
    state["encoder.conv_in.weight"] = state["encoder.conv_in.weight"].sum(dim=1, keepdim=True)
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"].mean(dim=0, keepdim=True)
    state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"].mean(dim=0, keepdim=True)
    return state


def convert_taming_checkpoint(
    checkpoint: str | Path, config: str | Path, out: str | Path, extract_lpips: bool = True
) -> dict[str, Any]:
    """Write `out/{vq_config.json, vqgan.safetensors}` (+ `lpips.safetensors`); returns a summary."""
    params = read_taming_yaml(config)
    cfg = config_from_taming(params, config)
    rgb_channels = int(params["ddconfig"]["in_channels"])
    state = load_taming_state(checkpoint)
    ours = {k: v.float() for k, v in state.items() if k.startswith(MODEL_PREFIXES)}
    ours = fold_to_grayscale(ours, rgb_channels)
    model = VQGAN(cfg)
    expected = model.state_dict()
    ours["quantize.usage"] = expected["quantize.usage"]  # our dead-code statistics: not in taming
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    wrong = sorted(k for k in set(expected) & set(ours) if expected[k].shape != ours[k].shape)
    if missing or unexpected or wrong:
        raise BadInputError(
            checkpoint,
            f"weights do not match the YAML's architecture: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shape {wrong[:5]}",
            "pass the YAML that belongs to this checkpoint",
        )
    model.load_state_dict(ours)
    out = Path(out)
    save_vqgan(model, out)
    ignored = sorted(
        {k.split(".")[0] + "." + k.split(".")[1] for k in state if not k.startswith(MODEL_PREFIXES)}
    )
    summary: dict[str, Any] = {
        "out": str(out),
        "tensors_converted": len(ours) - 1,
        "grayscale_fold": f"{rgb_channels} -> 1 channel (conv_in summed, conv_out averaged)"
        if rgb_channels != 1
        else "none",
        "resolution": cfg.resolution,
        "grid_size": cfg.grid_size,
        "codebook_size": cfg.codebook_size,
        "ignored_groups": ignored,
    }
    lpips = {k: v.float().contiguous() for k, v in state.items() if k.startswith(LPIPS_PREFIX)}
    if extract_lpips and lpips:
        with atomic.atomic_path(out / "lpips.safetensors") as tmp:
            save_file(lpips_state_from_taming(lpips), str(tmp))
        summary["lpips"] = str(out / "lpips.safetensors")
    return summary
