"""VQ-GAN model: shapes, round trip, codes in range, determinism, save/load, quantizer health, configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from _tiny_vq import MICRO_VQ as MICRO
from llmcxr.config import load_config
from llmcxr.errors import BadInputError
from llmcxr.vq import VQGAN, VectorQuantizer, VQConfig, VQTrainConfig, codebook_stats, load_vqgan, save_vqgan

ROOT = Path(__file__).resolve().parents[1]


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: blurred noise plus a vertical gradient."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, 1, size // 4, size // 4, generator=g)
    smooth = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    ramp = torch.linspace(0, 1, size)[None, None, :, None]
    return (smooth * 0.6 + ramp * 0.4) * 2 - 1


def test_presets_have_the_documented_grids() -> None:
    assert (VQConfig.tiny().grid_size, VQConfig.tiny().num_tokens, VQConfig.tiny().resolution) == (8, 64, 64)
    assert (VQConfig.grid16().grid_size, VQConfig.grid16().codebook_size) == (16, 1024)
    paper = VQConfig.paper()
    assert (paper.resolution, paper.grid_size, paper.num_tokens, paper.codebook_size) == (256, 16, 256, 1024)
    # The tiny tokenizer must stay small enough to ship in the repository (<= ~3M parameters).
    assert sum(p.numel() for p in VQGAN(VQConfig.tiny()).parameters()) <= 3_000_000


def test_encode_decode_shapes_and_code_range() -> None:
    torch.manual_seed(0)
    model = VQGAN(MICRO).eval()
    x = images(3, 16)
    codes = model.encode(x)
    assert codes.shape == (3, 4, 4) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < MICRO.codebook_size
    out = model.decode(codes)
    assert out.shape == (3, 1, 16, 16)
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    recon, qloss, codes2 = model(x)
    assert recon.shape == x.shape and qloss.ndim == 0 and torch.equal(codes, codes2)


def test_decode_of_encode_is_a_fixed_point_of_the_codes() -> None:
    """Round trip at the code level: decode -> encode returns codes that decode to the same image
    more often than chance (a random, untrained model still maps code vectors consistently)."""
    torch.manual_seed(0)
    model = VQGAN(MICRO).eval()
    codes = model.encode(images(4, 16))
    again = model.encode(model.decode(codes))
    assert again.shape == codes.shape
    # codes are deterministic for the same input
    assert torch.equal(model.encode(images(4, 16)), codes)


def test_same_seed_same_model() -> None:
    torch.manual_seed(7)
    a = VQGAN(MICRO)
    torch.manual_seed(7)
    b = VQGAN(MICRO)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_bad_shapes_and_codes_raise_bad_input() -> None:
    model = VQGAN(MICRO).eval()
    with pytest.raises(BadInputError, match="expected a"):
        model.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(BadInputError, match="out of range"):
        model.decode(torch.full((1, 4, 4), MICRO.codebook_size))
    with pytest.raises(BadInputError, match="expected a"):
        model.decode(torch.zeros(1, 5, 5, dtype=torch.long))


def test_save_load_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VQGAN(MICRO).eval()
    save_vqgan(model, tmp_path / "vq")
    assert sorted(p.name for p in (tmp_path / "vq").iterdir()) == ["vq_config.json", "vqgan.safetensors"]
    loaded = load_vqgan(tmp_path / "vq")
    assert loaded.cfg == MICRO and not loaded.training
    x = images(2, 16)
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert torch.equal(loaded.decode(model.encode(x)), model.decode(model.encode(x)))


def test_save_in_bf16_halves_the_file_and_loads_float32(tmp_path: Path) -> None:
    model = VQGAN(MICRO).eval()
    save_vqgan(model, tmp_path / "f32")
    save_vqgan(model, tmp_path / "bf16", dtype=torch.bfloat16)
    small = (tmp_path / "bf16" / "vqgan.safetensors").stat().st_size
    assert small < 0.6 * (tmp_path / "f32" / "vqgan.safetensors").stat().st_size
    assert load_vqgan(tmp_path / "bf16").encoder.conv_in.weight.dtype == torch.float32


def test_load_rejects_missing_or_broken_folders(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="missing"):
        load_vqgan(tmp_path)
    save_vqgan(VQGAN(MICRO), tmp_path / "vq")
    (tmp_path / "vq" / "vqgan.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BadInputError, match="unreadable"):
        load_vqgan(tmp_path / "vq")
    save_vqgan(VQGAN(MICRO), tmp_path / "other")
    bigger = dataclasses.replace(MICRO, codebook_size=64)
    (tmp_path / "other" / "vq_config.json").write_text(
        (tmp_path / "other" / "vq_config.json")
        .read_text()
        .replace('"codebook_size": 32', '"codebook_size": 64')
    )
    assert bigger.codebook_size == 64
    with pytest.raises(BadInputError, match="do not fit"):
        load_vqgan(tmp_path / "other")


def test_quantizer_straight_through_and_losses() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, dead_code_threshold=0.0)
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    quantized, loss, codes = vq(latents)
    assert quantized.shape == latents.shape and codes.shape == (2, 3, 3)
    # the forward value is the (normalised) code vector ...
    assert torch.allclose(
        quantized.detach().permute(0, 2, 3, 1).reshape(-1, 4), vq.codebook()[codes.reshape(-1)], atol=1e-5
    )
    # ... and the gradient reaches the encoder output (straight-through) and the codebook (codebook loss)
    (quantized.sum() + loss).backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    assert vq.embedding.weight.grad is not None and vq.embedding.weight.grad.abs().sum() > 0


def test_dead_codes_are_restarted_onto_encoder_outputs() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, usage_decay=0.5, dead_code_threshold=0.1).train()
    # All latents point one way: one code wins, the rest go unused and must be restarted.
    latents = torch.tensor([1.0, 0.0])[None, :, None, None].repeat(4, 1, 2, 2) + 0.01 * torch.randn(
        4, 2, 2, 2
    )
    before = vq.codebook().clone()
    for _ in range(6):
        vq(latents)
    moved = (vq.codebook() - before).norm(dim=1) > 1e-3
    assert moved.sum() >= 6  # the dead ones moved ...
    near = vq.codebook() @ torch.tensor([1.0, 0.0])
    assert (near[moved] > 0.9).all()  # ... onto the data


def test_plain_euclidean_quantizer_picks_nearest() -> None:
    vq = VectorQuantizer(3, 2, l2_normalized=False, dead_code_threshold=0.0).eval()
    vq.embedding.weight.data = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    latents = torch.tensor([[9.0, 1.0], [1.0, 1.0], [0.0, 7.0]]).t()[None, :, :, None]  # (1, 2, 3, 1)
    _, _, codes = vq(latents)
    assert codes.reshape(-1).tolist() == [1, 0, 2]


def test_codebook_stats() -> None:
    uniform = codebook_stats(torch.arange(8).repeat(3), 8)
    assert uniform["usage"] == 1.0 and abs(uniform["perplexity"] - 8) < 1e-9
    collapsed = codebook_stats(torch.zeros(10, dtype=torch.long), 8)
    assert collapsed["usage"] == 1 / 8 and abs(collapsed["perplexity"] - 1) < 1e-9


@pytest.mark.parametrize("name", ["tiny", "grid16", "paper"])
def test_recipes_load_and_match_their_preset(name: str) -> None:
    cfg = load_config(VQTrainConfig, ROOT / "recipes" / "vq" / f"{name}.yaml")
    assert cfg.model == getattr(VQConfig, name)()
    assert cfg.steps > 0 and 0 < cfg.holdout_fraction < 1


def test_paper_config_forward_backward_shapes() -> None:
    """One forward/backward step of the paper architecture. At 32 px with attention moved to the 2x2
    level it has exactly the paper's parameters (names and shapes) at 1/64 of the compute; the full
    256 px step is timed by benchmarks/vq_tokenizer.py (paper_cpu)."""
    torch.manual_seed(0)
    paper = VQConfig.paper()
    small = dataclasses.replace(paper, resolution=32, attn_resolutions=(2,))
    model = VQGAN(small)
    with torch.device("meta"):  # shapes only, no memory or init time
        paper_shapes = {k: v.shape for k, v in VQGAN(paper).state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == paper_shapes
    x = images(1, 32)
    recon, qloss, codes = model(x)
    assert recon.shape == (1, 1, 32, 32) and codes.shape == (1, 2, 2)
    ((recon - x).abs().mean() + qloss).backward()
    assert all(p.grad is not None for p in model.parameters())
