"""The finding classifier trained on real CXRs (``llmcxr eval train-classifier --manifest``).

    nice -n 10 python benchmarks/finding_classifier_real.py [--data ../shared/data/cxr-real]
        [--size 64] [--steps 600] [--work runs/real-classifier]
        [--out benchmarks/results/finding_classifier_real.json]

The shared real set (673 frontal CXRs, never copied into the repository) names one finding per
image: "No Finding" or an infectious pneumonia (COVID-19, SARS, bacterial, viral, fungal). This
script writes a manifest in ``--work`` that points at the images (labels: No Finding or Pneumonia;
rows marked "todo" or ARDS alone are left out), trains through the CLI as a user would, with rows
held out by patient, and records the validation AUROC. Caveat in the result: every normal image
comes from one source (OpenIST) and every pneumonia from another (covid-chestxray-dataset), so the
AUROC also measures how well the two sources can be told apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

from _repo import REPO, llmcxr, shown

from llmcxr.atomic import write_json

NOT_PNEUMONIA = {"No Finding", "todo", "ARDS"}


def write_manifest(data: Path, manifest: Path) -> dict[str, int]:
    """The real set as a classifier manifest; returns how many rows each label got."""
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out, counts = [], {"No Finding": 0, "Pneumonia": 0, "left out": 0}
    for row in rows:
        finding = row["finding"].strip()
        if finding == "No Finding":
            labels, report = {"No Finding": 1, "Pneumonia": 0}, "No acute cardiopulmonary process."
        elif finding not in NOT_PNEUMONIA:
            labels, report = {"No Finding": 0, "Pneumonia": 1}, f"Findings of pneumonia ({finding})."
        else:
            counts["left out"] += 1
            continue
        counts["No Finding" if labels["No Finding"] else "Pneumonia"] += 1
        out.append(
            {
                "image": str((data / row["image"]).resolve()),
                "patient_id": row["patient"],
                "view": row["view"],
                "report": report,
                "labels": json.dumps(labels),
                "source": row["source"],
            }
        )
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-real")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "real-classifier")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "finding_classifier_real.json"
    )
    args = parser.parse_args()
    if not (args.data / "manifest.csv").is_file():
        sys.exit(f"{args.data / 'manifest.csv'} not found: give --data, the folder of the real CXR set")
    manifest = args.work / "manifest.csv"
    counts = write_manifest(args.data, manifest)
    classifier = args.work / "classifier"
    command = [
        *("eval", "train-classifier", "--manifest", str(manifest), "--out", str(classifier)),
        *("--size", str(args.size), "--steps", str(args.steps)),
    ]
    started = time.perf_counter()
    llmcxr(*command)
    summary = json.loads((classifier / "train_summary.json").read_text())
    write_json(
        args.out,
        {
            "benchmark": "finding_classifier_real",
            "command": "python benchmarks/finding_classifier_real.py " + " ".join(sys.argv[1:]),
            "cli": "llmcxr " + " ".join(command).replace(str(REPO) + "/", ""),
            "data": shown(args.data),
            "rows": counts,
            "n_train": summary["n_train"],
            "n_validate": summary.get("n_eval"),
            "validate_auroc": summary.get("eval_auroc"),
            "weights_sha256": summary["weights_sha256"],
            "wall_s": round(time.perf_counter() - started, 1),
            "caveat": "every No Finding image is from OpenIST and every pneumonia from covid-chestxray-dataset: "
            "the AUROC also measures how well the two sources can be told apart",
            "machine": {"processor": platform.processor() or platform.machine(), "torch_threads": 1},
        },
    )
    print(f"wrote {shown(args.out)}")


if __name__ == "__main__":
    main()
