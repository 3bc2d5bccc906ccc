"""VQ-GAN training: the split by patient, augmentation, losses, loss goes down, resume after a kill,
and the CLI. Data are small PNGs the tests write themselves."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from _tiny_vq import MICRO_VQ
from llmcxr.errors import BadInputError
from llmcxr.vq import VQTrainConfig, load_vqgan
from llmcxr.vq.discriminator import PatchDiscriminator
from llmcxr.vq.losses import LPIPS, RandomFeaturePerceptual, adaptive_weight, hinge_discriminator_loss
from llmcxr.vq.train import augment, batch_for_step, split_by_patient, train_vqgan

MICRO = dataclasses.replace(MICRO_VQ, codebook_size=16)


def write_dataset(folder: Path, n_patients: int = 6, per_patient: int = 2) -> Path:
    """Smooth synthetic 64 px 'CXRs' (two bright lung fields on a gradient) and a manifest.csv."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    for p in range(n_patients):
        for i in range(per_patient):
            cx = 0.3 + 0.05 * rng.standard_normal()
            lungs = np.exp(-((xx - cx) ** 2 + (yy - 0.5) ** 2) / 0.02) + np.exp(
                -((xx - 1 + cx) ** 2 + (yy - 0.5) ** 2) / 0.02
            )
            pixels = np.clip(0.2 + 0.5 * yy + 0.3 * lungs + 0.02 * rng.standard_normal((64, 64)), 0, 1)
            name = f"images/p{p}_{i}.png"
            (folder / "images").mkdir(exist_ok=True)
            Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(folder / name)
            rows.append({"image": name, "patient": f"patient{p}"})
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def micro_config(data: Path, out: Path, **overrides: object) -> VQTrainConfig:
    base = VQTrainConfig(
        data=data,
        output_dir=out,
        model=MICRO,
        holdout_fraction=0.34,
        steps=6,
        batch_size=4,
        lr=2e-3,
        warmup_steps=1,
        discriminator_start=3,
        discriminator_channels=8,
        discriminator_layers=1,
        clinical_weight=0.1,
        checkpoint_every=2,
        eval_every=3,
        num_threads=1,
    )
    return dataclasses.replace(base, **overrides)


def test_split_keeps_patients_together(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path / "data", n_patients=10, per_patient=3)
    train, held = split_by_patient(manifest, "patient", 0.2, seed=0)
    assert len(held) == 6 and len(train) == 24
    patients = lambda paths: {p.name.split("_")[0] for p in paths}  # noqa: E731
    assert not patients(train) & patients(held)
    assert split_by_patient(manifest, "patient", 0.2, seed=0) == (train, held)  # seeded
    # a folder (no patient column): every image is its own patient
    train_f, held_f = split_by_patient(tmp_path / "data" / "images", "patient", 0.2, seed=0)
    assert len(held_f) == 6 and len(train_f) == 24


def test_batches_are_a_function_of_seed_and_step() -> None:
    images = torch.rand(20, 1, 16, 16) * 2 - 1
    cfg = VQTrainConfig(batch_size=4, seed=3)
    assert torch.equal(batch_for_step(images, cfg, 5), batch_for_step(images, cfg, 5))
    assert not torch.equal(batch_for_step(images, cfg, 5), batch_for_step(images, cfg, 6))
    moved = augment(images, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and moved.min() >= -1 and moved.max() <= 1
    assert (moved - images).abs().mean() < 0.5  # small changes only


def test_loss_pieces() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    perceptual = RandomFeaturePerceptual()
    assert perceptual(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert perceptual(x, x.flip(-1)).item() > perceptual(x, x + 0.01).item() > 0
    # the random feature net is the same in every process (own seeded generator)
    assert torch.equal(RandomFeaturePerceptual().stages[0][0].weight, perceptual.stages[0][0].weight)
    assert hinge_discriminator_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)).item() == 0.0
    assert hinge_discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == 1.0
    layer = torch.nn.Parameter(torch.ones(3))
    rec, adv = (layer * 2).sum(), (layer * 4).sum()
    assert adaptive_weight(rec, adv, layer).item() == pytest.approx(0.5, rel=1e-3)
    disc = PatchDiscriminator(1, 8, 2)
    assert disc(x).shape[:2] == (2, 1) and len(disc.features(x)) == 3


def test_lpips_loads_taming_named_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {f"loss.perceptual_loss.{k}": v.clone() for k, v in LPIPS().state_dict().items()}
    save_file(state, str(tmp_path / "lpips.safetensors"))
    lpips = LPIPS.from_file(tmp_path / "lpips.safetensors")
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    assert lpips(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_a_few_steps_reduce_the_loss(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path / "data")
    cfg = micro_config(
        manifest,
        tmp_path / "run",
        steps=30,
        discriminator_start=100,
        augment=False,
        eval_every=30,
        checkpoint_every=30,
    )
    final = train_vqgan(cfg, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["rec"] for line in lines if "rec" in line]
    assert losses[-1] < 0.7 * losses[0]
    assert final["step"] == 30 and 0 < final["heldout"]["usage"] <= 1
    assert load_vqgan(tmp_path / "run" / "final").cfg == MICRO
    assert list((tmp_path / "run" / "samples").glob("*.png"))


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path / "data")
    torch.manual_seed(123)  # the global RNG must not leak in: train_vqgan seeds it
    full = micro_config(manifest, tmp_path / "full")
    train_vqgan(full, progress=False)

    # "killed" after step 4 (the checkpoint at step 4 is the last one written) ...
    part = micro_config(manifest, tmp_path / "part", steps=6)
    assert train_vqgan(part, progress=False, stop_after=4) == {"step": 4, "stopped": True}
    assert not (tmp_path / "part" / "final").exists()
    # ... and resumed with the original config
    torch.manual_seed(999)
    resumed = train_vqgan(part, progress=False)
    assert resumed["step"] == 6

    a = load_file(str(tmp_path / "full" / "final" / "vqgan.safetensors"))
    b = load_file(str(tmp_path / "part" / "final" / "vqgan.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ta = load_file(str(tmp_path / "full" / "checkpoint-0000006" / "trainer.safetensors"))
    tb = load_file(str(tmp_path / "part" / "checkpoint-0000006" / "trainer.safetensors"))
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def test_cli_train(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmcxr.cli import app
    from llmcxr.config import save_config

    manifest = write_dataset(tmp_path / "data")
    save_config(micro_config(manifest, tmp_path / "run", steps=2), tmp_path / "recipe.yaml")
    result = CliRunner().invoke(
        app, ["vq", "train", "--config", str(tmp_path / "recipe.yaml"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "held-out PSNR" in result.output
    assert (tmp_path / "run" / "final" / "vqgan.safetensors").is_file()


def test_clinical_densenet_loads_xrv_names_and_drives_the_loss(tmp_path: Path) -> None:
    """torchxrayvision DenseNet-121 rebuilt with its parameter names; random weights stand in."""
    from safetensors.torch import save_file

    from llmcxr.vq.densenet import ClinicalFeatureLoss, XRVDenseNet
    from llmcxr.vq.train import generator_step

    torch.manual_seed(0)
    state = XRVDenseNet().state_dict()
    assert (
        "features.denseblock4.denselayer16.conv2.weight" in state
        and "features.transition3.conv.weight" in state
    )
    save_file(state, str(tmp_path / "xrv.safetensors"))
    net = XRVDenseNet.from_file(tmp_path / "xrv.safetensors")
    net.input_size = 32  # 224 in use; small here to keep the test fast
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert net(x).shape == (2, 18) and len(net.block_features(x)) == 4
    clinical = ClinicalFeatureLoss(net).train()
    assert not clinical.network.training  # BatchNorm statistics stay frozen
    assert clinical(x, x).item() == pytest.approx(0.0, abs=1e-6)
    cfg = micro_config(Path("unused"), tmp_path, discriminator_start=100)
    from llmcxr.vq import VQGAN

    model = VQGAN(MICRO)
    _, _, parts = generator_step(
        cfg,
        model,
        PatchDiscriminator(1, 8, 1),
        RandomFeaturePerceptual(),
        x,
        0,
        torch.device("cpu"),
        clinical,
    )
    assert parts["clin"] > 0


def _split_manifest(manifest: Path) -> Path:
    """The test manifest as JSONL with a world-style split column (patients 0-3 train, 4 validate, 5 test)."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    split = {"patient4": "validate", "patient5": "test"}
    out = manifest.with_name("manifest.jsonl")
    out.write_text("".join(json.dumps({**r, "split": split.get(r["patient"], "train")}) + "\n" for r in rows))
    return out


def test_split_column_trains_on_train_rows_and_never_sees_test(tmp_path: Path) -> None:
    from llmcxr.vq.train import split_by_column

    manifest = _split_manifest(write_dataset(tmp_path / "data"))
    train, held = split_by_column(manifest, "split")
    assert len(train) == 8 and len(held) == 2
    assert all("p5_" not in p.name for p in [*train, *held])
    with pytest.raises(BadInputError, match="no rows with nosuch = train"):
        split_by_column(manifest, "nosuch")


def test_decoder_only_fine_tuning_keeps_every_image_token(tmp_path: Path) -> None:
    """init_from + decoder_only + the finding classifier as clinical network: the decoder changes, the
    encoder and codebook (so every image's tokens) do not."""
    from llmcxr.metrics.finding_classifier import (
        FindingClassifier,
        FindingClassifierConfig,
        save_finding_classifier,
    )

    manifest = _split_manifest(write_dataset(tmp_path / "data"))
    base = micro_config(manifest, tmp_path / "base", split_column="split", discriminator_start=100)
    train_vqgan(base, progress=False)
    torch.manual_seed(0)
    save_finding_classifier(FindingClassifier(FindingClassifierConfig(channels=(4, 8))), tmp_path / "clf")
    tuned_cfg = micro_config(
        manifest,
        tmp_path / "tuned",
        split_column="split",
        init_from=tmp_path / "base" / "final",
        decoder_only=True,
        clinical_classifier=tmp_path / "clf",
        clinical_weight=1.0,
        discriminator_start=100,
        lr=1e-2,
    )
    final = train_vqgan(tuned_cfg, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert any(line.get("clin", 0) > 0 for line in lines)
    before, after = load_vqgan(tmp_path / "base" / "final"), load_vqgan(tmp_path / "tuned" / "final")
    images = torch.rand(6, 1, MICRO.resolution, MICRO.resolution) * 2 - 1
    assert torch.equal(before.encode(images), after.encode(images))
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.", "quantize.usage")) for k in changed)
    assert final["step"] == 6


def test_init_from_refuses_another_architecture(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path / "data")
    train_vqgan(micro_config(manifest, tmp_path / "a", steps=1), progress=False)
    other = dataclasses.replace(MICRO, codebook_size=32)
    cfg = micro_config(manifest, tmp_path / "b", model=other, init_from=tmp_path / "a" / "final")
    with pytest.raises(BadInputError, match="architecture differs"):
        train_vqgan(cfg, progress=False)
