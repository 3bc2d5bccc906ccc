"""Instruction tuning on CPU: the tiny recipe end to end, packing throughput, 2-process DDP.

    python benchmarks/train_tiny.py            # -> benchmarks/results/train_tiny.json

1. builds the synthetic world (`llmcxr data synth`, 64 px) and encodes it with the tiny VQ-GAN
   (checkpoints/vq-tiny; a random-weight VQConfig.tiny() model where that is not there yet, said so
   in the JSON) into a token store;
2. trains recipes/tiny-cpu.yaml (`llmcxr train`, at most 15 min of training) and records the
   per-task train and eval loss curves;
3. measures real (non-padding) tokens/s with packing and with padding (same recipe, a few steps);
4. runs 2 processes with torchrun (gloo) for a few steps and compares the weight hashes of both ranks.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llmcxr import atomic  # noqa: E402
from llmcxr.config import load_config, save_config  # noqa: E402
from llmcxr.training.config import TASKS, TrainRecipe  # noqa: E402

LLMCXR = [str(Path(sys.executable).with_name("llmcxr"))]  # the console script of this venv


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` (output to ``log``); returns wall seconds; raises on failure."""
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(
            cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - start


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_world(work: Path, n: int) -> float:
    world = work / "world"
    if (world / "world.json").is_file() and json.loads((world / "world.json").read_text()).get("complete"):
        return 0.0
    return run(
        [*LLMCXR, "data", "synth", "--out", str(world), "--n", str(n), "--size", "64", "--seed", "0"],
        work / "synth.log",
    )


def image_tokenizer(work: Path) -> tuple[Path, str]:
    trained = ROOT / "checkpoints" / "vq-tiny"
    if (trained / "vqgan.safetensors").is_file():
        return trained, "checkpoints/vq-tiny (trained)"
    import torch

    from llmcxr.vq import VQGAN, VQConfig, save_vqgan

    folder = work / "vq-random"
    if not (folder / "vqgan.safetensors").is_file():
        torch.manual_seed(0)
        save_vqgan(VQGAN(VQConfig.tiny()).eval(), folder)
    return folder, "random-weight VQConfig.tiny() (checkpoints/vq-tiny not there yet)"


def encode(work: Path, vq: Path) -> float:
    tokens, marker = work / "tokens", work / "tokens.vq_sha256"
    digest = sha256(vq / "vqgan.safetensors")
    if tokens.is_dir() and marker.is_file() and marker.read_text().strip() == digest:
        return 0.0
    shutil.rmtree(tokens, ignore_errors=True)
    seconds = run(
        [
            *LLMCXR,
            "vq",
            "encode",
            str(vq),
            str(work / "world" / "manifest.jsonl"),
            str(tokens),
            "--num-workers",
            "0",
            "--no-progress",
        ],
        work / "encode.log",
    )
    marker.write_text(digest + "\n")
    return seconds


def write_recipe(recipe: TrainRecipe, path: Path) -> Path:
    save_config(recipe, path)
    return path


def curves(log_history: list[dict]) -> dict:
    """Per-task [step, loss] lists for training and eval, and whether each fell (last < first)."""
    out: dict = {"train": {}, "eval": {}}
    for entry in log_history:
        for task in TASKS:
            if f"loss_{task}" in entry:
                out["train"].setdefault(task, []).append([entry["step"], entry[f"loss_{task}"]])
            if f"eval_{task}_loss" in entry:
                out["eval"].setdefault(task, []).append([entry["step"], round(entry[f"eval_{task}_loss"], 4)])
    out["train_total"] = [[e["step"], e["loss"]] for e in log_history if "loss" in e]
    summary = {}
    for kind in ("train", "eval"):
        for task, points in out[kind].items():
            # train losses are per log window (noisy): compare the mean of the first and last 3 windows
            k = 3 if kind == "train" else 1
            first = sum(p[1] for p in points[:k]) / len(points[:k])
            last = sum(p[1] for p in points[-k:]) / len(points[-k:])
            summary[f"{kind}/{task}"] = {
                "first": round(first, 4),
                "last": round(last, 4),
                "fell": last < first,
            }
    out["summary"] = summary
    return out


def throughput(recipe: TrainRecipe, rounds: int) -> dict:
    """Real (non-padding) tokens/s of training steps, packed vs padded, measured in this process on
    the recipe's model and data. The two are interleaved step by step so that the load of other
    jobs on the machine falls on both alike. A step is forward + backward + AdamW on a batch of
    ``per_device_batch_size`` rows: packed rows of max_length tokens, or one example per row padded
    to the longest in the batch."""
    import random

    import torch

    from llmcxr.datasets.instructions import read_instructions
    from llmcxr.training.data import corpus_texts
    from llmcxr.training.model_setup import prepare_model
    from llmcxr.training.packing import RowCollator, pack_examples, single_rows
    from llmcxr.training.sources import open_token_stores, read_source
    from llmcxr.training.tasks import encode_samples, mix_tasks, select_stage

    torch.manual_seed(0)
    records = select_stage([r for s in recipe.data for r in read_source(s)], recipe.stage)
    records = [r for r in records if r.split == "train"]
    instructions = read_instructions(recipe.instructions)
    stores = open_token_stores(recipe.data)
    scratch = dataclasses.replace(recipe, output_dir=recipe.output_dir.parent / "tput")
    shutil.rmtree(scratch.output_dir, ignore_errors=True)
    model, tokenizer, image_tokens = prepare_model(
        scratch, corpus_texts(records, instructions, 1), stores.config.codebook_size, stores.config.num_tokens
    )
    samples = mix_tasks(records, instructions, recipe.mixture, 1, recipe.seed, recipe.unconditional_fraction)
    examples = encode_samples(samples, tokenizer, image_tokens, stores, recipe.max_length)
    batch = recipe.optim.per_device_batch_size
    packed_rows = pack_examples(examples, recipe.max_length, TASKS)
    padded_rows = single_rows(examples, TASKS)
    random.Random(0).shuffle(packed_rows)
    random.Random(1).shuffle(padded_rows)
    collate = {
        True: RowCollator(tokenizer.pad_token_id, packed=True),
        False: RowCollator(tokenizer.pad_token_id, packed=False),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    seconds = {True: 0.0, False: 0.0}
    tokens = {True: 0, False: 0}
    slots = {True: 0, False: 0}  # tokens computed, padding included
    cursor = {True: 0, False: 0}
    for step in range(2 * rounds + 2):
        packed = step % 2 == 0
        rows = packed_rows if packed else padded_rows
        chunk = [rows[(cursor[packed] + k) % len(rows)] for k in range(batch)]
        cursor[packed] += batch
        inputs = collate[packed](chunk)
        task_ids = inputs.pop("task_ids")
        start = time.perf_counter()
        loss = model(**inputs, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:  # the first step of each kind warms up allocators and kernels
            seconds[packed] += time.perf_counter() - start
            tokens[packed] += int((task_ids >= 0).sum())
            slots[packed] += task_ids.numel()
    result = {
        "method": "in-process, packed and padded steps interleaved, fp32, batch of "
        f"{batch} rows, {rounds} steps each; real tokens exclude padding",
        "examples": len(examples),
        "packed_rows": len(packed_rows),
        "packed_fill": round(
            sum(len(r.input_ids) for r in packed_rows) / (len(packed_rows) * recipe.max_length), 3
        ),
    }
    for packed, name in ((True, "packed"), (False, "padded")):
        result[f"{name}_real_tokens_per_second"] = round(tokens[packed] / seconds[packed], 1)
        result[f"{name}_padding_fraction"] = round(1 - tokens[packed] / slots[packed], 3)
    result["packed_over_padded"] = round(
        result["packed_real_tokens_per_second"] / result["padded_real_tokens_per_second"], 2
    )
    return result


def ddp(work: Path, recipe: TrainRecipe, steps: int) -> dict:
    out = work / "ddp"
    shutil.rmtree(out, ignore_errors=True)
    config = write_recipe(recipe, work / "ddp.yaml")
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    seconds = run(
        [
            torchrun,
            "--nproc-per-node",
            "2",
            "-m",
            "llmcxr.cli.train_entry",
            "--config",
            str(config),
            "--output-dir",
            str(out),
            "--max-steps",
            str(steps),
        ],
        work / "ddp.log",
        env={"OMP_NUM_THREADS": "1"},
    )
    hashes = [(out / f"weights_sha256.rank{r}.txt").read_text().strip() for r in (0, 1)]
    history = json.loads((out / "train_log.json").read_text())["log_history"]
    return {
        "processes": 2,
        "backend": "gloo",
        "steps": max(e.get("step", 0) for e in history),
        "wall_s": round(seconds, 1),
        "weights_sha256": hashes,
        "identical": hashes[0] == hashes[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "tiny-cpu")
    parser.add_argument("--images", type=int, default=1500, help="synthetic world size")
    parser.add_argument("--tput-steps", type=int, default=12, help="measured steps per mode")
    parser.add_argument("--only-throughput", action="store_true", help="update the throughput of --out only")
    parser.add_argument("--ddp-steps", type=int, default=4)
    parser.add_argument("--skip-train", action="store_true", help="reuse the last training run's log")
    parser.add_argument("--train-steps", type=int, default=None, help="override max_steps (smoke runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_tiny.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    result: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}}
    result["world"] = {
        "images": args.images,
        "size": 64,
        "synth_s": round(build_world(args.work, args.images), 1),
    }
    vq, vq_note = image_tokenizer(args.work)
    result["vq"] = {
        "folder": str(vq.relative_to(ROOT) if vq.is_relative_to(ROOT) else vq),
        "note": vq_note,
        "encode_s": round(encode(args.work, vq), 1),
    }

    recipe = load_config(TrainRecipe, ROOT / "recipes" / "tiny-cpu.yaml")
    recipe = dataclasses.replace(
        recipe,
        vq_folder=vq,
        output_dir=args.work / "run",
        data=[
            dataclasses.replace(recipe.data[0], path=args.work / "world", token_store=args.work / "tokens")
        ],
    )
    if args.only_throughput:
        result = json.loads(args.out.read_text())
        result["throughput"] = throughput(recipe, args.tput_steps)
        atomic.write_json(args.out, result)
        print(json.dumps(result["throughput"], indent=1))
        return
    if args.train_steps is not None:
        recipe = dataclasses.replace(
            recipe, optim=dataclasses.replace(recipe.optim, max_steps=args.train_steps)
        )
    if not args.skip_train:
        shutil.rmtree(args.work / "run", ignore_errors=True)
        seconds = run(
            [*LLMCXR, "train", "--config", str(write_recipe(recipe, args.work / "tiny.yaml"))],
            args.work / "train.log",
        )
        result["train_wall_s"] = round(seconds, 1)
    log = json.loads((args.work / "run" / "train_log.json").read_text())
    final = [e for e in log["log_history"] if "train_runtime" in e][-1]
    result["train"] = {
        "recipe": "recipes/tiny-cpu.yaml",
        "num_parameters": log["num_parameters"],
        "train_runtime_s": final["train_runtime"],
        "steps": final.get("step"),
        "samples": log["samples"],
        **curves(log["log_history"]),
    }
    result["throughput"] = throughput(recipe, args.tput_steps)
    result["ddp"] = ddp(args.work, recipe, args.ddp_steps)
    atomic.write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("vq", "throughput", "ddp")}, indent=1))
    print(json.dumps(result["train"]["summary"], indent=1))


if __name__ == "__main__":
    main()
