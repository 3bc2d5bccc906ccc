"""A small finding classifier the project trains itself: CXR image -> CheXpert-14 probabilities.

It serves two evaluations where no pretrained CXR network is at hand (offline, no weights):
- finding agreement: run it on images generated from reports and score its probabilities against
  those reports' labels (LLM-CXR, Lee et al. 2024, score report->CXR this way with a pretrained
  classifier);
- FID/KID: its penultimate features (``FindingClassifier.features``) stand in for Inception's.
  A FID is only comparable with FIDs from the same network and weights, so every result carries
  ``name`` and ``weights_sha256`` (the SHA-256 of the saved safetensors bytes).

Layout: four stride-2 conv stages (GroupNorm, SiLU) -> global average and max pool, concatenated
-> features (B, D = 2 x last width) -> linear -> logits (B, C). Inputs are (B, 1, H, W) in [-1, 1] (``llmcxr.imaging.preprocess``), and
are resized to the training size first, so one classifier scores 64-px and 256-px images alike.
A folder holds ``classifier_config.json``, ``classifier.safetensors`` and ``train_summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from llmcxr import atomic
from llmcxr.config import load_config, save_config, to_dict
from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14
from llmcxr.records import CXRRecord

CONFIG_NAME = "classifier_config.json"
WEIGHTS_NAME = "classifier.safetensors"
SUMMARY_NAME = "train_summary.json"


@dataclass
class FindingClassifierConfig:
    """Shape of the classifier; saved beside its weights."""

    image_size: int = 64
    """Side in pixels the classifier sees; inputs of another size are resized to it (area/bilinear)."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    """Width of each stride-2 stage; twice the last is the feature size D used for FID/KID."""
    classes: tuple[str, ...] = CHEXPERT_14
    """Output order of the logits (CheXpert names, ``llmcxr.findings``)."""
    uncertain: str = "positive"
    """How uncertain labels were counted when training: "positive" or "negative"."""


@dataclass
class ClassifierTrainConfig:
    """How ``train_finding_classifier`` trains (AdamW, one-cycle: ~8 minutes at 64 px on one busy core)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    max_shift: int = 3
    """Random translation in pixels (train-time augmentation). No flips: laterality is a finding."""
    threads: int = 1
    """Torch threads while training. Measured on the 2-core dev machine under load: one step of the
    default net took 0.27 s on 1 thread and 3.2 s on 2 (OpenMP threads spin waiting for each other)."""
    train_splits: tuple[str, ...] = ("train",)
    """Record splits to train on (records with no split count as train)."""
    eval_split: str = "validate"
    """Split whose per-class AUROC goes into the summary (skipped where absent)."""


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """(B, in, H, W) -> (B, out, H/2, W/2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.SiLU(),
    )


class FindingClassifier(nn.Module):
    """(B, 1, H, W) in [-1, 1] -> logits (B, C); ``features`` gives the pooled (B, D) before the head."""

    def __init__(self, config: FindingClassifierConfig) -> None:
        super().__init__()
        self.config = config
        widths = (1, *config.channels)
        self.stages = nn.Sequential(*(_stage(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.head = nn.Linear(2 * config.channels[-1], len(config.classes))
        self.weights_sha256 = ""  # set by save/load: the identity FID/KID results record

    @property
    def num_features(self) -> int:
        return 2 * self.config.channels[-1]

    def to_input_size(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 1, S, S) at the training size S (antialiased bilinear where H, W != S)."""
        size = self.config.image_size
        if images.shape[-2:] == (size, size):
            return images
        return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, D) pooled penultimate features: [spatial mean, spatial max] per channel.

        Max pooling keeps small local findings (a nodule, a fracture, a pneumothorax edge) that the
        mean dilutes. benchmarks/finding_classifier.py, 2000-image world at 64 px: average pooling
        alone and 600 steps gave test macro-AUROC 0.862 over the drawn findings (Fracture 0.59, Lung
        Lesion 0.79, Pneumothorax 0.75); mean+max and 1000 steps (two changes at once) gave 0.946
        (0.72, 0.86, 1.0).
        """
        maps = self.stages(self.to_input_size(images.float()))  # (B, C, h, w)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def block_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each stage: what the VQ-GAN's clinical feature loss matches."""
        x, feats = self.to_input_size(images.float()), []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """(N, 1, H, W) -> probabilities (N, C), in eval mode. Each distinct image is classified once:
        batched convolutions can differ in the last bit from one batch position to another, which would
        break the ties that a baseline drawing one image for every report must score as (AUROC 0.5)."""
        self.eval()
        distinct, copy_of = torch.unique(images.flatten(1), dim=0, return_inverse=True)
        distinct = distinct.view(-1, *images.shape[1:])
        probabilities = torch.cat(
            [torch.sigmoid(self(distinct[i : i + batch_size])) for i in range(0, len(distinct), batch_size)]
        )
        return probabilities[copy_of]


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's safetensors serialization (equal to the saved file's hash)."""
    return hashlib.sha256(save_safetensors_bytes(_state(model))).hexdigest()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def save_finding_classifier(
    model: FindingClassifier, folder: str | Path, summary: dict | None = None
) -> None:
    """Write config, weights (and a training summary) atomically; sets ``model.weights_sha256``."""
    folder = Path(folder)
    payload = save_safetensors_bytes(_state(model))
    atomic.write_bytes(folder / WEIGHTS_NAME, payload)
    save_config(model.config, folder / CONFIG_NAME)
    model.weights_sha256 = hashlib.sha256(payload).hexdigest()
    if summary is not None:
        atomic.write_json(folder / SUMMARY_NAME, {**summary, "weights_sha256": model.weights_sha256})


def load_finding_classifier(folder: str | Path) -> FindingClassifier:
    """Load a saved classifier (eval mode) from its folder; BadInputError for a missing/broken folder."""
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file() or not (folder / CONFIG_NAME).is_file():
        raise BadInputError(
            folder,
            f"not a finding classifier folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})",
            "train one with `llmcxr eval train-classifier --world DIR --out DIR`",
        )
    config = load_config(FindingClassifierConfig, folder / CONFIG_NAME)
    model = FindingClassifier(config)
    payload = weights.read_bytes()
    try:
        model.load_state_dict(load_safetensors_bytes(payload))
    except (RuntimeError, ValueError) as err:
        raise BadInputError(weights, f"weights do not fit {CONFIG_NAME}: {err}") from None
    model.weights_sha256 = hashlib.sha256(payload).hexdigest()
    return model.eval()


def image_labels(record: CXRRecord) -> dict[str, int]:
    """The labels of what is in the image: the report's, less findings a renderer could not draw.

    A synthetic world records ``extra["undrawn"]``: findings its report states that are not in the
    picture; for an image classifier they are noise, so they count as not present.
    """
    undrawn = set(record.extra.get("undrawn") or ())
    return {name: value for name, value in record.labels.items() if name not in undrawn}


def label_targets(records: Sequence[CXRRecord], classes: Sequence[str], uncertain: str) -> torch.Tensor:
    """(N, C) float 0/1 training targets from ``image_labels`` (uncertain counted as ``uncertain`` says)."""
    from llmcxr.metrics.clinical import LabelConvention, binarize_labels

    convention = LabelConvention(uncertain=uncertain)
    return torch.from_numpy(binarize_labels([image_labels(r) for r in records], classes, convention)).float()


def load_record_images(records: Sequence[CXRRecord], size: int) -> torch.Tensor:
    """(N, 1, size, size) in [-1, 1] from each record's ``image_path``."""
    from llmcxr.imaging import load_cxr

    missing = [r.image_id for r in records if not r.image_path]
    if missing:
        raise BadInputError(
            missing[0], f"{len(missing)} record(s) have no image_path", "give records with images"
        )
    return (
        torch.stack([load_cxr(r.image_path, size) for r in records])
        if records
        else torch.zeros(0, 1, size, size)
    )


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block on ``count`` torch threads, then restore the previous count.

    Small CPU workloads here run far faster on one thread than on two on the shared 2-core machine
    (see ``ClassifierTrainConfig.threads``); KID's 100 small kernel matrices likewise.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate the batch by one random (dy, dx) in [-max_shift, max_shift], padding with edge pixels."""
    if max_shift <= 0:
        return images
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    size = images.shape[-1]
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    top, left = max_shift + dy, max_shift + dx
    return padded[..., top : top + size, left : left + size]


def fit_finding_classifier(
    images: torch.Tensor,
    targets: torch.Tensor,
    config: FindingClassifierConfig,
    train: ClassifierTrainConfig = ClassifierTrainConfig(),
    log: Callable[[str], None] | None = None,
) -> FindingClassifier:
    """Train on images (N, 1, S, S) in [-1, 1] with multi-label targets (N, C) by BCE; returns eval mode."""
    with torch_threads(train.threads):
        return _fit(images, targets, config, train, log)


def _fit(
    images: torch.Tensor,
    targets: torch.Tensor,
    config: FindingClassifierConfig,
    train: ClassifierTrainConfig,
    log: Callable[[str], None] | None,
) -> FindingClassifier:
    torch.manual_seed(train.seed)
    generator = torch.Generator().manual_seed(train.seed)
    model = FindingClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train.lr, total_steps=max(1, train.steps)
    )
    images = model.to_input_size(images)
    model.train()
    for step in range(train.steps):
        batch = torch.randint(0, len(images), (min(train.batch_size, len(images)),), generator=generator)
        logits = model(_random_shift(images[batch], train.max_shift, generator))
        loss = F.binary_cross_entropy_with_logits(logits, targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if log and (step % 100 == 0 or step == train.steps - 1):
            log(f"step {step + 1}/{train.steps} loss {loss.item():.4f}")
    return model.eval()


def train_finding_classifier(
    records: Sequence[CXRRecord],
    size: int = 64,
    out: str | Path | None = None,
    config: FindingClassifierConfig | None = None,
    train: ClassifierTrainConfig = ClassifierTrainConfig(),
    log: Callable[[str], None] | None = None,
) -> tuple[FindingClassifier, dict]:
    """Train a classifier on labelled records (e.g. ``read_synthetic_world``); save it to ``out`` if given.

    Returns the model and a summary: sizes, seconds, and the per-class AUROC on ``train.eval_split``.
    """
    from llmcxr.metrics.clinical import auroc_per_class

    config = config or FindingClassifierConfig(image_size=size)
    train_records = [r for r in records if r.split in train.train_splits or r.split is None]
    eval_records = [r for r in records if r.split == train.eval_split]
    if not train_records:
        raise BadInputError("records", f"no records in splits {train.train_splits}", "check the split names")
    started = time.perf_counter()
    model = fit_finding_classifier(
        load_record_images(train_records, config.image_size),
        label_targets(train_records, config.classes, config.uncertain),
        config,
        train,
        log,
    )
    summary: dict = {
        "config": to_dict(config),
        "train": to_dict(train),
        "n_train": len(train_records),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    if eval_records:
        probabilities = model.predict(load_record_images(eval_records, config.image_size)).numpy()
        targets = label_targets(eval_records, config.classes, config.uncertain).numpy()
        summary["eval_split"] = train.eval_split
        summary["n_eval"] = len(eval_records)
        summary["eval_auroc"] = auroc_per_class(probabilities, targets, config.classes)
    if out is not None:
        save_finding_classifier(model, out, summary)
    else:
        model.weights_sha256 = weights_sha256(model)
    summary["weights_sha256"] = model.weights_sha256
    return model, summary


def read_train_summary(folder: str | Path) -> dict:
    path = Path(folder) / SUMMARY_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
