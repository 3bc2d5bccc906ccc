"""The SmolLM2-based model beside the shipped tiny model, same items, same settings (issue 22).

    python benchmarks/eval_smol.py            # -> benchmarks/results/eval_smol.json

Both models run ``llmcxr eval run`` on the first ``--limit`` items of the test split of
benchmarks/eval_tiny.py's world (64 px, seed 0: both models' training world; its test split was never
trained on), with the same finding classifier (seed 1) and one setting for both, chosen on no test data:
greedy reports without guidance, greedy images at guidance 3 (the scale eval_tiny.py's validation sweep
chose for the tiny model), one draw each. The record also gives each model's training time (its
run's ``train_log.json``, or the shipped record) and the baselines of the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from _eval_world import prepare_eval_world
from _repo import REPO, shown

RESULT = REPO / "benchmarks" / "results" / "eval_smol.json"
SETTINGS = dict(
    guidance_scale=3.0, image_sampling="greedy", report_guidance_scale=1.0, text_sampling="greedy"
)


def training_minutes(model: Path) -> float | None:
    """Minutes of LM training: a shipped folder's record, else the run folder around ``model``."""
    shipped = model / "SHIPPED.json"
    if shipped.is_file():
        return json.loads(shipped.read_text())["train_minutes"]
    log = model.parent / "train_log.json"
    if log.is_file():
        entries = json.loads(log.read_text())["log_history"]
        return round(next(e for e in entries if "train_runtime" in e)["train_runtime"] / 60, 1)
    return None


def headline(result: dict) -> dict:
    """The four numbers issue 22 asks for, with intervals."""
    h = result["headline"]
    return {
        "micro_f1_14": h["cxr_to_report"]["micro_f1_14"],
        "micro_f1_14_95ci": h["cxr_to_report"]["micro_f1_14_95ci"],
        "finding_agreement_macro_auroc_drawn": h["report_to_cxr"]["macro_auroc_drawn"],
        "finding_agreement_95ci": h["report_to_cxr"]["macro_auroc_drawn_95ci"],
        "vqa_accuracy": h["vqa"]["accuracy"],
        "fid": h["report_to_cxr"]["fid"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smol", type=Path, default=REPO / "checkpoints" / "llmcxr-smol")
    parser.add_argument("--tiny", type=Path, default=REPO / "checkpoints" / "llmcxr-tiny")
    parser.add_argument("--world", type=Path, default=REPO / "runs" / "e6" / "world")
    parser.add_argument("--classifier", type=Path, default=REPO / "runs" / "e6" / "classifier-eval")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "smol" / "eval")
    parser.add_argument("--limit", type=int, default=100, help="first N test items (CPU time)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--result", type=Path, default=RESULT)
    parser.add_argument(
        "--only", choices=("llmcxr-smol", "llmcxr-tiny"), help="run one model's eval (resumable) and stop"
    )
    args = parser.parse_args()

    prepare_eval_world(args.world, args.classifier)

    from llmcxr import atomic
    from llmcxr.evaluation.run import EvalRunConfig, run_evaluation

    rows, baselines = {}, None
    for name, model in (("llmcxr-smol", args.smol), ("llmcxr-tiny", args.tiny)):
        if args.only not in (None, name):
            continue
        started = time.perf_counter()
        config = EvalRunConfig(
            model=model,
            data=args.world,
            out=args.out / name,
            split="test",
            classifier=args.classifier,
            limit=args.limit,
            threads=args.threads,
            **SETTINGS,
        )
        result = run_evaluation(config)
        rows[name] = {
            "model": shown(model),
            **headline(result),
            "training_minutes": training_minutes(model),
            "eval_wall_s_this_call": round(time.perf_counter() - started, 1),  # less where it resumed
            "generation_s": result["timings"]["generation_s_all_runs"],  # every call's, resumed ones too
            "generation_items_per_s": result["timings"]["items_per_s"],
            "eval_folder": shown(args.out / name),
        }
        baselines = baselines or {
            "cxr_to_report": {
                k: v["clinical"]["micro_f1_14"]
                for k, v in result["cxr_to_report"]["systems"].items()
                if k != "model" and "clinical" in v
            },
            "report_to_cxr_baseline_macro_auroc_drawn": result["headline"]["report_to_cxr"][
                "baseline_macro_auroc_drawn"
            ],
            "report_to_cxr_baseline_fid": result["headline"]["report_to_cxr"]["baseline_fid"],
            "vqa_baseline_accuracy": result["headline"]["vqa"]["baseline_accuracy"],
        }
        print(name, json.dumps(rows[name], indent=1), flush=True)

    if args.only:
        return
    record = {
        "command": f"python benchmarks/eval_smol.py --limit {args.limit}",
        "what": f"first {args.limit} test items of {shown(args.world)}, both models, settings {SETTINGS}",
        "models": rows,
        "baselines": baselines,
        "machine": f"{platform.processor() or platform.machine()}, shared 2-core CPU, "
        f"{args.threads} torch threads",
    }
    atomic.write_json(args.result, record)
    print(f"wrote {shown(args.result)}")


if __name__ == "__main__":
    main()
