"""Generated-image quality: FID and KID in a CXR feature space, and finding agreement.

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) compare feature distributions of
generated and reference images; we use torchmetrics' implementations with a CXR feature network
in place of ImageNet Inception:
- ``FindingClassifierFeatures``: the project's own finding classifier (offline, trained here);
- ``XRVDenseNetFeatures``: a torchxrayvision DenseNet-121, where the user has its weights.
FIDs from different networks (or weights) are not comparable, so every result names the network
and the SHA-256 of its weights.

Finding agreement scores a finding classifier's probabilities on generated images against the
labels of the reports they were generated from (per-class AUROC and F1, macro-AUROC), as LLM-CXR
(Lee et al. 2024) evaluate report->CXR. Reconstruction PSNR/SSIM is ``llmcxr.metrics.reconstruction``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from llmcxr.errors import BadInputError
from llmcxr.metrics.clinical import LabelConvention, auroc_per_class, binarize_labels, precision_recall_f1
from llmcxr.metrics.finding_classifier import FindingClassifier, torch_threads


class FindingClassifierFeatures(nn.Module):
    """(B, 1, H, W) in [-1, 1] -> (B, D) penultimate features of a ``FindingClassifier``."""

    def __init__(self, classifier: FindingClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.num_features
        self.name = f"llmcxr-finding-classifier-{classifier.config.image_size}px"
        self.weights_sha256 = classifier.weights_sha256

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


class XRVDenseNetFeatures(nn.Module):
    """(B, 1, H, W) in [-1, 1] -> (B, 1024) features of a torchxrayvision DenseNet-121.

    torchxrayvision is optional and its weights are not downloaded: give a safetensors state dict
    of ``xrv.models.DenseNet`` (e.g. densenet121-res224-all converted once with
    ``safetensors.torch.save_file(model.state_dict(), PATH)``). Inputs are resized to 224 px and
    scaled to [-1024, 1024], the range ``xrv.datasets.normalize`` produces.
    """

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        weights = Path(weights)
        try:
            import torchxrayvision as xrv
        except ImportError as err:
            raise BadInputError(
                weights,
                f"the torchxrayvision feature network needs the torchxrayvision package ({err})",
                "pip install torchxrayvision, or use the project's own classifier (--classifier DIR)",
            ) from None
        if not weights.is_file() or weights.suffix != ".safetensors":
            raise BadInputError(
                weights,
                "torchxrayvision DenseNet weights must be a local .safetensors state dict",
                "convert the .pt once: safetensors.torch.save_file(xrv_model.state_dict(), 'densenet.safetensors')",
            )
        from safetensors.torch import load_file

        state = load_file(weights)
        num_classes = state["classifier.weight"].shape[0] if "classifier.weight" in state else 18
        self.model = xrv.models.DenseNet(weights=None, num_classes=num_classes)
        self.model.load_state_dict(state, strict=False)
        self.model.eval()
        self.num_features = 1024
        self.name = f"torchxrayvision-densenet121:{weights.name}"
        self.weights_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = nn.functional.interpolate(images.float(), size=(224, 224), mode="bilinear", antialias=True)
        return self.model.features2(images * 1024.0)


class _GivenFeatures(nn.Module):
    """Identity: lets torchmetrics' FID/KID take features already extracted, (B, D) -> (B, D)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def network_identity(network: nn.Module) -> dict[str, object]:
    """What a FID/KID result must carry: which network produced the features."""
    return {
        "name": getattr(network, "name", type(network).__name__),
        "weights_sha256": getattr(network, "weights_sha256", "") or "unknown",
        "num_features": int(getattr(network, "num_features", 0)),
    }


@torch.inference_mode()
def extract_features(network: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """images (N, 1, H, W) in [-1, 1] -> float64 features (N, D)."""
    network.eval()
    return torch.cat(
        [network(images[i : i + batch_size]).double() for i in range(0, len(images), batch_size)]
    )


def fid_kid_from_features(
    generated: torch.Tensor,
    reference: torch.Tensor,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID (mean, std over subsets) of two feature sets (N, D) and (M, D), by torchmetrics.

    KID's subset size is capped at min(N, M); its subsets are drawn with ``seed`` so reruns agree.
    """
    if len(generated) < 2 or len(reference) < 2:
        raise BadInputError(
            "images", f"FID/KID need at least 2 images per side, got {len(generated)} and {len(reference)}"
        )
    dim = generated.shape[1]
    fid = FrechetInceptionDistance(feature=_GivenFeatures(dim))
    fid.update(reference.double(), real=True)
    fid.update(generated.double(), real=False)
    subset = min(kid_subset_size, len(generated), len(reference))
    with warnings.catch_warnings():  # "KID will save all extracted features": we hand it features anyway
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_GivenFeatures(dim), subsets=kid_subsets, subset_size=subset)
    kid.update(reference.double(), real=True)
    kid.update(generated.double(), real=False)
    with torch.random.fork_rng(), torch_threads(1):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "kid_subsets": kid_subsets,
    }


def fid_kid(
    generated: torch.Tensor, reference: torch.Tensor, network: nn.Module, batch_size: int = 64, seed: int = 0
) -> dict[str, object]:
    """FID/KID of generated (N, 1, H, W) vs reference (M, 1, H, W) images in [-1, 1], in ``network``'s features."""
    scores = fid_kid_from_features(
        extract_features(network, generated, batch_size),
        extract_features(network, reference, batch_size),
        seed=seed,
    )
    return {
        **scores,
        "n_generated": len(generated),
        "n_reference": len(reference),
        "feature_network": network_identity(network),
    }


def finding_agreement(
    probabilities: np.ndarray,
    labels: Sequence[Mapping[str, int]],
    classes: Sequence[str],
    convention: LabelConvention = LabelConvention(),
    threshold: float = 0.5,
    score_classes: Sequence[str] | None = None,
) -> dict[str, object]:
    """A classifier's probabilities (N, C: ``classes`` order) on generated images vs their reports' labels.

    ``score_classes`` restricts the scoring to some classes (e.g. the findings a renderer draws).
    Classes whose labels hold one value only get no AUROC and are left out of the macro-AUROC.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    chosen = list(score_classes) if score_classes is not None else list(classes)
    unknown = [c for c in chosen if c not in classes]
    if unknown:
        raise BadInputError("classes", f"{unknown} are not among the classifier's classes {list(classes)}")
    columns = [list(classes).index(c) for c in chosen]
    scores = probabilities[:, columns]
    targets = binarize_labels(labels, chosen, convention)
    auroc = auroc_per_class(scores, targets, chosen)
    f1 = precision_recall_f1(targets, (scores >= threshold).astype(np.int64), chosen)
    per_class = {
        name: {**auroc["per_class"][name], **f1["per_class"][name]}  # type: ignore[index]
        for name in chosen
    }
    return {
        "macro_auroc": auroc["macro_auroc"],
        "n_classes_scored": auroc["n_classes_scored"],
        "skipped": auroc["skipped"],
        "micro_f1": f1["micro"]["f1"],  # type: ignore[index]
        "macro_f1": f1["macro"]["f1"],  # type: ignore[index]
        "threshold": threshold,
        "convention": convention.describe(),
        "n_images": int(len(probabilities)),
        "per_class": per_class,
    }


def finding_preservation(
    classifier: FindingClassifier,
    originals: torch.Tensor,
    round_trips: torch.Tensor,
    labels: Sequence[Mapping[str, int]],
    score_classes: Sequence[str] | None = None,
    convention: LabelConvention = LabelConvention(),
) -> dict[str, object]:
    """Does an image tokenizer keep the findings? The classifier's agreement with the labels on the
    originals (N, 1, H, W) vs on their VQ round trips (N, 1, H, W); ``auroc_drop`` = original - round trip."""
    if originals.shape != round_trips.shape:
        raise ValueError(
            f"originals {tuple(originals.shape)} and round trips {tuple(round_trips.shape)} differ"
        )
    return preservation_of_probabilities(
        classifier.predict(originals).numpy(),
        classifier.predict(round_trips).numpy(),
        labels,
        classifier.config.classes,
        score_classes,
        convention,
    )


def preservation_of_probabilities(
    on_originals: np.ndarray,
    on_round_trips: np.ndarray,
    labels: Sequence[Mapping[str, int]],
    classes: Sequence[str],
    score_classes: Sequence[str] | None = None,
    convention: LabelConvention = LabelConvention(),
) -> dict[str, object]:
    """``finding_preservation`` from the classifier's (N, C) probabilities on both image sets, for a
    caller that has them already."""
    original = finding_agreement(on_originals, labels, classes, convention, score_classes=score_classes)
    round_trip = finding_agreement(on_round_trips, labels, classes, convention, score_classes=score_classes)
    drop = None
    if original["macro_auroc"] is not None and round_trip["macro_auroc"] is not None:
        drop = original["macro_auroc"] - round_trip["macro_auroc"]
    return {
        "original_macro_auroc": original["macro_auroc"],
        "round_trip_macro_auroc": round_trip["macro_auroc"],
        "auroc_drop": drop,
        "original": original,
        "round_trip": round_trip,
    }
