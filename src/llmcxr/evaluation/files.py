"""File-level evaluations: what ``llmcxr eval reports|images|vqa|train-classifier`` run.

Each function reads files, calls the metric modules and returns one JSON-ready dict; the CLI only
parses arguments and prints. ``llmcxr eval run`` (``run.py``, end to end) reuses the pieces.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from llmcxr.errors import BadInputError
from llmcxr.evaluation.prediction_files import (
    id_column,
    pair_by_id,
    read_rows,
    report_text,
    rows_for_ids,
)
from llmcxr.metrics.clinical import LabelConvention, label_reports, labeler_name, score_report_labels
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    FindingClassifier,
    FindingClassifierConfig,
    load_finding_classifier,
    train_finding_classifier,
)
from llmcxr.metrics.images import (
    FindingClassifierFeatures,
    extract_features,
    fid_kid,
    finding_agreement,
    network_identity,
)
from llmcxr.metrics.language import language_scores
from llmcxr.metrics.radgraph import RadGraphModel, radgraph_f1
from llmcxr.metrics.vqa import vqa_accuracy
from llmcxr.records import QA, CXRRecord
from llmcxr.reports import Labeler, RuleLabeler
from llmcxr.tables import row_labels


def evaluate_report_files(
    pred_path: str | Path,
    ref_path: str | Path,
    labeler: Labeler | None = None,
    convention: LabelConvention = LabelConvention(),
    meteor: bool = True,
    radgraph: RadGraphModel | None = None,
) -> dict[str, object]:
    """Clinical efficacy and language scores of generated reports, rows paired by id; RadGraph F1
    too where ``radgraph`` says where the user's RadGraph model is."""
    pairs = pair_by_id(pred_path, ref_path)
    predictions = [report_text(pred, pred_path) for _, pred, _ in pairs]
    references = [report_text(ref, ref_path) for _, _, ref in pairs]
    started = time.perf_counter()
    clinical = score_report_labels(predictions, references, labeler, convention)
    language = language_scores(predictions, references, meteor=meteor)
    graph = {} if radgraph is None else {"radgraph": radgraph_f1(predictions, references, radgraph)}
    return {
        "task": "cxr_to_report",
        "n": len(pairs),
        "predictions": str(pred_path),
        "references": str(ref_path),
        "clinical": clinical,
        "language": language,
        **graph,
        "seconds": round(time.perf_counter() - started, 2),
    }


def image_entries(folder_or_manifest: str | Path) -> list[tuple[str, Path]]:
    """(id, path) of every image in a folder or manifest; none is an error."""
    from llmcxr.imaging import list_images

    entries = list_images(Path(folder_or_manifest))
    if not entries:
        raise BadInputError(
            folder_or_manifest, "no images found", "give a folder of PNG/JPEG/DICOM files or a manifest"
        )
    return [(image_id, Path(path)) for image_id, path in entries]


def load_image_set(folder_or_manifest: str | Path, size: int) -> tuple[list[str], torch.Tensor]:
    """(ids, images (N, 1, size, size) in [-1, 1]) of every image in a folder or manifest."""
    from llmcxr.imaging import load_cxr

    entries = image_entries(folder_or_manifest)
    return [image_id for image_id, _ in entries], torch.stack([load_cxr(path, size) for _, path in entries])


def _labels_for(ids: list[str], labels_path: str | Path, labeler: Labeler) -> list[dict[str, int]]:
    """Labels of the reports each generated image came from: a ``labels`` column, else the labelled report."""
    rows = rows_for_ids(
        labels_path, ids, "generated image id(s) have no row", "name each image after its report's id"
    )
    labels: list[dict[str, int] | None] = [row_labels(row, labels_path) for row in rows]
    unlabeled = [n for n, value in enumerate(labels) if value is None]
    if unlabeled:
        texts = [report_text(rows[n], labels_path) for n in unlabeled]
        for n, value in zip(unlabeled, label_reports(labeler, texts), strict=True):
            labels[n] = value
    return [value or {} for value in labels]


def drawn_findings(labels_path: str | Path) -> list[str]:
    """The findings a synthetic world's renderer drew (union of ``extra["drawn"]`` over its manifest rows)."""
    drawn = {name for row in read_rows(labels_path) for name in (row.get("extra") or {}).get("drawn", [])}
    if not drawn:
        raise BadInputError(
            labels_path, "no extra.drawn findings in these rows", "pass a synthetic world's manifest.jsonl"
        )
    return sorted(drawn)


def evaluate_image_folders(
    generated: str | Path,
    reference: str | Path,
    classifier_dir: str | Path,
    labels_path: str | Path | None = None,
    score_classes: list[str] | None = None,
    labeler: Labeler | None = None,
    convention: LabelConvention = LabelConvention(),
) -> dict[str, object]:
    """FID/KID (generated vs reference, in the classifier's features) and, given labels, finding agreement.

    ``score_classes``: the findings agreement is scored on (default all the classifier's); ``["drawn"]``
    means those a synthetic world's renderer drew (``labels_path`` is then its manifest.jsonl).
    """
    classifier = load_finding_classifier(classifier_dir)
    size = classifier.config.image_size
    started = time.perf_counter()
    generated_ids, generated_images = load_image_set(generated, size)
    _, reference_images = load_image_set(reference, size)
    result: dict[str, object] = {
        "task": "report_to_cxr",
        "generated": str(generated),
        "reference": str(reference),
        "distribution": fid_kid(generated_images, reference_images, FindingClassifierFeatures(classifier)),
    }
    if labels_path is not None:
        if score_classes == ["drawn"]:
            score_classes = [c for c in drawn_findings(labels_path) if c in classifier.config.classes]
        labels = _labels_for(generated_ids, labels_path, labeler or RuleLabeler())
        probabilities = classifier.predict(generated_images).numpy()
        result["finding_agreement"] = finding_agreement(
            probabilities, labels, classifier.config.classes, convention, score_classes=score_classes
        )
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _qa_rows(path: str | Path) -> dict[tuple[str, str], dict]:
    """{(id, question): row} of a VQA file: one row per question, or one row per image with a ``qa`` list."""
    rows = read_rows(path)
    column = id_column(rows, path)
    out: dict[tuple[str, str], dict] = {}
    for number, row in enumerate(rows, start=1):
        items = row["qa"] if isinstance(row.get("qa"), list) else [row]
        for item in items:
            if "question" not in item or "answer" not in item:
                raise BadInputError(
                    path, f"row {number} lacks question/answer", "give question and answer columns"
                )
            key = (str(row[column]), " ".join(str(item["question"]).split()))
            out[key] = item
    return out


def evaluate_vqa_files(pred_path: str | Path, ref_path: str | Path) -> dict[str, object]:
    """VQA accuracy by question kind, predicted answers paired with reference questions by (id, question)."""
    predictions, references = _qa_rows(pred_path), _qa_rows(ref_path)
    missing = [k for k in references if k not in predictions]
    if missing:
        raise BadInputError(
            pred_path, f"{len(missing)} reference question(s) have no answer, e.g. {missing[:2]}"
        )
    qas = [
        QA(
            question=q,
            answer=str(row["answer"]),
            kind=str(row.get("kind") or "other"),
            finding=row.get("finding"),
        )
        for (_, q), row in references.items()
    ]
    answers = [str(predictions[key]["answer"]) for key in references]
    return {
        "task": "vqa",
        "predictions": str(pred_path),
        "references": str(ref_path),
        **vqa_accuracy(answers, qas),
    }


def score_reports(
    predictions: list[str],
    references: list[str],
    labeler: Labeler,
    convention: LabelConvention,
    meteor: bool,
    labels: tuple[list[dict[str, int]], list[dict[str, int]]] | None = None,
) -> dict[str, object]:
    """Clinical efficacy and language scores of one set of generated (or baseline) reports
    (``labels``: their and the references' label rows, where the caller has them already)."""
    return {
        "clinical": score_report_labels(predictions, references, labeler, convention, labels),
        "language": language_scores(predictions, references, meteor=meteor),
    }


def report_baseline_predictions(
    train: list[CXRRecord], test: list[CXRRecord], classifier: FindingClassifier | None = None
) -> dict[str, list[str]]:
    """{baseline name: one report per ``test`` record}: the most common training report and, where
    every record has its image, the report of the nearest training image by pixels (and by the
    classifier's features, given one)."""
    from llmcxr.metrics.baselines import most_common_report, nearest_neighbour_reports, pixel_features
    from llmcxr.metrics.finding_classifier import load_record_images

    train_reports = [r.report for r in train]
    predictions = {"most_common_report": [most_common_report(train_reports)] * len(test)}
    if not all(has_image(r) for r in [*train, *test]):  # reports only (IU without its images)
        return predictions
    size = classifier.config.image_size if classifier is not None else 64  # pixels are pooled to 16 px anyway
    train_images, test_images = load_record_images(train, size), load_record_images(test, size)
    predictions["nearest_neighbour_pixels"] = nearest_neighbour_reports(
        pixel_features(train_images), train_reports, pixel_features(test_images)
    )
    if classifier is not None:
        network = FindingClassifierFeatures(classifier)
        predictions["nearest_neighbour_classifier"] = nearest_neighbour_reports(
            extract_features(network, train_images), train_reports, extract_features(network, test_images)
        )
    return predictions


def evaluate_report_baselines(
    world: str | Path,
    split: str = "test",
    classifier_dir: str | Path | None = None,
    labeler: Labeler | None = None,
    convention: LabelConvention = LabelConvention(),
    meteor: bool = False,
) -> dict[str, object]:
    """CXR -> report baselines on a synthetic world's ``split``: the most common training report and
    nearest-neighbour retrieval (pixels; and the finding classifier's features where one is given)."""
    from llmcxr.datasets.synthetic import read_synthetic_world

    records = read_synthetic_world(world)
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == split]
    if not train or not test:
        raise BadInputError(world, f"needs train and {split!r} records, found {len(train)} and {len(test)}")
    labeler = labeler or RuleLabeler()
    references = [r.report for r in test]
    started = time.perf_counter()
    classifier = load_finding_classifier(classifier_dir) if classifier_dir is not None else None
    predictions = report_baseline_predictions(train, test, classifier)
    result: dict[str, object] = {
        "task": "cxr_to_report",
        "world": str(world),
        "split": split,
        "n": len(test),
        "n_train": len(train),
        "labeler": labeler_name(labeler),
        "feature_network": network_identity(FindingClassifierFeatures(classifier)) if classifier else None,
    }
    for name, reports in predictions.items():
        result[name] = score_reports(reports, references, labeler, convention, meteor)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


@torch.inference_mode()
def vq_round_trip(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """images (N, 1, R, R) in [-1, 1] -> decode(encode(images)) by a ``llmcxr.vq.VQGAN`` (R: its resolution)."""
    return torch.cat(
        [model.decode(model.encode(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )


def evaluate_finding_preservation(
    vq_dir: str | Path,
    world: str | Path,
    classifier_dir: str | Path,
    split: str = "test",
    score_classes: list[str] | None = None,
    convention: LabelConvention = LabelConvention(),
) -> dict[str, object]:
    """Does the image tokenizer keep the findings? The classifier's AUROC on a world split's images and
    on their VQ round trips (``score_classes``: default the findings the renderer drew)."""
    from llmcxr.datasets.synthetic import read_synthetic_world
    from llmcxr.metrics.finding_classifier import image_labels, load_record_images
    from llmcxr.metrics.images import finding_preservation
    from llmcxr.vq import load_vqgan

    records = [r for r in read_synthetic_world(world) if r.split == split]
    if not records:
        raise BadInputError(
            world, f"no {split!r} records", "pick a split the world has (train/validate/test)"
        )
    classifier = load_finding_classifier(classifier_dir)
    if score_classes is None:
        drawn = {name for r in records for name in r.extra.get("drawn", [])}
        score_classes = [c for c in classifier.config.classes if c in drawn]
    vq = load_vqgan(vq_dir)
    resolution = vq.cfg.resolution
    started = time.perf_counter()
    originals = load_record_images(records, resolution)
    round_trips = vq_round_trip(vq, originals)
    result = finding_preservation(
        classifier, originals, round_trips, [image_labels(r) for r in records], score_classes, convention
    )
    return {
        "task": "finding_preservation",
        "vq": str(vq_dir),
        "world": str(world),
        "split": split,
        "n": len(records),
        "resolution": resolution,
        "classifier": network_identity(FindingClassifierFeatures(classifier)),
        **result,
        "seconds": round(time.perf_counter() - started, 2),
    }


def train_classifier_on_world(
    world: str | Path,
    out: str | Path,
    size: int | None = None,
    train: ClassifierTrainConfig = ClassifierTrainConfig(),
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train the finding classifier on a synthetic world folder (``llmcxr data synth``) and save it to ``out``."""
    from llmcxr.datasets.synthetic import read_synthetic_world

    records = read_synthetic_world(world)
    if size is None:
        from llmcxr.imaging import load_image

        size = min(load_image(records[0].image_path).shape) if records else 64
    _, summary = train_finding_classifier(
        records, size, out, FindingClassifierConfig(image_size=size), train, log
    )
    return summary


def manifest_classifier_records(manifest: str | Path, validate_fraction: float = 0.1) -> list[CXRRecord]:
    """A manifest's CXRs (``llmcxr.datasets.manifest``: your real images) labelled for the finding
    classifier: a row's ``labels`` column where it has one, else the rule-based labeler on its report.
    Rows without a ``split`` are split by patient (else image id): ``validate_fraction`` of them,
    chosen by a hash, hold out for the validation AUROC."""

    from llmcxr.datasets.manifest import read_manifest

    records = read_manifest(Path(manifest))
    label_unlabelled(records)
    split_by_patient_hash(records, validate_fraction, "validate")
    return records


def label_unlabelled(records: list[CXRRecord]) -> list[CXRRecord]:
    """Give the records without labels the rule labeler's labels of their reports; returns those records."""
    unlabelled = [record for record in records if not record.labels]
    for record, labels in zip(
        unlabelled, label_reports(RuleLabeler(), [r.report for r in unlabelled]), strict=True
    ):
        record.labels = labels
    return unlabelled


def split_by_patient_hash(records: list[CXRRecord], fraction: float, held_out: str) -> None:
    """Records without a split: ``held_out`` for about ``fraction`` of patients (a hash of the patient,
    else image, id: stable across runs and machines), else train. A patient's images stay together."""
    import hashlib

    for record in records:
        if record.split is None:
            key = (record.patient_id or record.image_id).encode()
            chosen = int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction
            record.split = held_out if chosen else "train"


def has_image(record: CXRRecord) -> bool:
    return bool(record.image_path) and Path(record.image_path).is_file()


def train_classifier_on_manifest(
    manifest: str | Path,
    out: str | Path,
    size: int = 128,
    train: ClassifierTrainConfig = ClassifierTrainConfig(),
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train the finding classifier on your own labelled CXRs (``manifest_classifier_records``), so
    FID/KID and finding agreement on real data use a network that has seen real images."""
    records = manifest_classifier_records(manifest)
    _, summary = train_finding_classifier(
        records, size, out, FindingClassifierConfig(image_size=size), train, log
    )
    return summary


__all__ = [
    "evaluate_image_folders",
    "evaluate_report_baselines",
    "evaluate_finding_preservation",
    "evaluate_report_files",
    "evaluate_vqa_files",
    "load_image_set",
    "report_baseline_predictions",
    "score_reports",
    "manifest_classifier_records",
    "train_classifier_on_manifest",
    "train_classifier_on_world",
]
