"""How good is the image tokenizer? Trains the tiny and the 16x16-token VQ-GAN on the real CXRs and
scores them on held-out patients against the bicubic baseline; times the paper configuration on CPU.

Writes benchmarks/results/vq_tokenizer.json. Stages:
1. tiny (recipes/vq/tiny.yaml: 64 px, 8x8 = 64 tokens, 512 codes) trained on ../shared/data/cxr-real,
   split by the `patient` column (15% of patients held out, seed 0), within a wall budget (<= 30 min);
   held-out PSNR/SSIM (llmcxr.metrics.reconstruction), codebook usage and perplexity, beside bicubic
   down-sampling of each held-out image to the 8x8 token grid and back up (as many numbers as tokens).
   The trained model is saved to checkpoints/vq-tiny/ (vq_config.json + vqgan.safetensors).
2. grid16 (recipes/vq/grid16.yaml: 128 px, 16x16 = 256 tokens, 1024 codes), same measurements, its
   model in runs/vq-grid16-bench/final (not committed).
3. paper (VQConfig.paper(): 256 px, f16, 16x16, 1024 codes): a few training steps on CPU in a
   subprocess, seconds per step and peak RSS.

Run from the repository root (un-niced: it is the long job):

    python benchmarks/vq_tokenizer.py                       # all stages, ~1 h on a shared 2-core CPU
    python benchmarks/vq_tokenizer.py --stages tiny         # one stage; other stages' results are kept

Rebuild the shipped tiny checkpoint deterministically (same steps, no wall budget; the recipe fixes
the seed, the split, the batch order and the augmentation; 2 CPU threads):

    llmcxr vq train --config recipes/vq/tiny.yaml --restart --time-budget-s 0 --output-dir runs/vq-tiny
    # -> runs/vq-tiny/final/ == checkpoints/vq-tiny/ (up to float non-associativity across machines)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from llmcxr import atomic
from llmcxr.config import load_config
from llmcxr.metrics.reconstruction import bicubic_baseline, reconstruction_scores
from llmcxr.vq import VQGAN, VQConfig, VQTrainConfig, load_vqgan, save_vqgan
from llmcxr.vq.discriminator import PatchDiscriminator
from llmcxr.vq.train import (
    generator_step,
    hinge_discriminator_loss,
    load_images,
    split_by_patient,
    train_vqgan,
)

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "vq_tokenizer.json"
TINY_CHECKPOINT = ROOT / "checkpoints" / "vq-tiny"


def bicubic_scores(cfg: VQTrainConfig) -> dict[str, float]:
    """The baseline on exactly the held-out images the tokenizer is scored on."""
    _, holdout = split_by_patient(Path(cfg.data), cfg.patient_column, cfg.holdout_fraction, cfg.seed)
    images = load_images(holdout, cfg.model.resolution)
    return reconstruction_scores(images, bicubic_baseline(images, cfg.model.grid_size))


def train_stage(recipe: Path, output_dir: Path, budget_s: float, note: str = "") -> dict[str, Any]:
    cfg = load_config(VQTrainConfig, ROOT / recipe)
    cfg = dataclasses.replace(cfg, output_dir=output_dir, time_budget_s=budget_s)
    began = time.monotonic()
    final = train_vqgan(cfg, resume=True, progress=sys.stdout.isatty())
    wall = time.monotonic() - began
    baseline = bicubic_scores(cfg)
    held = final["heldout"]
    return {
        "recipe": str(recipe),
        "resolution": cfg.model.resolution,
        "grid_size": cfg.model.grid_size,
        "num_tokens": cfg.model.num_tokens,
        "codebook_size": cfg.model.codebook_size,
        "parameters": sum(p.numel() for p in VQGAN(cfg.model).parameters()),
        "steps_planned": cfg.steps,
        "steps_done": final["step"],
        "budget_s": budget_s,
        "budget_hit": final["step"] < cfg.steps,
        "train_wall_s": round(wall, 1),
        "train_images": final["train_images"],
        "heldout_images": final["heldout_images"],
        "heldout": held,
        "baseline_bicubic": baseline,
        "beats_bicubic_psnr": held["psnr"] > baseline["psnr"],
        "beats_bicubic_ssim": held["ssim"] > baseline["ssim"],
        "usage_target_met": held["usage"] >= 0.9,
        "note": note,
    }


def paper_steps(steps: int, batch_size: int) -> dict[str, Any]:
    """A few full training steps (G with perceptual + GAN + adaptive weight, and D) of the paper config."""
    torch.set_num_threads(1)  # see VQTrainConfig.num_threads: 1 thread is faster on this shared CPU
    torch.manual_seed(0)
    cfg = VQTrainConfig(
        model=VQConfig.paper(), batch_size=batch_size, discriminator_start=0, clinical_weight=0.1
    )
    model = VQGAN(cfg.model)
    disc = PatchDiscriminator(1, cfg.discriminator_channels, cfg.discriminator_layers)
    from llmcxr.vq.losses import RandomFeaturePerceptual

    perceptual = RandomFeaturePerceptual()
    opt_g = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    images = torch.rand(batch_size, 1, 256, 256) * 2 - 1
    times = []
    for step in range(steps):
        began = time.monotonic()
        loss, recon, _ = generator_step(cfg, model, disc, perceptual, images, step, torch.device("cpu"))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        d_loss = hinge_discriminator_loss(disc(images), disc(recon.detach()))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        times.append(time.monotonic() - began)
    return {
        "config": "VQConfig.paper() (256 px, f16, 16x16 tokens, 1024 codes)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": batch_size,
        "steps": steps,
        "precision": "fp32 (CPU)",
        "seconds_per_step": [round(t, 2) for t in times],
        "seconds_per_step_after_first": round(sum(times[1:]) / max(1, len(times) - 1), 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "codes_shape": list(model.encode(images[:1]).shape),
        "loss_finite": bool(torch.isfinite(loss).item()),
    }


def write(results: dict[str, Any]) -> None:
    atomic.write_json(RESULT, results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", default="tiny,grid16,paper", help="comma-separated: tiny, grid16, paper")
    parser.add_argument(
        "--tiny-budget-s", type=float, default=1800.0, help="wall budget of the tiny training"
    )
    parser.add_argument(
        "--grid16-budget-s", type=float, default=1800.0, help="wall budget of grid16 training"
    )
    parser.add_argument("--grid16-note", default="", help="why the grid16 budget was shortened, if it was")
    parser.add_argument("--paper-steps", type=int, default=3)
    parser.add_argument("--paper-batch-size", type=int, default=2)
    parser.add_argument("--paper-only", action="store_true", help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if args.paper_only:
        print(json.dumps(paper_steps(args.paper_steps, args.paper_batch_size)))
        return

    results: dict[str, Any] = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    results["machine"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": 1,
        "note": "shared 2-core CPU, other jobs running beside; times are wall-clock",
    }
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:  # in the order given
        if stage == "tiny":
            run = ROOT / "runs" / "vq-tiny-bench"
            shutil.rmtree(run, ignore_errors=True)  # a benchmark starts from scratch
            results["tiny"] = train_stage(Path("recipes/vq/tiny.yaml"), run, args.tiny_budget_s)
            save_vqgan(load_vqgan(run / "final"), TINY_CHECKPOINT)
            results["tiny"]["checkpoint"] = "checkpoints/vq-tiny"
            size = (TINY_CHECKPOINT / "vqgan.safetensors").stat().st_size
            results["tiny"]["checkpoint_mb"] = round(size / 2**20, 2)
        elif stage == "grid16":
            run = ROOT / "runs" / "vq-grid16-bench"
            shutil.rmtree(run, ignore_errors=True)
            results["grid16"] = train_stage(
                Path("recipes/vq/grid16.yaml"), run, args.grid16_budget_s, args.grid16_note
            )
            results["grid16"]["checkpoint"] = str(run.relative_to(ROOT) / "final")
        elif stage == "paper":
            command = [
                sys.executable,
                __file__,
                "--paper-only",
                "--paper-steps",
                str(args.paper_steps),
                "--paper-batch-size",
                str(args.paper_batch_size),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results["paper_cpu"] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            parser.error(f"unknown stage {stage!r}")
        results[stage if stage != "paper" else "paper_cpu"]["finished_utc"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
        )
        write(results)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
