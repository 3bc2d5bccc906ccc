"""End-to-end evaluation of the shipped tiny model on the synthetic world's test split (issue 6).

    python benchmarks/eval_tiny.py            # -> benchmarks/results/eval_tiny.json

Builds what is missing first, with the commands of ``experiments/tiny-synth-stages/recipes/tiny-synth.yaml``: the 3,000-image
64 px template world (seed 0: the one the model was trained on; its test split was never trained on)
and a finding classifier trained on the world's train split with seed 1. Seed 1, not the seed-0
classifier that the tokenizer's clinical loss used (experiments/tiny-synth-stages/recipes/vq/tiny-synth-clinical.yaml): agreement and
preservation are scored by a network the model was not tuned against. Then ``llmcxr eval run``
(resumable: a killed benchmark continues) and a summary of its ``eval.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from _eval_world import prepare_eval_world
from _repo import REPO, shown

RESULT = REPO / "benchmarks" / "results" / "eval_tiny.json"
# Settings tried on the first VALIDATION_ITEMS items of the *validation* split; the test run uses the
# best there (never chosen on test): report -> CXR sampling and guidance by finding agreement,
# CXR -> report guidance (against no image) by micro-F1-14. Image settings: (sampling, guidance scale,
# candidates: each image the best of k draws by the model's own log p(report | image)).
IMAGE_SWEEP = [
    ("greedy", 2.0, 1),
    ("greedy", 3.0, 1),
    ("greedy", 4.0, 1),
    ("top-p", 3.0, 1),
    ("top-p", 3.0, 4),
]
REPORT_SWEEP = [1.0, 1.5, 2.0, 3.0]  # greedy reports, by guidance scale
# Then, at the best of those scales: each report the best of k top-p drafts by the model's own
# log p(image | report) (``LLMCXR.report(..., candidates=k)``).
REPORT_CANDIDATES = [4, 8]
VALIDATION_ITEMS = 300  # the whole validation split: sampled settings vary by ~0.01 from seed to seed


def trained_with_image_dropout(model: Path) -> bool:
    """Whether the model learned p(report) without an image (report guidance needs it)."""
    recipe = model / "llmcxr_train.json"
    return recipe.is_file() and bool(json.loads(recipe.read_text()).get("unconditional_report_fraction"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "checkpoints" / "llmcxr-tiny")
    parser.add_argument("--world", type=Path, default=REPO / "runs" / "e6" / "world")
    parser.add_argument("--classifier", type=Path, default=REPO / "runs" / "e6" / "classifier-eval")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "e6" / "eval")
    parser.add_argument(
        "--no-sweep", action="store_true", help="Skip the validation sweep: greedy, scale 3, one draw."
    )
    parser.add_argument("--result", type=Path, default=RESULT)
    args = parser.parse_args()

    started = time.perf_counter()
    prepare_eval_world(args.world, args.classifier)
    prepared = time.perf_counter() - started

    from llmcxr import atomic
    from llmcxr.evaluation.run import EvalRunConfig, run_evaluation

    started = time.perf_counter()
    validate = dict(data=args.world, split="validate", limit=VALIDATION_ITEMS, classifier=args.classifier)
    sweep: dict[str, float] = {}
    for sampling, scale, candidates in [] if args.no_sweep else IMAGE_SWEEP:
        best_of = f"-best-of-{candidates}" if candidates > 1 else ""
        tried = EvalRunConfig(
            model=args.model,
            out=args.out.with_name(f"{args.out.name}-validate-{sampling}-{scale}{best_of}"),
            tasks=("image",),
            guidance_scale=scale,
            image_sampling=sampling,
            image_candidates=candidates,
            **validate,
        )
        agreement = run_evaluation(tried)["headline"]["report_to_cxr"]["macro_auroc_drawn"]
        sweep[f"{sampling} {scale} {candidates}"] = round(agreement, 4)
    sampling, scale, candidates = max(sweep, key=sweep.get).split() if sweep else ("greedy", "3.0", "1")
    report_sweep: dict[str, float] = {}
    for report_scale in [] if args.no_sweep or not trained_with_image_dropout(args.model) else REPORT_SWEEP:
        tried = EvalRunConfig(
            model=args.model,
            out=args.out.with_name(f"{args.out.name}-validate-report-{report_scale}"),
            tasks=("report",),
            report_guidance_scale=report_scale,
            **validate,
        )
        f1 = run_evaluation(tried)["headline"]["cxr_to_report"]["micro_f1_14"]
        report_sweep[f"greedy {report_scale} 1"] = round(f1, 4)
    report_scale = float(max(report_sweep, key=report_sweep.get).split()[1]) if report_sweep else 1.0
    for report_candidates in [] if args.no_sweep else REPORT_CANDIDATES:
        tried = EvalRunConfig(
            model=args.model,
            out=args.out.with_name(
                f"{args.out.name}-validate-report-{report_scale}-best-of-{report_candidates}"
            ),
            tasks=("report",),
            report_guidance_scale=report_scale,
            report_sampling="top-p",
            report_candidates=report_candidates,
            **validate,
        )
        f1 = run_evaluation(tried)["headline"]["cxr_to_report"]["micro_f1_14"]
        report_sweep[f"top-p {report_scale} {report_candidates}"] = round(f1, 4)
    report_sampling, _, report_candidates = (
        max(report_sweep, key=report_sweep.get).split() if report_sweep else ("greedy", "1.0", "1")
    )
    swept = time.perf_counter() - started

    started = time.perf_counter()
    config = EvalRunConfig(
        model=args.model,
        data=args.world,
        out=args.out,
        split="test",
        classifier=args.classifier,
        guidance_scale=float(scale),
        image_sampling=sampling,
        image_candidates=int(candidates),
        report_guidance_scale=report_scale,
        report_sampling=report_sampling,
        report_candidates=int(report_candidates),
    )
    result = run_evaluation(config)
    wall = time.perf_counter() - started

    summary = {
        "command": f"python benchmarks/eval_tiny.py  (= llmcxr eval run --model {shown(args.model)} "
        f"--data {shown(args.world)} "
        f"--split test --classifier ... --image-sampling {sampling} --guidance-scale {scale} "
        f"--image-candidates {candidates} "
        f"--report-guidance-scale {report_scale} --report-sampling {report_sampling} "
        f"--report-candidates {report_candidates})",
        "validation_sweep": {
            "what": f"first {VALIDATION_ITEMS} validation items: report -> CXR macro-AUROC (drawn findings) "
            "by image sampling, guidance and candidates (best of k); CXR -> report micro-F1-14 by report "
            "sampling, guidance and candidates (best of k)",
            "report_to_cxr": sweep,
            "chosen": f"{sampling} {scale}, best of {candidates}",
            "cxr_to_report": report_sweep,
            "chosen_report": f"{report_sampling} {report_scale}, best of {report_candidates}",
            "wall_s": round(swept, 1),
        },
        "machine": f"{platform.processor() or platform.machine()}, shared 2-core CPU, 1 torch thread, fp32",
        "wall_s_eval_run": round(wall, 1),
        "wall_s_preparation": round(prepared, 1),
        "model": result["model"],
        "feature_network": result["feature_network"],
        "headline": result["headline"],
        "targets": result["targets"],
        "cxr_to_report": {"n": result["cxr_to_report"]["n"], "systems": result["cxr_to_report"]["systems"]},
        "report_to_cxr": {k: v for k, v in result["report_to_cxr"].items() if k not in ("labels",)},
        "vqa": result["vqa"],
        "timings": result["timings"],
        "eval_folder": str(args.out),
    }
    atomic.write_json(args.result, summary)
    print(json.dumps(summary["headline"], indent=2))
    print(f"wrote {args.result}")


if __name__ == "__main__":
    main()
