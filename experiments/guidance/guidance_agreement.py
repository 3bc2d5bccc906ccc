"""Classifier-free guidance and best-of-k vs image-report agreement (report -> CXR) of the shipped tiny model.

    nice -n 10 python experiments/guidance/guidance_agreement.py [--model checkpoints/llmcxr-tiny]
        [--world runs/e6/world] [--classifier runs/e6/classifier-eval] [--split validate]
        [--records 200] [--sampling {greedy,top-p}] [--scales 1 2 3 4] [--candidates 1 4]
        [--seeds 0 1 2] [--batch-size 16] [--bootstrap 1000] [--out experiments/guidance/results/guidance_agreement.json]

Builds what is missing first, as ``benchmarks/eval_tiny.py`` does: the 3,000-image 64 px template
world (seed 0) and the seed-1 finding classifier (the scoring one; seed 0 tuned the tokenizer).
For each guidance scale, one image is generated per report of the first ``--records`` records of
``--split`` (validation by default: the test split is kept for the final eval run), with the same
seeds at every scale so the comparison is paired. The classifier scores the images against the
records' image labels (report labels less the findings the renderer did not draw) over the drawn
findings: per-class AUROC and macro-AUROC (``llmcxr.metrics.images.finding_agreement``; classes
with one label value are skipped and listed). Two references bound the numbers: the REAL images
(ceiling: what the classifier can read) and images generated from an EMPTY report (floor: they carry
no report information, so their AUROC is chance; greedy makes them all one image, exactly 0.5).
Each macro-AUROC gets a 95% bootstrap interval over records, and each scale a paired interval of its
gain over the unconditional floor (``llmcxr.metrics.intervals``: the same resamples everywhere).
``--candidates k`` (top-p only) also draws each image as the best of k by the model's own
log p(report | image) (``LLMCXR.generate_image(candidates=k)``), with a paired interval of its gain
over one draw at the same scale and seed. Sampled draws vary from seed to seed, so ``--seeds`` repeats
every sampled condition per seed and ``mean_over_seeds`` averages them.
One torch thread, fp32 (see docs/generation.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llmcxr.atomic import write_json
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.imaging import load_cxr
from llmcxr.metrics.clinical import LabelConvention, auroc_per_class, binarize_labels
from llmcxr.metrics.finding_classifier import (
    ClassifierTrainConfig,
    image_labels,
    load_finding_classifier,
    load_record_images,
    train_finding_classifier,
)
from llmcxr.metrics.images import finding_agreement
from llmcxr.metrics.intervals import item_resamples, paired_difference, percentile_interval
from llmcxr.training.tasks import stage_report

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts' shared helper
from _repo import REPO, llmcxr, shown

HERE = Path(__file__).resolve().parent

# greedy: the shipped model's image sampling (picked on validation by benchmarks/eval_tiny.py).
SAMPLINGS = {"greedy": SamplingConfig(do_sample=False), "top-p": SamplingConfig()}


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


def summarize(result: dict) -> dict:
    return {
        "macro_auroc": result["macro_auroc"],
        "n_classes_scored": result["n_classes_scored"],
        "skipped": result["skipped"],
        "macro_f1": result["macro_f1"],
        "auroc": {name: value["auroc"] for name, value in result["per_class"].items()},
    }


def describe_sampling(name: str, seeds: list[int]) -> str:
    config = SAMPLINGS[name]
    if not config.do_sample:
        return "greedy (argmax; seeds unused)"
    return (
        f"top-p {config.top_p}, temperature {config.temperature:g}, seeds {seeds} "
        "(row i: seed + i, same at every scale; best of k: draw c of row seed s samples with s * k + c)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "checkpoints" / "llmcxr-tiny")
    parser.add_argument("--world", type=Path, default=REPO / "runs" / "e6" / "world")
    parser.add_argument("--classifier", type=Path, default=REPO / "runs" / "e6" / "classifier-eval")
    parser.add_argument(
        "--split", default="validate", help="record split scored (test is kept for the final eval run)"
    )
    parser.add_argument("--records", type=int, default=200, help="records of the split used (first N)")
    parser.add_argument("--sampling", choices=sorted(SAMPLINGS), default="greedy", help="image sampling")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--candidates", type=int, nargs="+", default=[1], help="best of k draws (top-p)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (row i: seed + i)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000, help="record resamples for the intervals")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "guidance_agreement.json")
    args = parser.parse_args()
    if args.sampling == "greedy" and (max(args.candidates) > 1 or len(args.seeds) > 1):
        parser.error("--candidates above 1 and several --seeds need --sampling top-p")
    # One thread, fp32: on the shared 2-core CPU two OpenMP threads ran far slower, bf16 ~34x slower.
    torch.set_num_threads(1)
    started = time.perf_counter()

    if not (args.world / "world.json").is_file():
        # The world the shipped model was trained on (its validation and test splits were not).
        llmcxr("data", "synth", "--n", "3000", "--size", "64", "--seed", "0", "--reports", "templates",
               "--out", str(args.world), "--workers", "2")  # fmt: skip
    records = read_synthetic_world(args.world)
    chosen = [r for r in records if r.split == args.split][: args.records]
    if not chosen:
        raise SystemExit(f"no {args.split!r} records in {args.world}")
    if not (args.classifier / "classifier.safetensors").is_file():
        # Seed 1, as `llmcxr eval train-classifier --steps 1000 --seed 1` in eval_tiny.py: scored by a
        # network the tokenizer's clinical loss (seed 0) was not tuned against.
        print(f"no classifier at {args.classifier}: training one on {args.world}")
        train = ClassifierTrainConfig(steps=1000, seed=1)
        train_finding_classifier(records, 64, args.classifier, train=train, log=print)
    classifier = load_finding_classifier(args.classifier)
    classes = list(classifier.config.classes)
    drawn = sorted({name for r in records for name in r.extra.get("drawn", [])} & set(classes))
    columns = [classes.index(name) for name in drawn]
    labels = [image_labels(r) for r in chosen]
    targets = binarize_labels(labels, drawn, LabelConvention())
    report_labels = [dict(r.labels) for r in chosen]

    llm = LLMCXR.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    train_config = json.loads((args.model / "llmcxr_train.json").read_text(encoding="utf-8"))
    stage = int(train_config.get("stage", 1))
    reports = [stage_report(r, stage) for r in chosen]
    seen_reports, model_worlds = training_reports(args.model)
    leaked = sum(report in seen_reports for report in reports)

    size = classifier.config.image_size
    sampling = SAMPLINGS[args.sampling]
    probabilities: dict[str, np.ndarray] = {}
    timings: dict[str, dict[str, float]] = {}
    begin = time.perf_counter()
    probabilities["real"] = classifier.predict(load_record_images(chosen, size)).numpy()
    timings["real"] = {"classify_s": round(time.perf_counter() - begin, 2)}

    def setting(scale: float, k: int) -> str:
        return f"scale_{scale:g}" + (f"_best_of_{k}" if k > 1 else "")

    def condition(scale: float, k: int, seed: int) -> str:
        return setting(scale, k) + (f"_seed_{seed}" if len(args.seeds) > 1 else "")

    conditions = [
        (condition(s, k, seed), reports, s, k, seed)
        for s in args.scales
        for k in args.candidates
        for seed in args.seeds
    ] + [("unconditional", [""] * len(chosen), 1.0, 1, args.seeds[0])]
    for name, texts, scale, k, seed in conditions:
        begin = time.perf_counter()
        images = llm.generate_image(
            texts, scale, seed=seed, sampling=sampling, batch_size=args.batch_size, candidates=k
        )
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

    # One set of record resamples for every condition, so the gains below are paired.
    rows = item_resamples(len(chosen), resamples=args.bootstrap, seed=args.seeds[0])
    statistics = {
        name: (lambda r, p=probs: auroc_per_class(p[r][:, columns], targets[r], drawn)["macro_auroc"])
        for name, probs in probabilities.items()
    }
    single_draw = {condition(s, k, seed): condition(s, 1, seed) for _, _, s, k, seed in conditions if k > 1}
    results = {}
    for name, probs in probabilities.items():
        scored = summarize(agreement(probs, labels, classes, drawn))
        scored["macro_auroc_95ci"] = percentile_interval(statistics[name], rows)
        scored["macro_auroc_report_labels"] = agreement(probs, report_labels, classes, drawn)["macro_auroc"]
        if name.startswith("scale_"):
            scored["gain_over_unconditional_95ci"] = paired_difference(
                statistics[name], statistics["unconditional"], rows
            )
        if name in single_draw:
            scored["gain_over_single_draw_95ci"] = paired_difference(
                statistics[name], statistics[single_draw[name]], rows
            )
        results[name] = scored
        ci = scored["macro_auroc_95ci"]
        interval = f"{ci['low']:.3f}-{ci['high']:.3f}" if ci else "undefined"
        macro = scored["macro_auroc"]
        print(f"{name}: macro-AUROC {macro if macro is None else f'{macro:.3f}'} (95% CI {interval})")

    out = {
        "command": "nice -n 10 python experiments/guidance/guidance_agreement.py "
        f"--model {shown(args.model)} --world {shown(args.world)} --classifier {shown(args.classifier)} "
        f"--split {args.split} --records {args.records} --sampling {args.sampling} "
        f"--scales {' '.join(f'{s:g}' for s in args.scales)} "
        f"--candidates {' '.join(map(str, args.candidates))} --seeds {' '.join(map(str, args.seeds))} "
        f"--batch-size {args.batch_size} --bootstrap {args.bootstrap}",
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
        "world": {"folder": str(args.world), "split": args.split, "n_records": len(chosen)},
        "reports_seen_in_model_training": leaked,
        "labels": "image labels (report labels less undrawn findings); uncertain as positive",
        "classes_scored": drawn,
        "sampling": describe_sampling(args.sampling, args.seeds),
        "batch_size": args.batch_size,
        "bootstrap_resamples": args.bootstrap,
        "macro_auroc": {name: r["macro_auroc"] for name, r in results.items()},
        "mean_over_seeds": {
            setting(s, k): float(
                np.mean([results[condition(s, k, seed)]["macro_auroc"] for seed in args.seeds])
            )
            for s in args.scales
            for k in args.candidates
        },
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
    print(f"{args.split} reports seen in the model's training data: {leaked}/{len(chosen)}")
    print(f"wrote {args.out} in {out['total_seconds']} s")


if __name__ == "__main__":
    main()
