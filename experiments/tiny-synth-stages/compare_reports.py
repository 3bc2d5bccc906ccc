"""Two models' reports on the same items, paired: micro-F1-14 of each and the interval of the difference.

    python experiments/tiny-synth-stages/compare_reports.py RUN_A RUN_B [--world runs/e6/world] [--split validate]
        [--out experiments/tiny-synth-stages/results/compare_reports.json]

RUN_A and RUN_B are ``llmcxr eval run`` output folders of the same split (their ``reports.jsonl``).
Both sides are labelled by the project's rule labeler, uncertain as positive, as ``eval run`` does; the
interval is 1,000 bootstrap resamples of the items, the same for both (``llmcxr.metrics.intervals``),
so it says whether the difference is more than which items happened to be drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmcxr.atomic import write_json
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.findings import CHEXPERT_14
from llmcxr.metrics.clinical import chexpert_14_labels, precision_recall_f1
from llmcxr.metrics.intervals import item_resamples, report_f1_intervals

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts' shared helper
from _repo import REPO, shown

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs=2, help="two `llmcxr eval run` output folders")
    parser.add_argument("--world", type=Path, default=REPO / "runs" / "e6" / "world")
    parser.add_argument("--split", default="validate")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "compare_reports.json")
    args = parser.parse_args()

    items = [r for r in read_synthetic_world(args.world) if r.split == args.split]
    systems = {}
    for run in args.runs:
        lines = (run / "reports.jsonl").read_text(encoding="utf-8").splitlines()
        generated = {row["image_id"]: row["report"] for row in map(json.loads, lines)}
        missing = [r.image_id for r in items if r.image_id not in generated]
        if missing:
            raise SystemExit(f"{run}: no report for {len(missing)} {args.split} items (first {missing[0]})")
        systems[shown(run)] = chexpert_14_labels([generated[r.image_id] for r in items])
    first, second = systems
    reference = chexpert_14_labels([r.report for r in items])
    intervals = report_f1_intervals(reference, systems, item_resamples(len(items), seed=0), model=first)
    point = {
        name: precision_recall_f1(reference, p, CHEXPERT_14)["micro"]["f1"] for name, p in systems.items()
    }
    out = {
        "command": f"python experiments/tiny-synth-stages/compare_reports.py {first} {second} --world {shown(args.world)} "
        f"--split {args.split}",
        "n_items": len(items),
        "labels": "project rule labeler, uncertain as positive, 14 CheXpert classes",
        "micro_f1_14": point,
        "micro_f1_14_95ci": intervals["micro_f1"],
        "difference": point[first] - point[second],
        "difference_95ci": intervals["margin"][second],
    }
    write_json(args.out, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
