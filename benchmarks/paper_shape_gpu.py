"""The paper's shape on one GPU at real batch sizes: full fine-tuning under DeepSpeed ZeRO-3, LoRA, and
decoding, each measured against the card's limits. Finishes in about 5 minutes on an H100; results
(JSON + logs) go to $OUT (or --out).

    OUT=/path/to/results python benchmarks/paper_shape_gpu.py            # on a GPU machine
    python benchmarks/paper_shape_gpu.py --tiny --out /tmp/gpu-check      # the same path at a tiny shape, on CPU

Needs `pip install -e ".[distributed]"` (DeepSpeed). Weights are random (nothing is downloaded): the
numbers are costs, not quality. Steps, each in its own process (GPU memory is measured per run):

1. base + data (benchmarks/paper_shape.py): a dolly-v2-3b-shaped GPT-NeoX (2.78B, random bf16), a
   synthetic world of 256 px CXRs, the paper VQ-GAN (random) and its token store;
2. full: recipes/paper-stage1.yaml, full fine-tuning, ZeRO-3 (``--offload``: optimizer and weights on the
   host, for cards under ~60 GB), packed rows of 2048 tokens, bf16, gradient checkpointing; no
   checkpoints (a ZeRO-3 checkpoint of 2.78B with its optimizer is ~44 GB), the bf16 export at the end;
3. lora: the same recipe with LoRA r 16 (one process, no DeepSpeed);
4. decode: the export in bf16, 256 image codes at batch 1 and 16.

Reported: real tokens/s, MFU (6 x parameters x tokens/s over the card's dense bf16 peak; the recompute
of gradient checkpointing is not counted as useful work), peak GPU memory, and decode tokens/s against
the memory-bandwidth bound (each decoding step reads every weight once: batch x bandwidth / weight bytes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

# Dense bf16 tensor-core peak and HBM bandwidth per card (NVIDIA data sheets, SXM parts).
CARDS = {
    "H100": {"bf16_tflops": 989.0, "hbm_tb_s": 3.35},
    "H200": {"bf16_tflops": 989.0, "hbm_tb_s": 4.8},
    "A100": {"bf16_tflops": 312.0, "hbm_tb_s": 2.0},
}


def card() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"name": "cpu", "bf16_tflops": None, "hbm_tb_s": None}
    name = torch.cuda.get_device_name()
    spec = next((v for k, v in CARDS.items() if k in name), {"bf16_tflops": None, "hbm_tb_s": None})
    return {
        "name": name,
        **spec,
        "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1),
    }


class NoCheckpoints:
    """A TrainerCallback (built lazily) that keeps the Trainer from saving checkpoints."""

    @staticmethod
    def make():
        from transformers import TrainerCallback

        class _NoCheckpoints(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                control.should_save = False
                return control

        return _NoCheckpoints()


def step_clock():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            _sync()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            self.seconds.append(time.perf_counter() - self.start)

    return StepClock()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def recipe_for(work: Path, mode: str, args: argparse.Namespace):
    from paper_shape import stage1_lora_recipe

    from llmcxr.training import LoraSpec

    recipe = stage1_lora_recipe(work, args.steps)  # paper-stage1.yaml on the built base and data
    zero = ROOT / "recipes" / "distributed" / ("zero3-offload.json" if args.offload else "zero3.json")
    batch = args.lora_batch if mode == "lora" else args.full_batch
    return dataclasses.replace(
        recipe,
        output_dir=work / f"run-{mode}",
        lora=LoraSpec(enabled=True, r=16, alpha=32, dropout=0.05) if mode == "lora" else LoraSpec(),
        deepspeed=None if mode == "lora" else zero,
        packing=True,  # real batches: rows of 2048 tokens, no compute on padding
        mixture_draws=args.draws,
        optim=dataclasses.replace(
            recipe.optim,
            per_device_batch_size=batch,
            gradient_accumulation_steps=args.accumulation,
            learning_rate=2e-4 if mode == "lora" else 5e-6,
        ),
        save_steps=10**6,
    )


def train_one(work: Path, mode: str, args: argparse.Namespace) -> dict:
    """One training run in this process (started by torchrun for ZeRO-3)."""
    import torch

    from llmcxr.training import train_recipe

    recipe = recipe_for(work, mode, args)
    clock = step_clock()
    start = time.perf_counter()
    train_recipe(recipe, callbacks=[clock, NoCheckpoints.make()], print_logs=False)
    wall = time.perf_counter() - start
    log = json.loads((recipe.output_dir / "train_log.json").read_text())
    lines = [e for e in log["log_history"] if "loss" in e]
    warm = clock.seconds[args.warmup :] or clock.seconds
    tokens = [e["real_tokens_per_second"] for e in lines if "real_tokens_per_second" in e]
    tokens_per_s = sum(tokens[args.warmup :] or tokens) / max(len(tokens[args.warmup :] or tokens), 1)
    params = sum(p.numel() for p in _base_parameters(work))
    peak = card()
    result = {
        "mode": mode,
        "steps": len(clock.seconds),
        "rows_per_step": recipe.optim.per_device_batch_size * recipe.optim.gradient_accumulation_steps,
        "max_length": recipe.max_length,
        "s_per_step_after_warmup": round(sum(warm) / len(warm), 3),
        "real_tokens_per_second": round(tokens_per_s, 1),
        "parameters": params,
        "losses": [round(e["loss"], 4) for e in lines],
        "wall_s_with_load_and_export": round(wall, 1),
    }
    if peak["bf16_tflops"]:
        result["mfu"] = round(6 * params * tokens_per_s / (peak["bf16_tflops"] * 1e12), 4)
    if torch.cuda.is_available():
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        result["peak_gpu_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 2)
    return result


def _base_parameters(work: Path):
    """The base's parameter tensors, read from its safetensors header (no weights loaded)."""
    import torch
    from safetensors import safe_open

    for file in sorted((work / "base").glob("*.safetensors")):
        with safe_open(file, "pt") as weights:
            for key in weights.keys():
                yield torch.empty(weights.get_slice(key).get_shape(), device="meta")


def decode(work: Path, args: argparse.Namespace) -> dict:
    import torch

    from llmcxr.generation import LLMCXR

    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = next(f for f in (work / "run-lora" / "model", work / "run-full" / "model") if f.is_dir())
    llm = LLMCXR.from_pretrained(folder, device=device, dtype=torch.bfloat16)
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    peak = card()
    result = {"model": folder.parent.name, "weight_gb": round(weight_bytes / 1e9, 2), "batches": {}}
    report = "Moderate cardiomegaly. Small left pleural effusion with adjacent atelectasis."
    for batch in (1, 16):
        llm.generate_image([report] * batch, n=1, batch_size=batch, seed=0)  # warm-up (kernels, allocator)
        _sync()
        start = time.perf_counter()
        images = llm.generate_image([report] * batch, n=1, batch_size=batch, seed=1)
        _sync()
        seconds = time.perf_counter() - start
        codes = sum(int(r.image_tokens.size) for r in images)
        entry = {"seconds": round(seconds, 2), "codes": codes, "tokens_per_second": round(codes / seconds, 1)}
        if peak["hbm_tb_s"]:
            bound = batch * peak["hbm_tb_s"] * 1e12 / weight_bytes
            entry["bandwidth_bound_tokens_per_second"] = round(bound, 1)
            entry["fraction_of_bound"] = round(codes / seconds / bound, 3)
        result["batches"][str(batch)] = entry
    return result


def run_child(mode: str, args: argparse.Namespace, launcher: list[str]) -> dict:
    out = args.work / f"{mode}.json"
    out.unlink(missing_ok=True)
    cmd = [*launcher, __file__, "--child", mode, *args.passthrough]
    print("$", " ".join(cmd), flush=True)
    with open(args.out / f"{mode}.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=args.stage_timeout)
    if done.returncode != 0 or not out.is_file():
        return {"mode": mode, "failed": f"exit {done.returncode}; see {mode}.log"}
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu-out")))
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu-paper-shape")
    parser.add_argument("--tiny", action="store_true", help="a tiny LM and VQ-GAN (CPU check of the script)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the averages")
    parser.add_argument("--full-batch", type=int, default=4, help="rows of 2048 tokens per micro-batch")
    parser.add_argument("--lora-batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--draws", type=int, default=4, help="mixture draws: enough packed rows for --steps")
    parser.add_argument(
        "--offload", action="store_true", help="ZeRO-3 with optimizer and weights on the host"
    )
    parser.add_argument("--stage-timeout", type=int, default=240)
    parser.add_argument("--child", choices=["full", "lora", "decode"], default=None)
    args = parser.parse_args()
    args.passthrough = [a for a in sys.argv[1:] if a not in ("--child", "full", "lora", "decode")]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        result = train_one(args.work, args.child, args) if args.child != "decode" else decode(args.work, args)
        if int(os.environ.get("RANK", "0")) == 0:
            (args.work / f"{args.child}.json").write_text(json.dumps(result, indent=1))
        return

    from paper_shape import build_base, build_data

    from llmcxr import atomic

    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"card": card(), "shape": "tiny" if args.tiny else "dolly-v2-3b", "started": time.time()}
    start = time.perf_counter()
    if not (args.work / "base" / "config.json").is_file():
        result["base"] = build_base(args.work, args.tiny)
    if not (args.work / "tokens").is_dir():
        result["data"] = build_data(args.work, args.tiny, args.images)
    result["setup_s"] = round(time.perf_counter() - start, 1)
    atomic.write_json(args.out / "paper_shape_gpu.json", result)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1"]
    for mode, launcher in (("full", torchrun), ("lora", [sys.executable]), ("decode", [sys.executable])):
        result[mode] = run_child(mode, args, launcher)
        result["elapsed_s"] = round(time.perf_counter() - start, 1)
        atomic.write_json(args.out / "paper_shape_gpu.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
