"""Classifier-free guidance vs image-report agreement (report -> CXR) on a synthetic world.

    nice -n 10 python benchmarks/guidance_agreement.py [--model runs/tiny-cpu/run/model]
        [--classifier /tmp/llmcxr-bench/classifier-2000-64] [--world /tmp/llmcxr-bench/world-2000-64]
        [--records 200] [--scales 1 2 3] [--seed 0] [--batch-size 16]
        [--out benchmarks/results/guidance_agreement.json]

For each guidance scale, one image is generated per test report (same seeds at every scale, so
the comparison is paired), the project's finding classifier scores the images, and its
probabilities are compared with the record's image labels (report labels less the findings the
renderer did not draw) over the findings the renderer draws: per-class AUROC and macro-AUROC
(``llmcxr.metrics.images.finding_agreement``; classes with one label value are skipped and listed).
Two references bound the numbers: the REAL test images (ceiling: what the classifier can read) and
images generated from an EMPTY report (floor: unconditional samples carry no report information,
so their AUROC is chance up to sampling noise). A bootstrap over records (same resamples for every
condition) gives a 95% interval for each macro-AUROC. One torch thread, fp32 (see docs/generation.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from llmcxr.atomic import write_json
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.generation import LLMCXR
from llmcxr.imaging import load_cxr
from llmcxr.metrics.clinical import LabelConvention
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    image_labels,
    load_finding_classifier,
    load_record_images,
    train_finding_classifier,
)
from llmcxr.metrics.images import finding_agreement
from llmcxr.training.tasks import stage_report

ROOT = Path(__file__).resolve().parents[1]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_reports(model_folder: Path) -> tuple[set[str], list[str]]:
    """Report texts of the train split of the synthetic worlds the model was trained on (for a leak check)."""
    summary = model_folder / "llmcxr_train.json"
    if not summary.is_file():
        return set(), []
    data = json.loads(summary.read_text(encoding="utf-8")).get("data", [])
    worlds = [d["path"] for d in data if d.get("kind") == "synthetic" and Path(d["path"]).is_dir()]
    reports = {
        r.report for world in worlds for r in read_synthetic_world(world) if r.split in ("train", None)
    }
    return reports, worlds


def agreement(probabilities: np.ndarray, labels: list[dict[str, int]], classes, drawn) -> dict:
    return finding_agreement(probabilities, labels, classes, LabelConvention(), score_classes=drawn)


def bootstrap_macro(
    probabilities: np.ndarray, labels: list[dict[str, int]], classes, drawn, resamples: list[np.ndarray]
) -> dict[str, float | int]:
    """95% percentile interval of the macro-AUROC over record resamples (classes re-skipped per resample)."""
    values = []
    for rows in resamples:
        macro = agreement(probabilities[rows], [labels[i] for i in rows], classes, drawn)["macro_auroc"]
        if macro is not None:
            values.append(macro)
    low, high = np.percentile(values, [2.5, 97.5]) if values else (None, None)
    return {"low": float(low), "high": float(high), "resamples": len(values)}


def summarize(result: dict) -> dict:
    return {
        "macro_auroc": result["macro_auroc"],
        "n_classes_scored": result["n_classes_scored"],
        "skipped": result["skipped"],
        "macro_f1": result["macro_f1"],
        "auroc": {name: value["auroc"] for name, value in result["per_class"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "tiny-cpu" / "run" / "model")
    parser.add_argument("--classifier", type=Path, default=Path("/tmp/llmcxr-bench/classifier-2000-64"))
    parser.add_argument("--world", type=Path, default=Path("/tmp/llmcxr-bench/world-2000-64"))
    parser.add_argument(
        "--records", type=int, default=200, help="test records used (first N; the world has 200)"
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=200, help="record resamples for the intervals")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "guidance_agreement.json"
    )
    args = parser.parse_args()
    # One thread, fp32: on the shared 2-core CPU two OpenMP threads ran far slower, bf16 ~34x slower.
    torch.set_num_threads(1)
    started = time.perf_counter()

    records = read_synthetic_world(args.world)
    test = [r for r in records if r.split == "test"][: args.records]
    if not (args.classifier / "classifier.safetensors").is_file():
        print(f"no classifier at {args.classifier}: training one on {args.world}")
        train_finding_classifier(records, 64, args.classifier, train=ClassifierTrainConfig(), log=print)
    classifier = load_finding_classifier(args.classifier)
    classes = list(classifier.config.classes)
    drawn = sorted({name for r in records for name in r.extra.get("drawn", [])} & set(classes))
    labels = [image_labels(r) for r in test]
    report_labels = [dict(r.labels) for r in test]

    llm = LLMCXR.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    train_config = json.loads((args.model / "llmcxr_train.json").read_text(encoding="utf-8"))
    stage = int(train_config.get("stage", 1))
    reports = [stage_report(r, stage) for r in test]
    seen_reports, model_worlds = training_reports(args.model)
    leaked = sum(report in seen_reports for report in reports)

    size = classifier.config.image_size
    probabilities: dict[str, np.ndarray] = {}
    timings: dict[str, dict[str, float]] = {}
    begin = time.perf_counter()
    probabilities["real"] = classifier.predict(load_record_images(test, size)).numpy()
    timings["real"] = {"classify_s": round(time.perf_counter() - begin, 2)}

    conditions = [(f"scale_{s:g}", reports, s) for s in args.scales] + [
        ("unconditional", [""] * len(test), 1.0)
    ]
    for name, texts, scale in conditions:
        begin = time.perf_counter()
        images = llm.generate_image(texts, guidance_scale=scale, seed=args.seed, batch_size=args.batch_size)
        generate_s = time.perf_counter() - begin
        begin = time.perf_counter()
        pixels = torch.stack([load_cxr(result.image, size) for result in images])
        probabilities[name] = classifier.predict(pixels).numpy()
        timings[name] = {
            "generate_s": round(generate_s, 2),
            "images_per_s": round(len(images) / generate_s, 3),
            "classify_s": round(time.perf_counter() - begin, 2),
        }
        print(f"{name}: {len(images)} images in {generate_s:.1f} s")

    rng = np.random.default_rng(args.seed)
    resamples = [rng.integers(0, len(test), len(test)) for _ in range(args.bootstrap)]
    results = {}
    for name, probs in probabilities.items():
        scored = summarize(agreement(probs, labels, classes, drawn))
        scored["macro_auroc_95ci"] = bootstrap_macro(probs, labels, classes, drawn, resamples)
        scored["macro_auroc_report_labels"] = agreement(probs, report_labels, classes, drawn)["macro_auroc"]
        results[name] = scored
        ci = scored["macro_auroc_95ci"]
        print(f"{name}: macro-AUROC {scored['macro_auroc']:.3f} (95% CI {ci['low']:.3f}-{ci['high']:.3f})")

    out = {
        "command": "nice -n 10 python benchmarks/guidance_agreement.py "
        f"--records {args.records} --scales {' '.join(f'{s:g}' for s in args.scales)} --seed {args.seed}",
        "model": {
            "folder": str(args.model),
            "weights_sha256": file_sha256(args.model / "model.safetensors"),
            "train_steps": train_config.get("optim", {}).get("max_steps"),
            "trained_on_worlds": model_worlds,
            "tokens_per_image": llm.image_tokens.tokens_per_image,
            "codebook_size": llm.image_tokens.codebook_size,
            "dtype": "float32",
        },
        "classifier": {
            "folder": str(args.classifier),
            "weights_sha256": classifier.weights_sha256,
            "image_size": size,
        },
        "world": {"folder": str(args.world), "split": "test", "n_records": len(test)},
        "test_reports_seen_in_model_training": leaked,
        "labels": "image labels (report labels less undrawn findings); uncertain as positive",
        "classes_scored": drawn,
        "sampling": f"top-p 0.92, temperature 1, seed {args.seed} (row i: seed + i, same at every scale)",
        "batch_size": args.batch_size,
        "bootstrap_resamples": args.bootstrap,
        "macro_auroc": {name: r["macro_auroc"] for name, r in results.items()},
        "results": results,
        "timings": timings,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": 1,
            "torch": torch.__version__,
        },
    }
    write_json(args.out, out)
    print(f"test reports seen in the model's training data: {leaked}/{len(test)}")
    print(f"wrote {args.out} in {out['total_seconds']} s")


if __name__ == "__main__":
    main()
