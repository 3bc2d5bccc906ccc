"""FID/KID against closed forms, finding agreement by hand, the finding classifier's round trips."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from llmcxr.errors import BadInputError
from llmcxr.imaging import to_pil
from llmcxr.metrics.finding_classifier import (
    WEIGHTS_NAME,
    ClassifierTrainConfig,
    FindingClassifierConfig,
    fit_finding_classifier,
    load_finding_classifier,
    save_finding_classifier,
    train_finding_classifier,
)
from llmcxr.metrics.images import (
    FindingClassifierFeatures,
    XRVDenseNetFeatures,
    fid_kid,
    fid_kid_from_features,
    finding_agreement,
    finding_preservation,
    preservation_of_probabilities,
)
from llmcxr.records import CXRRecord

CLASSES = ("Cardiomegaly", "Pleural Effusion")
TINY = FindingClassifierConfig(image_size=16, channels=(4, 8), classes=CLASSES)


def whitened(n: int, dim: int, seed: int) -> torch.Tensor:
    """n samples whose sample mean is exactly 0 and sample covariance exactly I (float64)."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(torch.cov(x.T))
    return x @ torch.linalg.inv(chol).T


def test_fid_of_identical_features_is_zero() -> None:
    x = whitened(200, 4, seed=0)
    assert fid_kid_from_features(x, x, kid_subsets=5)["fid"] == pytest.approx(0.0, abs=1e-6)


def test_fid_of_shifted_scaled_gaussian_matches_closed_form() -> None:
    # FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2); S1 = I, S2 = 4I -> tr = d (1 + 4 - 4) = d.
    x = whitened(200, 4, seed=1)
    mu = torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=torch.float64)
    result = fid_kid_from_features(2 * x + mu, x, kid_subsets=5)
    assert result["fid"] == pytest.approx(float((mu**2).sum()) + 4, rel=1e-6)


def test_kid_sign() -> None:
    generator = torch.Generator().manual_seed(2)
    a, b = (torch.randn(200, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    same = fid_kid_from_features(a, b, kid_subsets=10, kid_subset_size=100)
    shifted = fid_kid_from_features(a + 1.0, b, kid_subsets=10, kid_subset_size=100)
    assert shifted["kid_mean"] > 0.1
    assert abs(same["kid_mean"]) < 0.05 * shifted["kid_mean"]  # unbiased: ~0, either sign
    assert shifted["kid_subset_size"] == 100


def test_fid_needs_two_images() -> None:
    with pytest.raises(BadInputError):
        fid_kid_from_features(torch.zeros(1, 3), torch.zeros(5, 3))


def test_finding_agreement_by_hand() -> None:
    probabilities = np.array([[0.9, 0.2], [0.2, 0.1], [0.7, 0.4], [0.6, 0.3]])
    labels = [{"Cardiomegaly": 1}, {"Cardiomegaly": 0}, {"Cardiomegaly": -1}, {}]
    result = finding_agreement(probabilities, labels, CLASSES)
    # uncertain-as-positive: Cardiomegaly targets 1, 0, 1, 0 -> scores {0.9, 0.7} vs {0.2, 0.6}: AUROC 1.
    cardio = result["per_class"]["Cardiomegaly"]
    assert cardio["auroc"] == 1.0
    # at 0.5: predicted 1, 0, 1, 1 -> tp 2, fp 1 -> F1 0.8.
    assert cardio["f1"] == pytest.approx(0.8)
    assert "Pleural Effusion" in result["skipped"] and result["macro_auroc"] == 1.0
    negative = finding_agreement(probabilities, labels, CLASSES, score_classes=["Cardiomegaly"])
    assert list(negative["per_class"]) == ["Cardiomegaly"]
    with pytest.raises(BadInputError):
        finding_agreement(probabilities, labels, CLASSES, score_classes=["Fracture"])


def drawn_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, size, size) in [-1, 1]: a bright centre blob = Cardiomegaly, a bright lower-left = effusion."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 2, (n, 2), generator=generator).float()
    images = -0.6 + 0.1 * torch.randn(n, 1, size, size, generator=generator)
    c, q = size // 2, size // 4
    images[targets[:, 0] == 1, :, c - q : c + q, c - q : c + q] += 1.0
    images[targets[:, 1] == 1, :, size - q :, :q] += 1.0
    return images.clamp(-1, 1), targets


def test_classifier_learns_save_load_round_trip(tmp_path) -> None:
    images, targets = drawn_images(64, 16, seed=0)
    model = fit_finding_classifier(
        images, targets, TINY, ClassifierTrainConfig(steps=80, batch_size=32, lr=1e-2)
    )
    test_images, test_targets = drawn_images(32, 16, seed=1)
    result = finding_agreement(
        model.predict(test_images).numpy(),
        [dict(zip(CLASSES, map(int, t), strict=True)) for t in test_targets],
        CLASSES,
    )
    assert result["macro_auroc"] > 0.9

    save_finding_classifier(model, tmp_path / "clf")
    loaded = load_finding_classifier(tmp_path / "clf")
    assert torch.allclose(loaded.predict(test_images), model.predict(test_images))
    assert loaded.weights_sha256 == hashlib.sha256((tmp_path / "clf" / WEIGHTS_NAME).read_bytes()).hexdigest()
    # Each distinct image scored once, in place: repeats tie exactly wherever they sit in the batch.
    repeated = test_images[torch.tensor([3, 0, 3, 5, 0, 3])]
    torch.testing.assert_close(
        loaded.predict(repeated), torch.cat([loaded.predict(test_images[[i]]) for i in (3, 0, 3, 5, 0, 3)])
    )
    assert torch.equal(loaded.predict(repeated)[0], loaded.predict(repeated)[5])
    # 64-px inputs are resized to the classifier's 16 px.
    assert loaded.predict(torch.nn.functional.interpolate(test_images, size=64)).shape == (32, 2)

    # finding preservation: identical "round trips" lose nothing; flat grey images lose everything.
    labels = [dict(zip(CLASSES, map(int, t), strict=True)) for t in test_targets]
    same = finding_preservation(loaded, test_images, test_images.clone(), labels)
    assert same["auroc_drop"] == pytest.approx(0.0)
    flat = finding_preservation(loaded, test_images, torch.full_like(test_images, -0.5), labels)
    assert flat["round_trip_macro_auroc"] == pytest.approx(0.5) and flat["auroc_drop"] > 0.4
    grey = torch.full_like(test_images, -0.5)
    from_probabilities = preservation_of_probabilities(
        loaded.predict(test_images).numpy(), loaded.predict(grey).numpy(), labels, CLASSES
    )
    assert from_probabilities == flat


def test_fid_kid_records_its_feature_network(tmp_path) -> None:
    model = fit_finding_classifier(*drawn_images(16, 16, seed=0), TINY, ClassifierTrainConfig(steps=2))
    save_finding_classifier(model, tmp_path / "clf")
    network = FindingClassifierFeatures(load_finding_classifier(tmp_path / "clf"))
    images, _ = drawn_images(12, 16, seed=3)
    result = fid_kid(images, images, network)
    assert result["fid"] == pytest.approx(0.0, abs=1e-4)
    identity = result["feature_network"]
    assert identity["name"] == "llmcxr-finding-classifier-16px" and identity["num_features"] == 16
    assert identity["weights_sha256"] == model.weights_sha256 and len(model.weights_sha256) == 64


def test_train_on_records_with_image_files(tmp_path) -> None:
    images, targets = drawn_images(24, 16, seed=4)
    records = []
    for i, (image, target) in enumerate(zip(images, targets, strict=True)):
        path = tmp_path / f"cxr{i}.png"
        to_pil(torch.nn.functional.interpolate(image[None], size=64)[0]).save(path)  # >= ImageLimits.min_side
        labels = {name: int(v) for name, v in zip(CLASSES, target, strict=True) if v}
        records.append(
            CXRRecord(
                image_id=f"cxr{i}",
                image_path=str(path),
                labels=labels,
                split="validate" if i >= 16 else "train",
            )
        )
    model, summary = train_finding_classifier(
        records, 16, tmp_path / "clf", TINY, ClassifierTrainConfig(steps=5, batch_size=8)
    )
    assert summary["n_train"] == 16 and summary["n_eval"] == 8
    assert set(summary["eval_auroc"]["per_class"]) == set(CLASSES)
    assert (
        load_finding_classifier(tmp_path / "clf").weights_sha256
        == summary["weights_sha256"]
        == model.weights_sha256
    )


def test_broken_classifier_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BadInputError, match="train-classifier"):
        load_finding_classifier(tmp_path)
    Image.new("L", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(BadInputError):
        XRVDenseNetFeatures(tmp_path / "x.png")
