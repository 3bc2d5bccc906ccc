"""Does a consensus over sampled reports read CXRs better than the greedy report? (minimum Bayes risk)

    python experiments/report-consensus/report_consensus.py [--model checkpoints/llmcxr-tiny] [--world runs/e6/world]
        [--split validate] [--drafts 12] [--temperature 1.0] [--out experiments/report-consensus/results/report_consensus.json]

For each item it writes the greedy report and ``--drafts`` top-p drafts (report guidance 1.5, as shipped),
labels all of them with the project's rule labeler, and scores three ways of choosing among them:
- MBR: the draft whose CheXpert labels agree best (mean F1) with the other drafts' labels;
- vote: the draft nearest (Hamming) to the per-class vote of the drafts at threshold t;
- the vote labels themselves (not a report, only how far a consensus could go).
Each is compared with greedy on the same items (paired bootstrap, ``llmcxr.metrics.intervals``). The
drafts are cached in ``--cache`` one pass at a time, so a killed run continues.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from llmcxr.atomic import write_json
from llmcxr.datasets.synthetic import read_synthetic_world
from llmcxr.findings import CHEXPERT_14
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.metrics.clinical import chexpert_14_labels, precision_recall_f1
from llmcxr.metrics.intervals import item_resamples, report_f1_intervals

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts' shared helper
from _repo import REPO, shown

HERE = Path(__file__).resolve().parent

GUIDANCE = 1.5  # the shipped report guidance (benchmarks/eval_tiny.py's validation sweep)


def label_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """F1 between label rows (broadcast over leading axes); two empty rows agree fully."""
    overlap, total = (a & b).sum(-1), a.sum(-1) + b.sum(-1)
    return np.where(total == 0, 1.0, 2 * overlap / np.maximum(total, 1))


def mbr_choice(pool: np.ndarray) -> np.ndarray:
    """(N, M, C) candidates' labels -> (N, C) labels of each item's candidate of highest mean agreement."""
    utility = label_agreement(pool[:, :, None, :], pool[:, None, :, :]).mean(-1)
    return pool[np.arange(len(pool)), utility.argmax(1)]


def vote_choice(pool: np.ndarray, drafts: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The drafts' per-class vote at ``threshold``, and each item's candidate nearest to it."""
    vote = (drafts.mean(1) >= threshold).astype(int)
    nearest = np.abs(pool - vote[:, None]).sum(-1).argmin(1)
    return vote, pool[np.arange(len(pool)), nearest]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "checkpoints" / "llmcxr-tiny")
    parser.add_argument("--world", type=Path, default=REPO / "runs" / "e6" / "world")
    parser.add_argument("--split", default="validate")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--drafts", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--cache", type=Path, default=None, help="drafts JSON (default under runs/)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "report_consensus.json")
    args = parser.parse_args()
    cache = args.cache or REPO / "runs" / "report_consensus" / f"{args.split}-t{args.temperature}.json"

    items = [r for r in read_synthetic_world(args.world) if r.split == args.split][: args.limit]
    paths = [r.image_path for r in items]
    settings = {
        "model": shown(args.model),
        "world": shown(args.world),
        "split": args.split,
        "limit": args.limit,
        "temperature": args.temperature,
        "report_guidance": GUIDANCE,
    }
    texts = json.loads(cache.read_text()) if cache.is_file() else {"greedy": None, "drafts": []}
    if texts.setdefault("settings", settings) != settings:  # drafts of another model or setting
        raise SystemExit(
            f"{cache} holds drafts made with {texts['settings']}, not {settings}: give another --cache"
        )
    llm = None
    started = time.perf_counter()
    passes = [("greedy", None)] + [("draft", k) for k in range(args.drafts)]
    for kind, k in passes:
        if (kind == "greedy" and texts["greedy"]) or (kind == "draft" and k < len(texts["drafts"])):
            continue
        llm = llm or LLMCXR.from_pretrained(args.model)
        sampling = SamplingConfig(
            do_sample=kind == "draft", temperature=args.temperature, max_new_tokens=160, seed=1000 * (k or 0)
        )
        reports = [
            r.text for r in llm.report(paths, sampling=sampling, guidance_scale=GUIDANCE, batch_size=32)
        ]
        if kind == "greedy":
            texts["greedy"] = reports
        else:
            texts["drafts"].append(reports)
        write_json(cache, texts)
        print(
            f"{kind} {k if k is not None else ''} done after {time.perf_counter() - started:.0f} s",
            flush=True,
        )

    reference = chexpert_14_labels([r.report for r in items])
    greedy = chexpert_14_labels(texts["greedy"])
    drafts = np.stack([chexpert_14_labels(d) for d in texts["drafts"][: args.drafts]], 1)  # (N, K, C)
    systems = {"greedy": greedy}
    for k in sorted({4, 8, args.drafts} & set(range(1, args.drafts + 1))):
        pool = np.concatenate([greedy[:, None], drafts[:, :k]], 1)  # the greedy report is a candidate too
        systems[f"mbr_{k}"] = mbr_choice(pool)
        for threshold in (0.3, 0.4, 0.5):
            vote, nearest = vote_choice(pool, drafts[:, :k], threshold)
            systems[f"vote_{k}_t{threshold}_nearest_draft"] = nearest
            systems[f"vote_{k}_t{threshold}_labels_only"] = vote

    def micro(predicted: np.ndarray) -> float:
        return precision_recall_f1(reference, predicted, CHEXPERT_14)["micro"]["f1"]

    intervals = report_f1_intervals(reference, systems, item_resamples(len(items), seed=0), model="greedy")
    out = {
        "command": f"python experiments/report-consensus/report_consensus.py --model {shown(args.model)} --world "
        f"{shown(args.world)} --split {args.split} --drafts {args.drafts} --temperature {args.temperature}",
        "n_items": len(items),
        "report_guidance": GUIDANCE,
        "labels": "project rule labeler, uncertain as positive, 14 CheXpert classes",
        "micro_f1_14": {name: micro(p) for name, p in systems.items()},
        "single_draft_micro_f1_14": [micro(drafts[:, k]) for k in range(drafts.shape[1])],
        "greedy_minus_system_95ci": intervals["margin"],
    }
    write_json(args.out, out)
    print(json.dumps(out["micro_f1_14"], indent=2))


if __name__ == "__main__":
    main()
