"""One table of several trained models' validation runs: the numbers a stage is chosen by.

    python experiments/tiny-synth-stages/stage_summary.py --out experiments/tiny-synth-stages/results/stage7/validation.json \
        --what "..." --command "llmcxr eval run ..." \
        stage6_lm10_shipped=runs/e6/eval-lm10-validate:runs/e6/lm10 \
        stage7_lm12=runs/e6/eval-lm12-validate:runs/e6/lm12 ...

Each NAME=EVAL:RUN pairs an ``llmcxr eval run`` output folder with the ``llmcxr train`` output folder
of the model it scored. Read from them: micro/macro-F1-14 of the reports, finding agreement and FID of
the images (``eval.json``), the weights' sha256, and the run's steps, minutes and last held-out report
loss (``train_log.json``). Paired differences come from ``experiments/tiny-synth-stages/compare_reports.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from llmcxr.atomic import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts' shared helper
from _repo import REPO


def summary(eval_folder: Path, run: Path) -> dict:
    result = json.loads((eval_folder / "eval.json").read_text())
    headline = result["headline"]
    log = json.loads((run / "train_log.json").read_text())["log_history"]
    closing = next(entry for entry in log if "train_runtime" in entry)
    report_losses = [
        entry["eval_report_generation_loss"] for entry in log if "eval_report_generation_loss" in entry
    ]
    return {
        "micro_f1_14": headline["cxr_to_report"]["micro_f1_14"],
        "macro_f1_14": result["cxr_to_report"]["systems"]["model"]["clinical"]["macro_f1_14"],
        "finding_agreement": headline["report_to_cxr"]["macro_auroc_drawn"],
        "fid": headline["report_to_cxr"]["fid"],
        "model_weights_sha256": hashlib.sha256(
            (run / "model" / "model.safetensors").read_bytes()
        ).hexdigest(),
        "training": {
            "steps": closing["step"],
            "minutes": round(closing["train_runtime"] / 60, 1),
            "eval_report_generation_loss": report_losses[-1] if report_losses else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=EVAL_FOLDER:RUN_FOLDER")
    parser.add_argument("--what", required=True, help="what was compared, in a sentence")
    parser.add_argument("--command", required=True, help="the eval run command, with lmN for the model")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = {}
    for spec in args.runs:
        name, _, folders = spec.partition("=")
        eval_folder, _, run = folders.partition(":")
        if not (name and eval_folder and run):
            raise SystemExit(f"{spec!r}: give NAME=EVAL_FOLDER:RUN_FOLDER")
        runs[name] = summary(REPO / eval_folder, REPO / run)
    written_by = "python experiments/tiny-synth-stages/stage_summary.py " + " ".join(args.runs)
    write_json(args.out, {"what": args.what, "command": args.command, "written_by": written_by, "runs": runs})
    print(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
