"""Template world vs IU-report world, side by side with 95% intervals: benchmarks/results/eval_iu_world.json.

Reads the folders of ``llmcxr eval run`` (one per arm, plus reference rows), rebuilds each system's
reports (the model's from ``reports.jsonl``, the baselines' from the world's train split as the run did)
and gives every number of the table a 95% percentile-bootstrap interval over the split's items
(1,000 resamples, ``llmcxr.metrics.intervals``): CheXpert micro/macro-F1 over 14 and 5 classes,
BLEU-1..4 (corpus BLEU from resampled per-report n-gram counts), ROUGE-L and CIDEr (means of per-report
scores; CIDEr's idf from the whole split). METEOR is the run's point value. The recomputed point values
are checked against each run's eval.json. It also scores an oracle that reports exactly what the
renderer drew (``extra["drawn"]``): the most a reader of the image can agree with the reference labels.

    step 5 of experiments/iu-report-world/run.sh gives the command that wrote
    benchmarks/results/eval_iu_world.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from llmcxr import atomic
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.evaluation.config import SUPERVISED_BASELINES
from llmcxr.evaluation.files import report_baseline_predictions
from llmcxr.findings import CHEXPERT_5, CHEXPERT_14
from llmcxr.metrics.clinical import LabelConvention, binarize_labels, label_reports, precision_recall_f1
from llmcxr.metrics.finding_classifier import load_finding_classifier
from llmcxr.metrics.intervals import item_resamples, paired_difference, percentile_interval
from llmcxr.metrics.language import tokenize_report
from llmcxr.reports import RuleLabeler

# R2Gen (Chen et al., EMNLP 2020, Table 2) on IU X-ray's test split, from real images: context, not a target.
R2GEN_IU_XRAY = {
    "bleu_1": 0.470,
    "bleu_2": 0.304,
    "bleu_3": 0.219,
    "bleu_4": 0.165,
    "meteor": 0.187,
    "rouge_l": 0.371,
}
CE = ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5")
LANGUAGE = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider")
TINY, SMALL = 1e-15, 1e-9  # pycocoevalcap's BLEU smoothing constants, so the full-split value matches


def bleu_statistic(predictions: list[str], references: list[str]):
    """rows -> (BLEU-1..4) of those reports, pycocoevalcap's corpus BLEU ("closest" reference length)."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=4)
    for prediction, reference in zip(predictions, references, strict=True):
        scorer += (tokenize_report(prediction), [tokenize_report(reference)])
    # per report: hypothesis length, reference length, n-gram guesses and clipped matches, (N, 4)
    test = np.array([c["testlen"] for c in scorer.ctest], dtype=float)
    ref = np.array([c["reflen"][0] for c in scorer.ctest], dtype=float)
    guess = np.array([c["guess"] for c in scorer.ctest], dtype=float)
    correct = np.array([c["correct"] for c in scorer.ctest], dtype=float)

    def bleu(rows: np.ndarray) -> list[float]:
        precisions = (correct[rows].sum(0) + TINY) / (guess[rows].sum(0) + SMALL)
        ratio = (test[rows].sum() + TINY) / (ref[rows].sum() + SMALL)
        penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
        return [penalty * float(np.prod(precisions[: n + 1])) ** (1 / (n + 1)) for n in range(4)]

    return bleu


def per_report_scores(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [tokenize_report(r)] for i, r in enumerate(references)}
    res = {i: [tokenize_report(p)] for i, p in enumerate(predictions)}
    return {
        "rouge_l": np.asarray(Rouge().compute_score(gts, res)[1], dtype=float),
        "cider": np.asarray(Cider().compute_score(gts, res)[1], dtype=float),
    }


def with_intervals(
    predicted: list[dict[str, int]],
    reference: list[dict[str, int]],
    texts: tuple[list[str], list[str]] | None,
    rows: np.ndarray,
) -> dict[str, dict]:
    """{metric: {value, low, high}} of one system over all items, intervals over ``rows``."""
    convention = LabelConvention()
    out: dict[str, dict] = {}
    for tag, classes in (("14", CHEXPERT_14), ("5", CHEXPERT_5)):
        ref, pred = (
            binarize_labels(reference, classes, convention),
            binarize_labels(predicted, classes, convention),
        )
        for average in ("micro", "macro"):

            def f1(r: np.ndarray, ref=ref, pred=pred, classes=classes, average=average) -> float:
                return precision_recall_f1(ref[r], pred[r], classes)[average]["f1"]

            out[f"{average}_f1_{tag}"] = {"value": f1(np.arange(len(ref))), **percentile_interval(f1, rows)}
    if texts is not None:
        bleu = bleu_statistic(*texts)
        everything = bleu(np.arange(len(texts[0])))
        for n in range(4):
            out[f"bleu_{n + 1}"] = {
                "value": everything[n],
                **percentile_interval(lambda r, n=n: bleu(r)[n], rows),
            }
        for name, scores in per_report_scores(*texts).items():

            def mean(r: np.ndarray, scores: np.ndarray = scores) -> float:
                return float(scores[r].mean())

            out[name] = {"value": mean(np.arange(len(scores))), **percentile_interval(mean, rows)}
    for entry in out.values():
        entry.pop("level", None)
        entry.pop("resamples", None)
    return out


def drawn_oracle(records) -> list[dict[str, int]]:
    """Labels of a reader that reports exactly what the renderer drew (No Finding where nothing was)."""
    return [
        {name: 1 for name in r.extra["drawn"]} | ({} if r.extra["drawn"] else {"No Finding": 1})
        for r in records
    ]


def table_of_run(folder: Path, labeler: RuleLabeler) -> dict:
    result = json.loads((folder / "eval.json").read_text())
    config = result["config"]
    records = read_synthetic_world(config["data"])
    train = [r for r in records if r.split == "train"]
    items = [r for r in records if r.split == config["split"]][: config.get("limit")]
    reports = {
        row["image_id"]: row["report"]
        for row in map(json.loads, (folder / "reports.jsonl").read_text().splitlines())
    }
    classifier_dir = config.get("classifier") or folder / "classifier"
    systems = {"model": [reports[r.image_id] for r in items]}
    systems |= report_baseline_predictions(train, items, load_finding_classifier(classifier_dir))
    references = [r.report for r in items]
    reference_labels = label_reports(labeler, references)
    rows = item_resamples(len(items), seed=0)
    scored = result["cxr_to_report"]["systems"]
    table = {}
    for name, predictions in systems.items():
        table[name] = with_intervals(
            label_reports(labeler, predictions), reference_labels, (predictions, references), rows
        )
        for metric in CE:  # the same numbers as the run's own
            assert abs(table[name][metric]["value"] - scored[name]["clinical"][metric]) < 1e-9, (name, metric)
        for metric in LANGUAGE:
            assert abs(table[name][metric]["value"] - scored[name]["language"][metric]) < 1e-6, (name, metric)
        table[name]["meteor"] = {"value": scored[name]["language"].get("meteor")}
    table["drawn_findings_oracle"] = with_intervals(drawn_oracle(items), reference_labels, None, rows)
    headline = result["headline"]["cxr_to_report"]
    world = json.loads((Path(config["data"]) / "world.json").read_text())
    return {
        "eval_folder": str(folder),
        "model": result["model"],
        "world": {
            "folder": config["data"],
            "config": world["config"],
            "splits": world["splits"],
            **({"r2gen_split": world["r2gen_split"]} if "r2gen_split" in world else {}),
        },
        "split": config["split"],
        "n_items": len(items),
        "settings": {
            k: config[k] for k in ("report_guidance_scale", "text_sampling", "max_report_tokens", "seed")
        },
        "labeler": result.get("labeler"),
        "feature_network": result.get("feature_network"),
        "systems": table,
        "best_label_free_baseline": headline["best_label_free_baseline"],
        "margin_over_label_free": headline["margin_over_label_free"],
        "margin_over_label_free_95ci": headline["margin_over_label_free_95ci"],
        "supervised_baselines": list(SUPERVISED_BASELINES),
        "_micro_f1_14_rows": rows,
        "_micro_f1_14_labels": (
            binarize_labels(label_reports(labeler, systems["model"]), CHEXPERT_14, LabelConvention()),
            binarize_labels(reference_labels, CHEXPERT_14, LabelConvention()),
        ),
    }


def unpaired_gap(a: dict, b: dict, seed: int = 1) -> dict:
    """Micro-F1-14 of run a minus run b, items of two different test splits resampled independently."""
    (pa, ra), (pb, rb) = a["_micro_f1_14_labels"], b["_micro_f1_14_labels"]
    other = item_resamples(len(rb), seed=seed)
    classes = list(CHEXPERT_14)

    def f1(pred, ref, r) -> float:
        return precision_recall_f1(ref[r], pred[r], classes)["micro"]["f1"]

    gaps = [f1(pa, ra, x) - f1(pb, rb, y) for x, y in zip(a["_micro_f1_14_rows"], other, strict=True)]
    low, high = np.percentile(gaps, [2.5, 97.5])
    value = a["systems"]["model"]["micro_f1_14"]["value"] - b["systems"]["model"]["micro_f1_14"]["value"]
    return {"value": value, "low": float(low), "high": float(high)}


def paired_gap(a: dict, b: dict) -> dict:
    """Micro-F1-14 of run a minus run b on the same items (same world and split), paired resamples."""
    (pa, reference), (pb, other_reference) = a["_micro_f1_14_labels"], b["_micro_f1_14_labels"]
    assert (reference == other_reference).all(), "paired runs must score the same items"
    classes = list(CHEXPERT_14)

    def f1(pred, r) -> float:
        return precision_recall_f1(reference[r], pred[r], classes)["micro"]["f1"]

    interval = paired_difference(lambda r: f1(pa, r), lambda r: f1(pb, r), a["_micro_f1_14_rows"])
    value = a["systems"]["model"]["micro_f1_14"]["value"] - b["systems"]["model"]["micro_f1_14"]["value"]
    return {"value": value, "low": interval["low"], "high": interval["high"]}


def training_summary(run: Path) -> dict:
    """Steps, minutes and losses of one ``llmcxr train`` run, from its train_log.json."""
    history = json.loads((run / "train_log.json").read_text())["log_history"]
    train = [row for row in history if "loss_report_generation" in row]
    last_eval = {
        k: v for row in history for k, v in row.items() if k.startswith("eval_") and k.endswith("_loss")
    }
    first_eval = {}
    for row in history:
        for key, value in row.items():
            if key.startswith("eval_") and key.endswith("_loss"):
                first_eval.setdefault(key, value)
    end = next(row for row in reversed(history) if "train_runtime" in row)
    return {
        "run": str(run),
        "steps": end["step"],
        "train_minutes": round(end["train_runtime"] / 60, 1),
        "report_loss_first_logged": train[0]["loss_report_generation"],
        "report_loss_last_logged": train[-1]["loss_report_generation"],
        "eval_losses_before": first_eval,
        "eval_losses_after": last_eval,
    }


def markdown(result: dict) -> str:
    """The result as two markdown tables (clinical efficacy, language), every number with its interval."""

    def cell(entry: dict | None) -> str:
        if not entry or entry.get("value") is None:
            return "–"
        interval = f" [{entry['low']:.3f}, {entry['high']:.3f}]" if "low" in entry else ""
        return f"{entry['value']:.3f}{interval}"

    def row(*cells: str) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = []
    for metrics, skip in ((CE, ()), ((*LANGUAGE[:4], "meteor", *LANGUAGE[4:]), ("drawn_findings_oracle",))):
        lines += [row("run", "system", *metrics), row(*["---"] * (len(metrics) + 2))]
        for name, run in result["runs"].items():
            for system, scores in run["systems"].items():
                if system not in skip:
                    lines.append(row(name, system, *(cell(scores.get(m)) for m in metrics)))
        if "meteor" in metrics:
            published = result["r2gen_published_iu_xray"]
            lines.append(
                row("R2Gen, real images", "published", *(cell({"value": published.get(m)}) for m in metrics))
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", action="append", required=True, help="NAME=EVAL_FOLDER (llmcxr eval run --out)"
    )
    parser.add_argument("--gap", default="templates,iu_reports", help="A,B: the micro-F1-14 gap A - B")
    parser.add_argument("--paired", action="append", default=[], help="A,B: runs on the same items, A - B")
    parser.add_argument("--train", action="append", default=[], help="NAME=RUN_DIR (llmcxr train output_dir)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_iu_world.json"))
    args = parser.parse_args()
    labeler = RuleLabeler()
    runs = {}
    for spec in args.run:
        name, folder = spec.split("=", 1)
        runs[name] = table_of_run(Path(folder), labeler)
        print(f"{name}: micro-F1-14 {runs[name]['systems']['model']['micro_f1_14']}")
    a, b = args.gap.split(",")
    result = {
        "question": "How much does template report language flatter the model, the labeler and the "
        "language scores? The same model and training budget on a template world and on a world whose "
        "reports are the real IU X-ray reports (R2Gen split), scored on each world's test split.",
        "intervals": "95% percentile bootstrap over the split's items, 1,000 resamples, seed 0",
        "r2gen_published_iu_xray": {
            "source": "Chen et al., EMNLP 2020 (R2Gen), Table 2, IU X-ray test split, real images",
            **R2GEN_IU_XRAY,
        },
        "runs": {name: {k: v for k, v in run.items() if not k.startswith("_")} for name, run in runs.items()},
        "micro_f1_14_gap": {"runs": [a, b], **unpaired_gap(runs[a], runs[b])},
        "micro_f1_14_paired": [
            {"runs": pair.split(","), **paired_gap(*(runs[name] for name in pair.split(",")))}
            for pair in args.paired
        ],
    }
    result["training"] = {
        name: training_summary(Path(run)) for name, run in (spec.split("=", 1) for spec in args.train)
    }
    atomic.write_json(args.out, result)
    print(markdown(result))
    print(f"gap {a} - {b}: {result['micro_f1_14_gap']} -> {args.out}")


if __name__ == "__main__":
    main()
