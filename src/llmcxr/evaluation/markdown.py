"""eval.md: the tables of an ``llmcxr eval run`` result (``llmcxr.evaluation.run``) as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _ci(interval: dict | None, signed: bool = False) -> str:
    """ " [low, high]" of a bootstrap interval (``intervals.py``), "" where there is none."""
    if not interval:
        return ""
    form = "+.3f" if signed else ".3f"
    return f" [{interval['low']:{form}}, {interval['high']:{form}}]"


def render_markdown(result: dict) -> str:
    """eval.md: the headline, then one table per task with the model beside its baselines."""
    data, model, network = result["data"], result["model"], result["feature_network"]
    out = [
        f"# llmcxr eval run: {data['split']} split of {data['world']}",
        "",
        f"Model `{model['folder']}` ({model['parameters']:,} parameters, weights sha256 "
        f"{model['weights_sha256'][:12]}), {data['n_items']} {data['split']} items, baselines from "
        f"{data['n_train']} train records. Labeler {result['labeler']} ({result['convention']}). "
        f"Image metrics in the features of {network['name']} (sha256 {network['weights_sha256'][:12]}); "
        "FIDs from other networks are not comparable.",
        "",
        "## Headline",
        "",
    ]
    headline = result["headline"]
    rows = []
    if "cxr_to_report" in headline:
        h = headline["cxr_to_report"]
        rows.append(
            [
                "CXR -> report micro-F1-14",
                f"{h['micro_f1_14']:.3f}{_ci(h.get('micro_f1_14_95ci'))}",
                f"{h['best_baseline']} {h['best_baseline_micro_f1_14']:.3f}",
                f"margin {h['margin']:+.3f}{_ci(h.get('margin_95ci'), True)} (target >= {h['target_margin']}); "
                f"over the best label-free baseline ({h['best_label_free_baseline']}) "
                f"{h['margin_over_label_free']:+.3f}{_ci(h.get('margin_over_label_free_95ci'), True)}",
            ]
        )
    if "report_to_cxr" in headline:
        h = headline["report_to_cxr"]
        rows.append(
            [
                "report -> CXR finding agreement macro-AUROC (drawn findings)",
                f"{_f(h['macro_auroc_drawn'])}{_ci(h.get('macro_auroc_drawn_95ci'))}",
                f"mode token map {_f(h['baseline_macro_auroc_drawn'])}",
                f"ceiling (real images) {_f(h['ceiling_macro_auroc_drawn'])}; target >= {h['target']}",
            ]
        )
        h = headline["finding_preservation"]
        rows.append(
            [
                "VQ-GAN finding preservation (AUROC originals -> round trips)",
                h["round_trip_macro_auroc"],
                f"originals {_f(h['original_macro_auroc'])}",
                f"drop {_f(h['auroc_drop'])}{_ci(h.get('auroc_drop_95ci'), True)} "
                f"(target <= {h['target_drop_max']})",
            ]
        )
    if "vqa" in headline:
        h = headline["vqa"]
        rows.append(["VQA accuracy", h["accuracy"], f"most common answer {_f(h['baseline_accuracy'])}", ""])
    out += [
        _table(["", "model", "compared with", "note"], rows),
        "",
        "Brackets: 95% bootstrap intervals over the items (percentile method, 1000 resamples); margins "
        "and the drop are paired (both sides scored on the same resampled items).",
        "",
    ]

    if "cxr_to_report" in result:
        task = result["cxr_to_report"]
        columns = ["micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5"]
        language = ["bleu_1", "bleu_4", "meteor", "rouge_l", "cider"]
        rows = [
            [name, *(s["clinical"][c] for c in columns), *(s["language"][c] for c in language)]
            for name, s in task["systems"].items()
        ]
        out += [
            f"## CXR -> report ({task['n']} images, guidance scale {task.get('guidance_scale', 1.0)}, "
            + (
                f"best of {task['candidates']} {task['sampling']} drafts, "
                if task.get("candidates", 1) > 1
                else ""
            )
            + f"{task['stopped_at_end']} reports ended with ### End)",
            "",
            _table(
                [
                    "system",
                    "miF1-14",
                    "maF1-14",
                    "miF1-5",
                    "maF1-5",
                    "BLEU-1",
                    "BLEU-4",
                    "METEOR",
                    "ROUGE-L",
                    "CIDEr",
                ],
                rows,
            ),
            "",
            "![per-class F1](f1_per_class.png)",
            "",
        ]
    if "report_to_cxr" in result:
        task = result["report_to_cxr"]
        rows = []
        for name, s in task["systems"].items():
            agreement, distribution = s["finding_agreement"], s.get("distribution", {})
            rows.append(
                [
                    name,
                    agreement["macro_auroc"],
                    agreement["micro_f1"],
                    agreement["macro_f1"],
                    distribution.get("fid"),
                    distribution.get("kid_mean"),
                ]
            )
        out += [
            f"## Report -> CXR ({task['n']} reports, guidance scale {task['guidance_scale']}, {task['image_sampling']}"
            + (f", best of {task['image_candidates']}" if task.get("image_candidates", 1) > 1 else "")
            + ")",
            "",
            f"Finding agreement over the {len(task['scored_findings'])} findings the renderer draws "
            f"({', '.join(task['scored_findings'])}); labels: {task['labels']}. vq_round_trip and "
            "reference_images are ceilings, not baselines.",
            "",
            _table(["system", "macro-AUROC", "micro-F1", "macro-F1", "FID", "KID"], rows),
            "",
            "![ROC curves](roc_curves.png)",
            "",
            "![samples](samples.png)",
            "",
        ]
    if "vqa" in result:
        systems = result["vqa"]["systems"]
        kinds = sorted(systems["model"]["by_kind"])
        rows = [
            [name, s["accuracy"], *(s["by_kind"].get(k, {}).get("accuracy") for k in kinds), s["n"]]
            for name, s in systems.items()
        ]
        out += ["## VQA", "", _table(["system", "overall", *kinds, "n"], rows), ""]
    timings = result["timings"]
    out += [
        "## Time",
        "",
        "Generation seconds (summed over resumed runs): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings["generation_s_all_runs"].items())
        + f". This invocation: {timings['this_run_s']['total']:.1f} s on {timings['machine']['device']} "
        f"({timings['machine']['processor']}, {timings['machine']['torch_threads']} thread(s), {timings['machine']['dtype']}).",
        "",
        "Text instructions have no reference to score and are not run.",
        "",
    ]
    return "\n".join(out)
