"""The CheXGenBench image protocol (Dutt et al. 2025, github Raman1121/CheXGenBench ``metrics/fid.py``).

Generated CXRs are compared with reference CXRs in RAD-DINO's features (microsoft/rad-dino, a DINOv2
ViT-B/14 trained on chest X-rays), loaded from a local folder as ``transformers.Dinov2Model`` with its
image processor:

- each image is read as RGB, resized to 299 x 299 (bilinear, as torchvision's ``Resize`` on a PIL
  image), scaled to [0, 1] and back to uint8 (``ToTensor`` then ``* 255`` and a truncating cast, as
  there), then given to the RAD-DINO processor (its resize, crop and normalisation);
- the feature is the model's ``pooler_output`` (the layer-normed CLS token);
- FD (Frechet distance) and KD (kernel distance: torchmetrics' KID, cubic polynomial kernel, 100
  subsets of min(N, M) images) in those features, PRDC (Naeem et al. 2020: precision, recall,
  density, coverage) with k = 5 by the ``prdc`` package;
- Inception FID (torchmetrics, 2048-d pool features) where the user has the Inception weights and
  torch-fidelity;
- the BioViL-T image-text alignment (``metrics.biovil``: mean cosine of each generated image's and its
  prompt's embeddings) where the user has a local BioViL-T folder and each image's prompt.

FD numbers from a different RAD-DINO (or a random stand-in) are not comparable with the board's:
every result carries the SHA-256 of the weights that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmcxr.errors import BadInputError
from llmcxr.metrics.images import fid_kid_from_features
from llmcxr.metrics.report_models import MetricNotRun, weights_sha256

RESIZE = 299  # CheXGenBench resizes every image to 299 x 299 before any network sees it
PRDC_K = 5  # compute_prdc_metric's nearest_k


def chexgenbench_pixels(path: str | Path) -> np.ndarray:
    """(299, 299, 3) uint8 of one image file, made as CheXGenBench's loader makes it."""
    from PIL import Image

    from llmcxr.imaging import load_image

    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((RESIZE, RESIZE), Image.BILINEAR)
    else:  # DICOM, numpy: the project's loader gives [0, 1] floats
        gray = (np.clip(load_image(path), 0, 1) * 255).astype(np.uint8)
        rgb = Image.fromarray(gray).convert("RGB").resize((RESIZE, RESIZE), Image.BILINEAR)
    # ToTensor (/255 in float32) then * 255 and .to(uint8): a truncating round trip, kept as there
    return torch.from_numpy(np.array(rgb)).float().div(255).mul(255).to(torch.uint8).numpy()


class RadDinoFeatures(nn.Module):
    """(B, 299, 299, 3) uint8 pixels -> (B, D) RAD-DINO ``pooler_output`` features, from a local
    ``Dinov2Model`` folder holding its ``preprocessor_config.json``."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        folder = Path(folder)
        for name in ("config.json", "preprocessor_config.json"):
            if not (folder / name).is_file():
                raise BadInputError(
                    folder,
                    f"no {name}: not a local RAD-DINO folder",
                    "give the microsoft/rad-dino snapshot folder",
                )
        from transformers import AutoImageProcessor, Dinov2Model

        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.model = Dinov2Model.from_pretrained(folder, local_files_only=True).eval()
        self.num_features = self.model.config.hidden_size
        self.name = f"rad-dino:{folder.name}"
        self.weights_sha256 = weights_sha256(folder)

    @torch.inference_mode()
    def forward(self, pixels: np.ndarray) -> torch.Tensor:
        inputs = self.processor(images=list(pixels), return_tensors="pt")
        return self.model(pixel_values=inputs["pixel_values"]).pooler_output


@torch.inference_mode()
def rad_dino_features(
    network: RadDinoFeatures, paths: Sequence[str | Path], batch_size: int = 16
) -> torch.Tensor:
    """(N, D) float64 RAD-DINO features of image files, in order."""
    rows = []
    for start in range(0, len(paths), batch_size):
        pixels = np.stack([chexgenbench_pixels(p) for p in paths[start : start + batch_size]])
        rows.append(network(pixels).double())
    return torch.cat(rows) if rows else torch.zeros(0, network.num_features, dtype=torch.float64)


def prdc_scores(
    reference: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray, k: int = PRDC_K
) -> dict:
    """Precision, recall, density, coverage of generated (M, D) vs reference (N, D) features (``prdc``)."""
    try:
        from prdc import compute_prdc
    except ImportError as error:
        raise MetricNotRun(
            f"the prdc package is not importable ({error}): pip install 'llmcxr[protocols]'"
        ) from error
    reference, generated = np.asarray(reference, np.float64), np.asarray(generated, np.float64)
    if min(len(reference), len(generated)) < k + 2:  # prdc reads each side's (k+1)-th smallest distance
        raise BadInputError("images", f"PRDC with k = {k} needs more than {k + 1} images per side")
    scores = compute_prdc(real_features=reference, fake_features=generated, nearest_k=k)
    return {name: float(value) for name, value in scores.items()} | {"k": k}


def feature_distribution(
    generated: torch.Tensor, reference: torch.Tensor, seed: int = 0, k: int = PRDC_K
) -> dict[str, dict]:
    """CheXGenBench's distribution scores of generated (M, D) vs reference (N, D) features: FD, KD
    (torchmetrics' KID: 100 subsets of min(N, M)) and PRDC (k nearest neighbours); PRDC is listed as
    not run where a side has k + 1 features or fewer, or the ``prdc`` package is missing."""
    distances = fid_kid_from_features(generated, reference, seed=seed)
    result: dict[str, dict] = {
        "fd": {"value": distances["fid"]},
        "kd": {
            "value": distances["kid_mean"],
            "std": distances["kid_std"],
            "subsets": distances["kid_subsets"],
            "subset_size": distances["kid_subset_size"],
        },
    }
    if min(len(generated), len(reference)) < k + 2:
        result["prdc"] = {
            "value": None,
            "not_run": f"PRDC with k = {k} needs more than {k + 1} images per side",
        }
        return result
    try:
        result["prdc"] = prdc_scores(reference, generated, k)
    except MetricNotRun as reason:
        result["prdc"] = {"value": None, "not_run": str(reason)}
    return result


def inception_fid(
    generated: Sequence[str | Path], reference: Sequence[str | Path], weights: str | Path | None
) -> dict[str, object]:
    """torchmetrics' Inception FID on CheXGenBench's 299-px uint8 images, from local Inception weights."""
    if weights is None:
        raise MetricNotRun("no weights: give the FID Inception weights (pt_inception-2015-12-05) file")
    try:
        import torch_fidelity  # noqa: F401  (torchmetrics' Inception comes from it)
    except ImportError as error:
        raise MetricNotRun(f"torch-fidelity is not importable ({error}); it needs torchvision") from error
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights))
    for paths, real in ((reference, True), (generated, False)):
        batch = torch.from_numpy(np.stack([chexgenbench_pixels(p) for p in paths])).permute(0, 3, 1, 2)
        fid.update(batch, real=real)
    return {"value": float(fid.compute()), "weights_sha256": weights_sha256(weights)}


def biovil_alignment(
    generated: Sequence[str | Path], prompts: Sequence[str] | None, folder: str | Path | None
) -> dict[str, object]:
    """The alignment entry: the mean cosine and the weights' hashes, or why it did not run."""
    if folder is None:
        return {"value": None, "not_run": "no weights: give a local BioViL-T folder (--biovil-t)"}
    if prompts is None:
        return {"value": None, "not_run": "no prompts: give each generated image's report (--prompts)"}
    from llmcxr.metrics.biovil import BioViLT, alignment_scores

    scores = alignment_scores(BioViLT(folder), list(generated), list(prompts))
    scores.pop("per_image")
    return {"network": f"biovil-t:{Path(folder).name}", **scores}


def chexgenbench_scores(
    generated: Sequence[str | Path],
    reference: Sequence[str | Path],
    rad_dino: str | Path | None,
    inception_weights: str | Path | None = None,
    seed: int = 0,
    biovil_t: str | Path | None = None,
    prompts: Sequence[str] | None = None,
) -> dict[str, object]:
    """The CheXGenBench image metrics of generated vs reference image files; ``prompts`` (one per
    generated image, in order) and a BioViL-T folder give the image-text alignment."""
    result: dict[str, object] = {
        "protocol": "chexgenbench",
        "n_generated": len(generated),
        "n_reference": len(reference),
    }
    metrics: dict[str, object] = {}
    if rad_dino is None:
        reason = "no weights: give a local RAD-DINO (microsoft/rad-dino) folder"
        for name in ("fd_rad_dino", "kd_rad_dino", "prdc"):
            metrics[name] = {"value": None, "not_run": reason}
    else:
        network = RadDinoFeatures(rad_dino)
        reference_features = rad_dino_features(network, list(reference))
        generated_features = rad_dino_features(network, list(generated))
        identity = {"network": network.name, "weights_sha256": network.weights_sha256}
        distribution = feature_distribution(generated_features, reference_features, seed)
        metrics["fd_rad_dino"] = {**distribution["fd"], **identity}
        metrics["kd_rad_dino"] = {**distribution["kd"], **identity}
        metrics["prdc"] = {**distribution["prdc"], **identity}
    try:
        metrics["fid_inception"] = inception_fid(generated, reference, inception_weights)
    except MetricNotRun as reason:
        metrics["fid_inception"] = {"value": None, "not_run": str(reason)}
    metrics["alignment_biovil_t"] = biovil_alignment(generated, prompts, biovil_t)
    result["metrics"] = metrics
    return result
