"""Language retention (issue 22): does a CXR-tuned LM keep its base's language?

    llmcxr base fetch smollm2-135m-instruct --out runs/bases/smollm2-135m-instruct   # once
    python benchmarks/language_retention.py                      # base (2 layouts) and the floor
    python benchmarks/language_retention.py --add \\
        --tuned text-0.2=runs/smol/chat-text0.2/model --tuned text-0=runs/smol/chat-text0/model
        # -> benchmarks/results/language_retention.json

Rows: the base (SmolLM2-135M-Instruct, in its chat template, and asked in the Dolly text), each tuned model (with its mean
per-token KL to the base on the base's own answers), and the shipped from-scratch model as a floor.
The instruction set (benchmarks/data/language_retention.jsonl, 212 items: facts, arithmetic, format
following, short medical definitions) was written for this benchmark and is never trained on.
Target (issue 22): the text-share-0.2 model within 5 points of the base, clearly above the 0-share model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np
import torch
from _repo import REPO, shown

from llmcxr import atomic
from llmcxr.evaluation.language_retention import load_text_model, score_answers, score_model
from llmcxr.metrics.instructions import load_instruction_items
from llmcxr.metrics.intervals import item_resamples, paired_difference

ITEMS = REPO / "benchmarks" / "data" / "language_retention.jsonl"
RESULT = REPO / "benchmarks" / "results" / "language_retention.json"
BASE = REPO / "runs" / "bases" / "smollm2-135m-instruct"
FLOOR = REPO / "checkpoints" / "llmcxr-tiny"


def _row(name: str, result, keep_answers: bool) -> dict:
    row = {"name": name, **dataclasses.asdict(result)}
    if row["kl_to_base"] is not None:
        row["kl_to_base"].pop("per_item", None)
    if not keep_answers:
        row.pop("answers")
    return row


def paired_against_base(rows: list[dict]) -> dict[str, dict]:
    """Each row's accuracy minus the base's on the same resampled items (95% paired bootstrap), and the
    chat text-0.2 arm minus every other tuned arm: the differences the target is about."""
    correct = {
        r["name"]: np.array([a["correct"] for a in r["answers"]], float) for r in rows if "answers" in r
    }
    resamples = item_resamples(len(correct["base"]))

    def pair(first: str, second: str) -> dict:
        a, b = correct[first], correct[second]
        interval = paired_difference(lambda r: float(a[r].mean()), lambda r: float(b[r].mean()), resamples)
        return {"difference": float(a.mean() - b.mean()), "interval": interval}

    pairs = {f"{name} - base": pair(name, "base") for name in correct if name != "base"}
    if "text-0.2" in correct:
        for name in correct:
            if name not in ("base", "text-0.2") and not name.startswith(("base", "floor")):
                pairs[f"text-0.2 - {name}"] = pair("text-0.2", name)
    return pairs


def rescore(path, items) -> None:
    """Re-apply the checks to the answers a previous run stored (after a check was corrected)."""
    record = json.loads(path.read_text(encoding="utf-8"))
    by_id = {item["id"]: item for item in items}
    for row in record["rows"]:
        if "answers" not in row:
            row["rescored"] = False  # its answers were not kept: rerun the benchmark for it
            continue
        scored = [by_id[a["id"]] for a in row["answers"]]
        correct, row["accuracy"], row["by_category"] = score_answers(
            [a["answer"] for a in row["answers"]], scored
        )
        for answer, ok in zip(row["answers"], correct, strict=True):
            answer["correct"] = bool(ok)
        row["rescored"] = True
        print(f"  {row['name']}: accuracy {row['accuracy']['accuracy']:.3f}")
    record["paired"] = paired_against_base(record["rows"])
    atomic.write_json(path, record)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=lambda p: REPO / p, default=BASE, help="the base LM folder")
    parser.add_argument(
        "--tuned", action="append", default=[], help="NAME=FOLDER of a model tuned from the base"
    )
    parser.add_argument("--floor", type=lambda p: REPO / p, default=FLOOR, help="'' to leave the floor out")
    parser.add_argument("--items", type=lambda p: REPO / p, default=ITEMS)
    parser.add_argument(
        "--base-dolly",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also ask the base in the Dolly text (not its own template)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N items only (a smoke run)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=lambda p: REPO / p, default=RESULT)
    parser.add_argument(
        "--add", action="store_true", help="score only the --tuned models and add them to the rows in --out"
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="re-check the answers stored in --out (and their differences) only",
    )
    args = parser.parse_args()
    if args.rescore:
        return rescore(args.out, load_instruction_items(args.items))
    torch.set_num_threads(args.threads)
    if not (args.base / "config.json").is_file():
        raise SystemExit(f"no base at {args.base}: llmcxr base fetch smollm2-135m-instruct --out {args.base}")

    items = load_instruction_items(args.items)[: args.limit]
    started = time.perf_counter()
    base = load_text_model(args.base)
    print(f"base {shown(args.base)} ({base.layout} layout), {len(items)} items", flush=True)
    if args.add:
        # tuned rows only, beside the rows of an earlier run: its base answers (ids) give the KL
        record = json.loads(args.out.read_text(encoding="utf-8"))
        if record["n_items"] != len(items) or record["base"] != shown(args.base):
            raise SystemExit(f"{shown(args.out)} scored another item set or base: run without --add")
        names = {spec.partition("=")[0] for spec in args.tuned}
        rows = [row for row in record["rows"] if row["name"] not in names]
        base_ids = record["base_answer_ids"]
    else:
        base_result, base_ids = score_model(base, items, batch_size=args.batch_size)
        rows = [_row("base", base_result, keep_answers=True)]
        print(f"  base accuracy {base_result.accuracy['accuracy']:.3f}", flush=True)
    if args.base_dolly and base.layout != "dolly" and not args.add:
        # the same base asked in the Dolly text: how much of its skill is tied to its own template
        dolly = load_text_model(args.base, "dolly")
        result, _ = score_model(dolly, items, base=base, base_answer_ids=base_ids, batch_size=args.batch_size)
        rows.append(_row("base, asked in the Dolly text", result, keep_answers=True))
        print(f"  base (dolly) accuracy {result.accuracy['accuracy']:.3f}", flush=True)
    for spec in args.tuned:
        name, _, folder = spec.partition("=")
        tuned = load_text_model(REPO / folder)
        result, _ = score_model(tuned, items, base=base, base_answer_ids=base_ids, batch_size=args.batch_size)
        rows.append(_row(name, result, keep_answers=True))
        kl = (result.kl_to_base or {}).get("mean_kl_nats")
        print(f"  {name} accuracy {result.accuracy['accuracy']:.3f} KL {kl}", flush=True)
    if args.floor != REPO and not args.add:
        floor = load_text_model(args.floor)
        result, _ = score_model(floor, items, base=base, base_answer_ids=base_ids, batch_size=args.batch_size)
        rows.append(_row("floor: shipped llmcxr-tiny (no pretrained language)", result, keep_answers=True))
        print(f"  floor accuracy {result.accuracy['accuracy']:.3f}", flush=True)

    record = {
        "what": "accuracy on held-out plain instructions with checkable answers (95% item-bootstrap "
        "intervals), and mean per-token KL(base || tuned) on the base's own greedy answers",
        "items": shown(args.items),
        "n_items": len(items),
        "greedy": True,
        "base": shown(args.base),
        "rows": rows,
        "paired": paired_against_base(rows),
        "base_answer_ids": base_ids,  # the KL's teacher-forced answers, for later --add runs
        "target": "text-share-0.2 model within 0.05 of the base's accuracy, clearly above the 0-share model",
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads},
    }
    atomic.write_json(args.out, record)
    print(f"wrote {shown(args.out)}")


if __name__ == "__main__":
    main()
