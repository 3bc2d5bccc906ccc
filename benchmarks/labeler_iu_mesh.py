"""Rule-based CheXpert labeler vs the human MeSH tags of the 3,955 IU X-ray reports.

    python benchmarks/labeler_iu_mesh.py [--reports ../shared/data/iu-xray/NLMCXR_reports.tgz]
        [--out benchmarks/results/labeler_iu_mesh.json] [--errors CLASS]

The IU MeSH *major* tags were assigned by people reading the reports (Demner-Fushman et al., JAMIA
2016). A tag is "Heading/subheading/..." (e.g. ``Opacity/lung/base/left``); it maps to a CheXpert
class by its heading, some only with a subheading (see ``MESH_TO_CHEXPERT``). The mapping follows
the CheXpert labeler's own phrase lists: a concept the CheXpert labeler files under class C maps to
C (e.g. "Pulmonary Congestion" -> Edema, "Cicatrix/lung" (scar) -> Lung Opacity, "Cicatrix/pleura"
-> Pleural Other); concepts CheXpert files
under no class (granuloma, calcinosis, blunted costophrenic angle, density, hypoinflation, sternotomy
sutures, surgical clips) are not mapped. "normal" -> No Finding.

Per class: gold = a mapped tag is present; predicted = the labeler says POSITIVE (and, in the second
variant, POSITIVE or UNCERTAIN). Precision / recall / F1 per class and micro-F1 over all mapped
classes, over all 3,955 reports (95 are tagged "No Indexing": no gold label at all). Speed: reports
per CPU-second of ``label_report`` on findings + impression, one process, best of three passes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from llmcxr.atomic import write_json
from llmcxr.datasets.iu_xray import IUReport, read_iu_reports
from llmcxr.findings import CHEXPERT_14, Mention
from llmcxr.reports import label_report

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORTS = ROOT.parent / "shared" / "data" / "iu-xray" / "NLMCXR_reports.tgz"

# MeSH heading -> (CheXpert class, subheading words of which one must be present, or None for any).
MESH_TO_CHEXPERT: dict[str, list[tuple[str, tuple[str, ...] | None]]] = {
    "normal": [("No Finding", None)],
    "Cardiomegaly": [("Cardiomegaly", None)],
    "Cardiac Shadow": [("Cardiomegaly", ("enlarged",))],
    "Heart": [("Cardiomegaly", ("enlarged",))],
    "Mediastinum": [("Enlarged Cardiomediastinum", ("enlarged", "prominent", "widened"))],
    "Nodule": [("Lung Lesion", None)],
    "Mass": [("Lung Lesion", None)],
    "Opacity": [("Lung Opacity", None)],
    "Infiltrate": [("Lung Opacity", None)],
    "Airspace Disease": [("Lung Opacity", None)],
    "Cicatrix": [("Lung Opacity", ("lung",)), ("Pleural Other", ("pleura",))],
    "Calcinosis": [("Pleural Other", ("pleura",))],
    "Markings": [("Lung Opacity", ("interstitial",))],
    "Lung Diseases, Interstitial": [("Lung Opacity", None)],
    "Pulmonary Edema": [("Edema", None)],
    "Pulmonary Congestion": [("Edema", None)],
    "Heart Failure": [("Edema", None)],
    "Consolidation": [("Consolidation", None)],
    "Pneumonia": [("Pneumonia", None)],
    "Pulmonary Atelectasis": [("Atelectasis", None)],
    "Pneumothorax": [("Pneumothorax", None)],
    "Hemopneumothorax": [("Pneumothorax", None)],
    "Hydropneumothorax": [("Pneumothorax", None), ("Pleural Effusion", None)],
    "Pleural Effusion": [("Pleural Effusion", None)],
    "Thickening": [("Pleural Other", ("pleura",))],
    "Fractures, Bone": [("Fracture", None)],
    "Catheters, Indwelling": [("Support Devices", None)],
    "Implanted Medical Device": [("Support Devices", None)],
    "Tube, Inserted": [("Support Devices", None)],
    "Medical Device": [("Support Devices", None)],
    "Stents": [("Support Devices", None)],
}
EVALUATED = tuple(c for c in CHEXPERT_14 if any(c == k for v in MESH_TO_CHEXPERT.values() for k, _ in v))


def gold_classes(major_tags: list[str]) -> set[str]:
    """The CheXpert classes that a report's MeSH major tags map to."""
    out = set()
    for tag in major_tags:
        heading, *subheadings = [p.strip() for p in tag.split("/")]
        for cls, required in MESH_TO_CHEXPERT.get(heading, []):
            if required is None or any(r in s.lower() for s in subheadings for r in required):
                out.add(cls)
    return out


def report_text(report: IUReport) -> str:
    return " ".join(p for p in (report.findings, report.impression) if p)


def scores(gold: list[set[str]], pred: list[set[str]]) -> dict:
    per_class, tp_all, fp_all, fn_all = {}, 0, 0, 0
    for cls in EVALUATED:
        tp = sum(cls in g and cls in p for g, p in zip(gold, pred, strict=True))
        fp = sum(cls not in g and cls in p for g, p in zip(gold, pred, strict=True))
        fn = sum(cls in g and cls not in p for g, p in zip(gold, pred, strict=True))
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[cls] = {"support": tp + fn, "tp": tp, "fp": fp, "fn": fn,
                          "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}  # fmt: skip
    precision = tp_all / (tp_all + fp_all) if tp_all + fp_all else 0.0
    recall = tp_all / (tp_all + fn_all) if tp_all + fn_all else 0.0
    micro = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    macro = sum(c["f1"] for c in per_class.values()) / len(per_class)
    return {"micro_precision": round(precision, 4), "micro_recall": round(recall, 4), "micro_f1": round(micro, 4),
            "macro_f1": round(macro, 4), "per_class": per_class}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "labeler_iu_mesh.json")
    parser.add_argument("--errors", default=None, help="print false positives/negatives of this class")
    args = parser.parse_args()

    reports = read_iu_reports(args.reports)
    texts = [report_text(r) for r in reports]
    # CPU seconds of this (single-threaded) process: "on one core" even while other jobs share the
    # machine; wall-clock seconds are reported beside them.
    cpu, wall = [], []
    for _ in range(3):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        labeled = [label_report(t) for t in texts]
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    gold = [gold_classes(r.mesh_major) for r in reports]
    positive = [{c for c, v in lr.labels.items() if v is Mention.POSITIVE} for lr in labeled]
    pos_or_unc = [{c for c, v in lr.labels.items() if v is not Mention.NEGATIVE} for lr in labeled]

    result = {
        "reports": len(reports),
        "no_indexing_reports": sum("No Indexing" in r.mesh_major for r in reports),
        "text": "findings + impression, raw (XXXX kept)",
        "reports_per_s_one_core": round(len(texts) / min(cpu), 1),
        "reports_per_s_wall": round(len(texts) / min(wall), 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
        "positive": scores(gold, positive),
        "positive_or_uncertain": scores(gold, pos_or_unc),
        "mapping": {k: [[c, list(r) if r else None] for c, r in v] for k, v in MESH_TO_CHEXPERT.items()},
    }
    write_json(args.out, result)
    print(
        f"{len(reports)} reports, {result['reports_per_s_one_core']} reports/s of CPU time "
        f"({result['reports_per_s_wall']}/s wall, load average {result['load_average_1min']})"
    )
    for variant in ("positive", "positive_or_uncertain"):
        s = result[variant]
        print(
            f"[{variant}] micro P/R/F1 {s['micro_precision']:.3f}/{s['micro_recall']:.3f}/{s['micro_f1']:.3f}  macro-F1 {s['macro_f1']:.3f}"
        )
        for cls, c in s["per_class"].items():
            print(
                f"  {cls:28s} n={c['support']:5d}  P {c['precision']:.3f}  R {c['recall']:.3f}  F1 {c['f1']:.3f}"
            )
    if args.errors:
        for r, g, p, lr in zip(reports, gold, positive, labeled, strict=True):
            if (args.errors in g) != (args.errors in p):
                kind = "FN" if args.errors in g else "FP"
                print(
                    f"\n{kind} {r.uid} mesh={r.mesh_major}\n   {report_text(r)}\n   -> { {k: v.name for k, v in lr.labels.items()} }"
                )


if __name__ == "__main__":
    main()
