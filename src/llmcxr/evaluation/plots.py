"""The figures of ``llmcxr eval run``: per-class F1 bars, finding-agreement ROC curves, a sample grid.

matplotlib with the Agg backend (no display needed); every figure is rendered to PNG bytes in
memory and written atomically.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchmetrics.functional.classification import binary_roc  # noqa: E402

from llmcxr import atomic  # noqa: E402
from llmcxr.evaluation.run_folder import RunFolder  # noqa: E402
from llmcxr.findings import CHEXPERT_14  # noqa: E402
from llmcxr.imaging import to_pil  # noqa: E402
from llmcxr.metrics.clinical import LabelConvention, binarize_labels  # noqa: E402
from llmcxr.records import CXRRecord  # noqa: E402


def _save(figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic.write_bytes(path, buffer.getvalue())


def plot_f1_per_class(
    f1: Mapping[str, Mapping[str, float]], classes: Sequence[str], path: str | Path
) -> None:
    """Grouped bars: F1 per class (x) for each system (``f1[system][class]``), model first."""
    systems = list(f1)
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(classes))
    figure, axes = plt.subplots(figsize=(max(8.0, 0.75 * len(classes)), 4.2), layout="constrained")
    for k, system in enumerate(systems):
        values = [f1[system].get(name, 0.0) for name in classes]
        axes.bar(x + (k - (len(systems) - 1) / 2) * width, values, width, label=system)
    axes.set_xticks(x, list(classes), rotation=40, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("F1 (labeler on both sides)")
    axes.set_title("CXR -> report: CheXpert F1 per class")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    _save(figure, path)


def roc_points(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) of one class's scores (N,) against 0/1 targets (N,)."""
    fpr, tpr, _ = binary_roc(torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(targets).long())
    return fpr.numpy(), tpr.numpy()


def plot_roc_curves(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray, float | None]]], path: str | Path
) -> None:
    """One panel per finding: ``curves[finding][system] = (scores (N,), targets (N,), auroc)``."""
    findings = [name for name, systems in curves.items() if systems]
    columns = min(4, max(1, len(findings)))
    rows = max(1, -(-len(findings) // columns))
    figure, grid = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 3.1 * rows), squeeze=False, layout="constrained"
    )
    for panel, finding in zip(grid.flat, findings, strict=False):
        for system, (scores, targets, auroc) in curves[finding].items():
            fpr, tpr = roc_points(scores, targets)
            label = f"{system} ({auroc:.2f})" if auroc is not None else system
            panel.plot(fpr, tpr, label=label, linewidth=1.4)
        panel.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        panel.set_title(finding, fontsize=9)
        panel.set_xlabel("false positive rate", fontsize=7)
        panel.set_ylabel("true positive rate", fontsize=7)
        panel.tick_params(labelsize=7)
        panel.legend(fontsize=6, loc="lower right")
    for panel in list(grid.flat)[len(findings) :]:
        panel.axis("off")
    figure.suptitle("report -> CXR finding agreement (classifier on generated images vs report labels)")
    _save(figure, path)


def plot_samples(
    rows: Sequence[tuple[str, str, Sequence[tuple[str, Image.Image]]]], path: str | Path, wrap: int = 46
) -> None:
    """A grid, one row per item: its report text, then images (``(caption, PIL image)``, e.g.
    generated, reference, baseline). ``rows``: (item id, report, images)."""
    columns = 1 + max((len(images) for _, _, images in rows), default=0)
    figure, grid = plt.subplots(
        max(1, len(rows)),
        columns,
        figsize=(3.6 + 2.0 * (columns - 1), 2.1 * max(1, len(rows))),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.8] + [1.0] * (columns - 1)},
        layout="constrained",
    )
    for line, (item_id, report, images) in zip(grid, rows, strict=False):
        text = textwrap.fill(report, wrap)
        text = "\n".join(text.splitlines()[:9]) + (" ..." if len(text.splitlines()) > 9 else "")
        line[0].text(0, 1, f"{item_id}\n{text}", va="top", ha="left", fontsize=6.5, family="monospace")
        line[0].axis("off")
        for panel, (caption, image) in zip(line[1:], images, strict=False):
            panel.imshow(np.asarray(image.convert("L")), cmap="gray", vmin=0, vmax=255)
            panel.set_title(caption, fontsize=7)
            panel.axis("off")
    figure.suptitle("report -> CXR samples")
    _save(figure, path)


def write_run_plots(
    result: dict,
    items: Sequence[CXRRecord],
    folder: RunFolder,
    probabilities: dict[str, np.ndarray],
    classes: Sequence[str],
    convention: LabelConvention,
    mode_image: torch.Tensor | None,
    samples: int,
) -> None:
    """f1_per_class.png, roc_curves.png (drawn findings with both label values), samples.png."""
    if "cxr_to_report" in result:
        f1 = {
            name: {c: v["f1"] for c, v in scores["clinical"]["chexpert_14"]["per_class"].items()}
            for name, scores in result["cxr_to_report"]["systems"].items()
        }
        plot_f1_per_class(f1, CHEXPERT_14, folder.out / "f1_per_class.png")
    if "report_to_cxr" in result:
        images = result["report_to_cxr"]
        curves: dict[str, dict] = {}
        for finding in images["scored_findings"]:
            targets = binarize_labels([r.labels for r in items], [finding], convention)[:, 0]
            if targets.min() == targets.max():
                continue
            column = list(classes).index(finding)
            curves[finding] = {
                name: (
                    probabilities[name][:, column],
                    targets,
                    images["systems"][name]["finding_agreement"]["per_class"][finding]["auroc"],
                )
                for name in ("model", "mode_token_map", "reference_images")
            }
        plot_roc_curves(curves, folder.out / "roc_curves.png")
        shown = []
        for record in items[:samples]:
            generated = Image.open(folder.generated_image(record.image_id))
            reference = Image.open(record.image_path)
            shown.append(
                (
                    record.image_id,
                    record.report,
                    [("generated", generated), ("reference", reference), ("mode map", to_pil(mode_image))],
                )
            )
        plot_samples(shown, folder.out / "samples.png")
