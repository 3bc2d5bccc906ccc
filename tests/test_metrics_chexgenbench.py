"""The CheXGenBench image protocol: FD and PRDC pinned to hand-computed cases, and the whole protocol
on a tiny random RAD-DINO equal to torchmetrics / prdc run directly on the same features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _tiny_protocol_models import tiny_rad_dino
from llmcxr.errors import BadInputError
from llmcxr.metrics.chexgenbench import (
    RadDinoFeatures,
    chexgenbench_pixels,
    chexgenbench_scores,
    prdc_scores,
    rad_dino_features,
)
from llmcxr.metrics.images import fid_kid_from_features


def test_fd_of_two_gaussian_sets_by_hand() -> None:
    """FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)); with equal covariances only the means count."""
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.normal(size=(400, 3)))
    shifted = base + torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    assert fid_kid_from_features(shifted, base, kid_subsets=2)["fid"] == pytest.approx(5.0, abs=1e-6)
    # isotropic 1-D scales: S1 = 1, S2 = 4 -> 1 + 4 - 2 * 2 = 1
    x = torch.tensor([[-1.0], [1.0]] * 50, dtype=torch.float64)
    assert fid_kid_from_features(2 * x, x, kid_subsets=2)["fid"] == pytest.approx(1.0 * (100 / 99), rel=1e-6)


def test_prdc_by_hand() -> None:
    """Real points 0..9 on a line, k = 5: a point's ball reaches its 5th nearest neighbour. Precision,
    recall, density, coverage (Naeem et al. 2020) counted here by loops, against the package."""
    real = np.arange(10, dtype=np.float64)[:, None]
    fake = np.array([[2.5], [4.0], [6.5], [7.0], [3.0], [5.5], [5.0]])

    def radii(points):  # distance to the 5th nearest other point
        distances = np.abs(points - points.T)
        return np.sort(distances, axis=1)[:, 5]

    real_radius, fake_radius = radii(real), radii(fake)
    inside = (
        np.abs(fake - real.T) < real_radius[None, :]
    )  # (fake, real): fake j in real ball i (open, as prdc)
    expected = {
        "precision": inside.any(axis=1).mean(),
        "recall": (np.abs(real - fake.T) < fake_radius[None, :]).any(axis=1).mean(),
        "density": inside.sum() / (5 * len(fake)),
        "coverage": (np.abs(real - fake.T).min(axis=1) < real_radius).mean(),
    }
    scores = prdc_scores(real, fake)
    assert expected["precision"] == expected["recall"] == expected["coverage"] == 1.0
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value), name
    far = prdc_scores(real, fake + 100.0)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0
    with pytest.raises(BadInputError, match="more than 6 images"):
        prdc_scores(real, fake[:6])


def _write_images(folder: Path, n: int, seed: int, bright: float) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = np.clip(rng.normal(bright, 40, size=(40, 36)), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_pixels_follow_chexgenbench_loading(tmp_path: Path) -> None:
    path = _write_images(tmp_path / "a", 1, 0, 128)[0]
    pixels = chexgenbench_pixels(path)
    assert pixels.shape == (299, 299, 3) and pixels.dtype == np.uint8
    assert (pixels[..., 0] == pixels[..., 2]).all()  # a gray CXR as RGB


@pytest.mark.slow
def test_protocol_equals_torchmetrics_and_prdc_on_the_same_features(tmp_path: Path, monkeypatch) -> None:
    from prdc import compute_prdc
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tiny_rad_dino(tmp_path / "rad-dino")
    reference = _write_images(tmp_path / "ref", 12, 0, 100)
    generated = _write_images(tmp_path / "gen", 10, 1, 150)
    result = chexgenbench_scores(generated, reference, folder)
    metrics = result["metrics"]

    network = RadDinoFeatures(folder)
    real, fake = rad_dino_features(network, reference), rad_dino_features(network, generated)
    assert real.shape == (12, 16)

    class Given(torch.nn.Module):  # torchmetrics given the features already made
        num_features = 16

        def forward(self, x):
            return x

    fid = FrechetInceptionDistance(feature=Given())
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert metrics["fd_rad_dino"]["value"] == pytest.approx(float(fid.compute()), rel=1e-9)
    kid = KernelInceptionDistance(feature=Given(), subsets=100, subset_size=10)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    torch.manual_seed(0)
    assert metrics["kd_rad_dino"]["value"] == pytest.approx(float(kid.compute()[0]), rel=1e-6)
    direct = compute_prdc(real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=5)
    for name in ("precision", "recall", "density", "coverage"):
        assert metrics["prdc"][name] == pytest.approx(float(direct[name])), name
    assert metrics["fd_rad_dino"]["weights_sha256"] == network.weights_sha256
    assert metrics["fid_inception"]["not_run"].startswith("no weights")
    assert "not_run" in metrics["alignment_biovil_t"]


def test_without_rad_dino_the_protocol_says_so(tmp_path: Path) -> None:
    paths = _write_images(tmp_path / "a", 2, 0, 100)
    metrics = chexgenbench_scores(paths, paths, None)["metrics"]
    assert metrics["fd_rad_dino"]["not_run"].startswith("no weights")
    assert metrics["prdc"]["value"] is None
