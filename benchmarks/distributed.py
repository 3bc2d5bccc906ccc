"""Two CPU processes (torchrun, gloo) against one: DDP, LoRA + DDP, DeepSpeed ZeRO-3 (from scratch and from a
pretrained base), LoRA + ZeRO-3, FSDP2.

    python benchmarks/distributed.py          # -> benchmarks/results/distributed.json (~10 min on 2 cores)

Each mode trains a tiny GPT-NeoX for 3 steps with a global batch of 4 packed rows (2 per process) and is
compared with one process at batch 4: the largest loss and weight differences, whether both ranks
hold the same weights, whether the export loads (``AutoModelForCausalLM`` and ``LLMCXR``), and whether a
run stopped after step 2's checkpoint resumes to the uninterrupted run's weights bit for bit.
Also: the first ZeRO-3 run on a machine with no compiled DeepSpeed ops (the time its op builds cost).
tests/test_distributed.py checks the same in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]  # the tiny run the tests check: tests/_tiny_lm.py

from _tiny_lm import (  # noqa: E402
    plain_base,
    rank_hashes,
    run_losses,
    tiny_run_recipe,
    torchrun_command,
    write_world,
)

ZERO3 = ROOT / "recipes" / "distributed" / "zero3.json"
FSDP = ROOT / "recipes" / "distributed" / "fsdp.json"
STEPS = 3


def recipe(work: Path, name: str, per_device: int, **fields):
    return tiny_run_recipe(work / name, work / "world", per_device, STEPS, **fields)


def torchrun(config, *options: str, env: dict | None = None) -> float:
    start = time.perf_counter()
    log_path = Path(config.output_dir).with_suffix(".log")
    with open(log_path, "a") as log:
        done = subprocess.run(
            torchrun_command(config, *options),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
        )
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: see {log_path}")
    return time.perf_counter() - start


def weights(folder: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()


def measure(work: Path, mode: str, fields: dict, resume: bool) -> dict:
    from llmcxr.generation import LLMCXR
    from llmcxr.training import train_recipe

    reference = recipe(work, f"{mode}-one", 4, **{k: v for k, v in fields.items() if k in ("lora", "model")})
    train_recipe(reference, print_logs=False)
    two = recipe(work, f"{mode}-two", 2, **fields)
    wall = torchrun(two)
    got, want = run_losses(two.output_dir), run_losses(reference.output_dir)
    a, b = weights(two.output_dir / "model"), weights(reference.output_dir / "model")
    ranks = rank_hashes(two.output_dir)
    result = {
        "runs": True,
        "wall_s": round(wall, 1),
        "losses": got,
        "losses_one_process": want,
        "max_loss_difference": max(abs(x - y) for x, y in zip(got, want, strict=True)),
        "max_weight_difference": max(float((a[k] - b[k]).abs().max()) for k in b),
        "ranks_identical": ranks[0] == ranks[1],
        "export_loads": LLMCXR.from_pretrained(two.output_dir / "model", device="cpu") is not None,
    }
    if resume:
        killed = recipe(work, f"{mode}-killed", 2, **fields)
        torchrun(killed, "--stop-after", "2")
        torchrun(killed, "--resume")
        result["resume_exact"] = rank_hashes(killed.output_dir) == ranks
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "distributed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed.json")
    parser.add_argument("--skip-cold", action="store_true", help="leave out the cold ZeRO-3 start")
    args = parser.parse_args()
    from llmcxr import atomic
    from llmcxr.errors import BadInputError
    from llmcxr.training import LoraSpec, ModelSpec

    shutil.rmtree(args.work, ignore_errors=True)
    write_world(args.work / "world", n=16)
    lora = LoraSpec(enabled=True, r=4, alpha=8, dropout=0.0)
    base = ModelSpec(base=plain_base(args.work / "base"))
    modes = {
        "ddp": ({}, True),
        "lora_ddp": ({"lora": lora}, True),
        "zero3": ({"deepspeed": ZERO3}, True),
        "zero3_pretrained_base": ({"deepspeed": ZERO3, "model": base}, False),
        "lora_zero3": ({"deepspeed": ZERO3, "lora": lora}, False),
        "fsdp2": ({"fsdp": True, "fsdp_config": FSDP}, True),
    }
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "setup": f"tiny GPT-NeoX, {STEPS} steps, global batch 4 (2 processes x 2 vs 1 x 4), fp32, gloo",
        "modes": {},
    }
    for mode, (fields, resume) in modes.items():
        try:
            result["modes"][mode] = measure(args.work, mode, fields, resume)
        except BadInputError as err:  # refused when the recipe loads
            result["modes"][mode] = {"runs": False, "refused": str(err)}
        print(mode, json.dumps(result["modes"][mode]), flush=True)
        atomic.write_json(args.out, result)
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as extensions:  # no DeepSpeed op compiled yet
            run = recipe(args.work, "zero3-cold", 2, deepspeed=ZERO3)
            seconds = torchrun(run, "--keep-shm", env={"TORCH_EXTENSIONS_DIR": extensions})
            built = sorted(p.name for p in Path(extensions).glob("*/*") if p.is_dir())
        result["zero3_cold_start"] = {
            "wall_s": round(seconds, 1),
            "ops_built": built,
            "warm_wall_s": result["modes"]["zero3"]["wall_s"],
        }
        atomic.write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
