"""The paper's shape end to end on any machine: a dolly-v2-3b-shaped LM, the paper's VQ-GAN, LoRA steps of
the stage-1 recipe, one report and one image.

    python benchmarks/paper_shape.py                 # -> benchmarks/results/paper_shape.json (~12 GB peak)
    python benchmarks/paper_shape.py --tiny --out /tmp/x.json   # the same path at a tiny shape (seconds)

Nothing is downloaded, so the weights are random: this measures that the paper's path works and
what it costs (s/step, tokens/s, peak RSS, file sizes), not what it learns. Stages, each in its own
process so each peak RSS is its own:

1. base: a byte-level BPE trained on the IU X-ray reports and the built-in instructions, its
   vocabulary filled with unused entries to GPT-NeoX-20B's 50,277; a GPT-NeoX of dolly-v2-3b's shape
   (2.78B: hidden 2560, 32 layers, 32 heads, rotary 0.25, 2048 positions, 50,280 rows, untied head)
   with random bf16 weights, saved as a local base folder;
2. data: a synthetic world of 256 px CXRs, the paper VQ-GAN (256 px, 16x16 codes, 1024 entries) with
   random weights, its token store;
3. train: recipes/paper-stage1.yaml with LoRA (r 16) on one process for ``--steps`` steps (batch 2,
   max length 2048, no packing, gradient checkpointing, bf16), then the merged export;
4. infer: the export loaded in bf16; one report (64 new tokens) and one image (exactly 256 codes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

GPT_NEOX_20B_TOKENS = 50_277  # len() of dolly-v2's tokenizer before its 3 control tokens
DOLLY_ROWS = 50_280  # dolly-v2-3b's embedding rows
DOLLY = {"hidden_size": 2560, "num_layers": 32, "num_heads": 32, "intermediate_size": 10240}
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 256}


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB -> GiB


def size_gb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**30, 3)


# ---- stage 1: the base LM ------------------------------------------------------------------------------


def corpus() -> list[str]:
    from llmcxr.datasets.instructions import read_instructions
    from llmcxr.datasets.iu_xray import read_iu_reports

    texts = [f"{x.instruction}\n{x.context}\n{x.response}" for x in read_instructions()]
    iu = ROOT.parent / "shared" / "data" / "iu-xray" / "NLMCXR_reports.tgz"
    if iu.is_file():  # the real reports where the shared data is; the built-in instructions anyway
        texts += [f"{r.findings}\n{r.impression}" for r in read_iu_reports(iu)]
    return texts


def fill_vocabulary(tokenizer, size: int):
    """``tokenizer`` with unused vocabulary entries up to ``size`` (never produced by its merges): the
    vocabulary size of a real 50k BPE, which sets the embedding matrices' shape."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for k in range(size - len(tokenizer)):
        vocab[f"<unused_{k}>"] = len(vocab)
    backend = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token,
        bos_token=tokenizer.bos_token,
    )


def build_base(work: Path, tiny: bool) -> dict:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from llmcxr.model.scratch import train_bpe_tokenizer

    start = time.perf_counter()
    size = 2048 if tiny else GPT_NEOX_20B_TOKENS
    tokenizer = fill_vocabulary(train_bpe_tokenizer(corpus(), size), size)
    shape = TINY if tiny else DOLLY
    config = GPTNeoXConfig(
        vocab_size=size + 3 if tiny else DOLLY_ROWS,
        hidden_size=shape["hidden_size"],
        num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"],
        intermediate_size=shape["intermediate_size"],
        max_position_embeddings=2048,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM._from_config(config, dtype=torch.bfloat16)  # built in bf16: 5.6 GB, not 11
    model.save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer_tokens": len(tokenizer),
        "embedding_rows": config.vocab_size,
        "base_gb": size_gb(work / "base"),
        "wall_s": round(time.perf_counter() - start, 1),
    }


# ---- stage 2: images, the paper VQ-GAN, the token store ------------------------------------------------


def build_data(work: Path, tiny: bool, images: int) -> dict:
    import torch

    from llmcxr.synth.world import build_world
    from llmcxr.vq import VQGAN, VQConfig, save_vqgan
    from llmcxr.vq.encode import encode_images

    start = time.perf_counter()
    vq_config = VQConfig.tiny() if tiny else VQConfig.paper()
    build_world(work / "world", n=images, size=vq_config.resolution, seed=0)
    torch.manual_seed(0)
    save_vqgan(VQGAN(vq_config).eval(), work / "vq")
    encode_images(
        work / "vq", work / "world" / "manifest.jsonl", work / "tokens", batch_size=4, progress=False
    )
    return {
        "images": images,
        "resolution": vq_config.resolution,
        "tokens_per_image": vq_config.num_tokens,
        "codebook": vq_config.codebook_size,
        "wall_s": round(time.perf_counter() - start, 1),
    }


# ---- stage 3: LoRA steps of the stage-1 recipe --------------------------------------------------------


def stage1_lora_recipe(work: Path, steps: int):
    from llmcxr.config import load_config
    from llmcxr.training import DataSource, LoraSpec, TrainRecipe

    recipe = load_config(TrainRecipe, ROOT / "recipes" / "paper-stage1.yaml")
    return dataclasses.replace(
        recipe,
        output_dir=work / "run",
        model=dataclasses.replace(recipe.model, base=work / "base"),
        vq_folder=work / "vq",
        data=[DataSource("synthetic", work / "world", work / "tokens")],
        instructions=None,  # the built-in set (Dolly-15k is not downloaded)
        lora=LoraSpec(enabled=True, r=16, alpha=32, dropout=0.05),
        deepspeed=None,  # one process; LoRA is refused under ZeRO-3
        optim=dataclasses.replace(recipe.optim, max_steps=steps, warmup_steps=0),
        logging_steps=1,
        eval_steps=10**6,
        save_steps=steps,
        eval_samples_per_task=1,
    )


def train(work: Path, steps: int) -> dict:
    from transformers import TrainerCallback

    from llmcxr.training import train_recipe

    class StepClock(TrainerCallback):  # training steps alone: no load, eval or export
        seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(round(time.perf_counter() - self.start, 1))

    recipe = stage1_lora_recipe(work, steps)
    clock = StepClock()
    start = time.perf_counter()
    folder = train_recipe(recipe, callbacks=[clock], print_logs=False)
    wall = time.perf_counter() - start
    history = json.loads((work / "run" / "train_log.json").read_text())["log_history"]
    lines = [e for e in history if "loss" in e]
    final = [e for e in history if "train_runtime" in e][-1]
    adapter = work / "run" / f"checkpoint-{steps}" / "adapter_model.safetensors"
    return {
        "steps": len(lines),
        "s_per_step": clock.seconds,
        "train_runtime_s_with_first_eval": final["train_runtime"],
        "real_tokens_per_second": [e.get("real_tokens_per_second") for e in lines],
        "losses": [e["loss"] for e in lines],
        "adapter_file_mb": round(size_gb(adapter) * 1024, 1),
        "export_gb": size_gb(folder / "model.safetensors"),
        "export_dtype": json.loads((folder / "config.json").read_text()).get("dtype"),
        "wall_s_with_load_eval_export": round(wall, 1),
    }


# ---- stage 4: one report, one image -------------------------------------------------------------------


def infer(work: Path) -> dict:
    import numpy as np
    import torch

    from llmcxr.generation import LLMCXR, SamplingConfig

    start = time.perf_counter()
    llm = LLMCXR.from_pretrained(work / "run" / "model", device="cpu", dtype=torch.bfloat16)
    loaded = time.perf_counter() - start
    image_file = sorted((work / "world").rglob("*.png"))[0]  # encoded by the (random) paper VQ-GAN
    t = time.perf_counter()
    report = llm.report(image_file, sampling=SamplingConfig(max_new_tokens=64, seed=0))
    report_s = time.perf_counter() - t
    t = time.perf_counter()
    image = llm.generate_image("Moderate cardiomegaly. Small left pleural effusion.", seed=0)
    image_s = time.perf_counter() - t
    n_codes = int(np.asarray(image.image_tokens).size)
    return {
        "load_s": round(loaded, 1),
        "report_s": round(report_s, 1),
        "report_chars": len(report.text),
        "image_s": round(image_s, 1),
        "image_codes": n_codes,
        "image_tokens_per_second": round(n_codes / image_s, 2),
    }


# ---- the driver ---------------------------------------------------------------------------------------


def run_stage(stage: str, args: argparse.Namespace) -> dict:
    """Run one stage in a fresh process; returns its result with its own peak RSS."""
    out = args.work / f"{stage}.json"
    cmd = [sys.executable, __file__, "--stage", stage, "--work", str(args.work), "--steps", str(args.steps)]
    cmd += ["--images", str(args.images)] + (["--tiny"] if args.tiny else [])
    print("$", " ".join(cmd), flush=True)
    subprocess.run(
        cmd,
        check=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "paper-shape")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument(
        "--tiny", action="store_true", help="a tiny LM and VQ-GAN: checks the path in seconds"
    )
    parser.add_argument("--stage", choices=["base", "data", "train", "infer"], default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "paper_shape.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage is not None:  # one stage, in this process
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        if args.stage == "base":
            result = build_base(args.work, args.tiny)
        elif args.stage == "data":
            result = build_data(args.work, args.tiny, args.images)
        elif args.stage == "train":
            import shutil

            shutil.rmtree(args.work / "run", ignore_errors=True)
            result = train(args.work, args.steps)
        else:
            result = infer(args.work)
        result["peak_rss_gb"] = peak_rss_gb()
        (args.work / f"{args.stage}.json").write_text(json.dumps(result, indent=1))
        return

    from llmcxr import atomic

    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": int(os.environ.get("OMP_NUM_THREADS", "2"))},
        "shape": "tiny" if args.tiny else "dolly-v2-3b",
        "note": "random weights (nothing is downloaded): costs and that the path works, not quality",
    }
    for stage in ("base", "data", "train", "infer"):
        result[stage] = run_stage(stage, args)
        atomic.write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
