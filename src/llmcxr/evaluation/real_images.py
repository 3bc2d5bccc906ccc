"""Report -> CXR on real data, for ``llmcxr eval run --source manifest|mimic|iu`` (``real_data.py``).

The model draws an image from the report of each test study that has an image (``generate.py``:
generated/<image_id>.png, per batch, resumable), and every system's images are scored against the
test images:

- FD, KD and PRDC (``metrics.chexgenbench.feature_distribution``) in RAD-DINO features with
  CheXGenBench's preprocessing where a local RAD-DINO folder is given, else in the finding
  classifier's features (then not comparable with CheXGenBench's board; eval.json names the network);
- finding agreement: the finding classifier's per-class AUROC against the labels of the report each
  image was drawn from, macro-AUROC over the classes where both label values occur.

Systems: ``model``; ``mode_token_map``, the VQ-GAN's decoding of the training images' per-position
mode code, one image for every report (what a model that ignores the report could draw); and two
ceilings: ``vq_round_trip`` (the test images through the VQ-GAN: what its codes can hold) and
``reference_images`` (the test images themselves: the classifier's own agreement with the labels).

The finding classifier: the one given, else one trained here on the train split's images (validate
split held out for its AUROC), cached in out/classifier.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from llmcxr import atomic
from llmcxr.evaluation.baselines import MODE_IMAGE, mode_token_image
from llmcxr.evaluation.files import label_unlabelled
from llmcxr.evaluation.run_folder import RunFolder, load_generated_images, png_bytes, safe_image_id
from llmcxr.metrics.clinical import LabelConvention, labeler_name
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    FindingClassifier,
    FindingClassifierConfig,
    load_finding_classifier,
    load_record_images,
    read_train_summary,
    train_finding_classifier,
)
from llmcxr.records import CXRRecord
from llmcxr.reports import RuleLabeler

ROUND_TRIPS = "vq_round_trip"


def fill_labels(records: Sequence[CXRRecord]) -> str:
    """Give every record labels: its own (a manifest's ``labels`` column, MIMIC's CheXpert table) where
    it has them, else the rule labeler's on its report. Returns what eval.json says about them."""
    unlabelled = label_unlabelled(records)
    rules = f"the rule labeler ({labeler_name(RuleLabeler())}, not CheXbert) on the reports"
    if not unlabelled:
        return "the data's own labels"
    if len(unlabelled) == len(records):
        return f"{rules}: the data has no labels"
    return f"the data's own labels; {rules} for the {len(unlabelled)} of {len(records)} studies without"


def real_finding_classifier(
    classifier: Path | None,
    records: Sequence[CXRRecord],
    folder: RunFolder,
    train: ClassifierTrainConfig,
    size: int,
    log: Callable[[str], None],
) -> tuple[FindingClassifier, dict]:
    """The given classifier, else the one trained here on ``records``' train images (cached), else
    train it now. ``records``: train and validate studies with images and labels."""
    if classifier is not None:
        return load_finding_classifier(classifier), {"source": str(classifier)}
    summary = read_train_summary(folder.classifier)
    if not summary:  # the summary is written last: its absence means no finished classifier here
        log(f"training the finding classifier on {len(records)} images ({train.steps} steps, {size} px)")
        started = time.perf_counter()
        _, summary = train_finding_classifier(
            records, size, folder.classifier, FindingClassifierConfig(image_size=size), train, log
        )
        folder.add_seconds("classifier", time.perf_counter() - started)
    return load_finding_classifier(folder.classifier), {
        "source": f"trained by this run on the train split's images, {folder.classifier}",
        "n_train": summary.get("n_train"),
        "train_seconds": summary.get("train_seconds"),
        "validate_macro_auroc": (summary.get("eval_auroc") or {}).get("macro_auroc"),
    }


def round_trip_file(folder: RunFolder, image_id: str) -> Path:
    return folder.baselines / ROUND_TRIPS / f"{safe_image_id(image_id)}.png"


@torch.inference_mode()
def write_baseline_images(
    vq, vq_folder: Path, train: Sequence[CXRRecord], items: Sequence[CXRRecord], folder: RunFolder, advance
) -> None:
    """baselines/mode_token_map.png from the training images' codes (cached across runs) and
    baselines/vq_round_trip/<image_id>.png of each test image not there yet."""
    from llmcxr.evaluation.files import vq_round_trip
    from llmcxr.imaging import to_pil

    device = next(vq.parameters()).device
    mode_token_image(vq, vq_folder, train, folder, 16, advance)
    todo = [r for r in items if not round_trip_file(folder, r.image_id).is_file()]
    for start in range(0, len(todo), 16):
        chunk = todo[start : start + 16]
        round_trips = vq_round_trip(vq, load_record_images(chunk, vq.cfg.resolution).to(device)).cpu()
        for record, image in zip(chunk, round_trips, strict=True):
            atomic.write_bytes(round_trip_file(folder, record.image_id), png_bytes(to_pil(image)))


def system_files(items: Sequence[CXRRecord], folder: RunFolder) -> dict[str, list[Path]]:
    """The image file of each test study, by system (the mode map: one file for every study)."""
    return {
        "model": [folder.generated_image(r.image_id) for r in items],
        "mode_token_map": [folder.baselines / MODE_IMAGE] * len(items),
        "vq_round_trip": [round_trip_file(folder, r.image_id) for r in items],
        "reference_images": [Path(r.image_path) for r in items],  # type: ignore[arg-type]
    }


def score_real_images(
    items: Sequence[CXRRecord],
    folder: RunFolder,
    classifier: FindingClassifier,
    rad_dino: Path | None,
    seed: int = 0,
) -> dict:
    """Each system's finding agreement with the items' labels and (but the reference itself) its
    FD/KD/PRDC against the test images, in RAD-DINO features where ``rad_dino`` is given."""
    from llmcxr.metrics.chexgenbench import RadDinoFeatures, feature_distribution, rad_dino_features
    from llmcxr.metrics.images import (
        FindingClassifierFeatures,
        extract_features,
        finding_agreement,
        network_identity,
    )

    files = system_files(items, folder)
    images = {
        name: load_generated_images(paths, classifier.config.image_size) for name, paths in files.items()
    }
    if rad_dino is not None:
        network = RadDinoFeatures(rad_dino)
        features = {name: rad_dino_features(network, paths) for name, paths in files.items()}
        space = "RAD-DINO pooler_output, CheXGenBench preprocessing (299 px RGB, the RAD-DINO processor)"
    else:
        network = FindingClassifierFeatures(classifier)
        features = {name: extract_features(network, batch) for name, batch in images.items()}
        space = "the finding classifier's features (no --rad-dino): not comparable with CheXGenBench"
    labels = [r.labels for r in items]
    convention = LabelConvention()  # uncertain counts as positive, as CheXbert-F1 counts it
    systems: dict[str, dict] = {}
    for name, batch in images.items():
        probabilities = classifier.predict(batch).numpy()
        systems[name] = {
            "finding_agreement": finding_agreement(
                probabilities, labels, classifier.config.classes, convention
            )
        }
        if name != "reference_images":
            systems[name]["distribution"] = feature_distribution(
                features[name], features["reference_images"], seed
            )
    return {
        "feature_network": {**network_identity(network), "space": space},
        "systems": systems,
    }
