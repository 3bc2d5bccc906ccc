"""`llmcxr vq convert`: a fake taming-transformers checkpoint (RGB, taming key names) built here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from _taming import VGG16_CONVS, Opaque, fake_taming_checkpoint
from llmcxr.errors import BadInputError
from llmcxr.vq import VQGAN, VQConfig, load_vqgan
from llmcxr.vq.convert import convert_taming_checkpoint
from llmcxr.vq.losses import LPIPS


def test_convert_keeps_codes_and_folds_rgb_to_gray(tmp_path: Path) -> None:
    ckpt, config, rgb = fake_taming_checkpoint(tmp_path)
    summary = convert_taming_checkpoint(ckpt, config, tmp_path / "out")
    model = load_vqgan(tmp_path / "out")
    assert model.cfg.in_channels == 1 and not model.cfg.l2_normalized_codes
    assert (model.cfg.grid_size, model.cfg.codebook_size, model.cfg.codebook_dim) == (4, 32, 6)
    assert "loss.discriminator" in summary["ignored_groups"]
    gray = torch.rand(3, 1, 16, 16) * 2 - 1
    rgb_input = gray.repeat(1, 3, 1, 1)
    # same codes as the RGB model on the gray image copied to 3 channels ...
    codes = model.encode(gray)
    assert torch.equal(codes, rgb.encode(rgb_input))
    # ... and the gray decode is the channel mean of the RGB decode
    with torch.no_grad():
        rgb_decoded = rgb.decode_latents(rgb.quantize.lookup(codes)).mean(dim=1, keepdim=True).clamp(-1, 1)
    assert torch.allclose(model.decode(codes), rgb_decoded, atol=1e-5)


def test_lpips_from_a_taming_checkpoint_loads_every_tensor(tmp_path: Path) -> None:
    """The LPIPS stored in taming's names (ScalingLayer buffers under `scaling_layer.`) comes out as a
    file `LPIPS.from_file` loads, every tensor where taming had it."""
    ckpt, config, _ = fake_taming_checkpoint(tmp_path)
    convert_taming_checkpoint(ckpt, config, tmp_path / "out")
    lpips = LPIPS.from_file(tmp_path / "out" / "lpips.safetensors")
    stored = torch.load(ckpt, weights_only=True)["state_dict"]
    ours = lpips.state_dict()
    assert len(ours) == 2 + 2 * len(VGG16_CONVS) + 5
    assert torch.equal(ours["shift"], stored["loss.perceptual_loss.scaling_layer.shift"])
    assert torch.equal(ours["scale"], stored["loss.perceptual_loss.scaling_layer.scale"])
    assert torch.equal(ours["net.slice3.12.weight"], stored["loss.perceptual_loss.net.slice3.12.weight"])
    assert torch.equal(ours["lin4.model.1.weight"], stored["loss.perceptual_loss.lin4.model.1.weight"])
    # a file extracted before the rename (taming's names as they were) loads as well
    from safetensors.torch import save_file

    raw = {
        k.removeprefix("loss.perceptual_loss."): v.contiguous()
        for k, v in stored.items()
        if "perceptual" in k
    }
    save_file(raw, str(tmp_path / "raw.safetensors"))
    assert torch.equal(LPIPS.from_file(tmp_path / "raw.safetensors").shift, ours["shift"])


def test_the_paper_config_maps_one_to_one() -> None:
    """Every key of our paper architecture has taming's name (bar our dead-code statistics)."""
    with torch.device("meta"):  # names only
        ours = set(VQGAN(VQConfig.paper()).state_dict()) - {"quantize.usage"}
    assert "encoder.down.4.block.1.conv2.weight" in ours and "decoder.up.0.block.2.conv2.weight" in ours
    assert "encoder.down.4.attn.1.proj_out.weight" in ours  # attention at the 16 x 16 level (level 4)
    assert {
        "quantize.embedding.weight",
        "quant_conv.weight",
        "post_quant_conv.bias",
        "decoder.mid.attn_1.q.weight",
    } <= ours


def test_convert_rejects_wrong_inputs(tmp_path: Path) -> None:
    ckpt, config, _ = fake_taming_checkpoint(tmp_path)
    with pytest.raises(BadInputError, match="not found"):
        convert_taming_checkpoint(tmp_path / "nope.ckpt", config, tmp_path / "out")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {params: {}}\n")
    with pytest.raises(BadInputError, match="not a taming VQModel config"):
        convert_taming_checkpoint(ckpt, bad_yaml, tmp_path / "out")
    other = yaml.safe_load(config.read_text())
    other["model"]["params"]["n_embed"] = 64
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(BadInputError, match="do not match"):
        convert_taming_checkpoint(ckpt, tmp_path / "other.yaml", tmp_path / "out")

    torch.save({"state_dict": {}, "hparams": Opaque()}, tmp_path / "pickled.ckpt")
    with pytest.raises(BadInputError, match="refused to unpickle"):
        convert_taming_checkpoint(tmp_path / "pickled.ckpt", config, tmp_path / "out")


def test_cli_convert(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmcxr.cli import app

    ckpt, config, _ = fake_taming_checkpoint(tmp_path)
    result = CliRunner().invoke(app, ["vq", "convert", str(ckpt), str(config), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert load_vqgan(tmp_path / "out").cfg.grid_size == 4
