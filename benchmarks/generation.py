"""Generation throughput: constrained, batched decoding against LLM-CXR's sample-and-retry baseline.

Measured side by side in one run, same model, same CPU threads, top-p 0.92 sampling:
- ``ours``: ``LLMCXR.generate_image`` (report -> CXR, images/s incl. the VQ-GAN decode) and
  ``LLMCXR.report`` (CXR -> report, reports/s incl. reading + VQ-encoding the image) at batch 1 and 16;
- ``baseline``: what the original LLM-CXR code does: ``model.generate`` at batch 1 with no
  constraint, and for images a retry until the output holds exactly ``tokens_per_image`` image
  tokens (capped at ``--max-retries``; a report that never gets one is a failure).
The model is the trained tiny model if one exists under runs/ or checkpoints/ (a folder with
image_tokens.json), else a from-scratch model of the tiny-cpu recipe's shape with random weights
(``model.kind`` in the JSON says which). Images and reports come from the synthetic world at
runs/tiny-cpu/world when present, else generated noise images and fixed reports.

    nice -n 10 python benchmarks/generation.py        # writes benchmarks/results/generation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from llmcxr import atomic
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.model import (
    ScratchConfig,
    add_cxr_tokens,
    build_scratch_model,
    save_llmcxr_folder,
    train_bpe_tokenizer,
)
from llmcxr.prompt import CONTROL_TOKENS, IMAGE_GENERATION, INTRO_BLURB, REPORT_GENERATION, PromptParts
from llmcxr.vq import VQGAN, VQConfig, save_vqgan

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "generation.json"
WORLD = ROOT / "runs" / "tiny-cpu" / "world"
RECIPE_MODEL = ROOT / "runs" / "tiny-cpu" / "run" / "model"  # recipes/tiny-cpu.yaml output_dir + /model
FALLBACK_REPORTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Moderate cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "Right lower lobe consolidation, concerning for pneumonia. No pneumothorax.",
    "Mild pulmonary edema. Stable cardiomediastinal silhouette.",
]
# recipes/tiny-cpu.yaml: the model shape the CPU recipe trains.
TINY_CPU = ScratchConfig(
    bpe_vocab_size=2048,
    hidden_size=192,
    num_layers=4,
    num_heads=4,
    intermediate_size=768,
    max_position_embeddings=512,
)


def find_trained_model() -> Path | None:
    """The tiny-cpu recipe's model (runs/tiny-cpu/run/model) if trained, else the newest folder under
    runs/ or checkpoints/ that holds a model with image tokens and a VQ-GAN."""
    if (RECIPE_MODEL / "image_tokens.json").is_file():
        return RECIPE_MODEL
    found = [p.parent for base in ("runs", "checkpoints") for p in (ROOT / base).glob("**/image_tokens.json")]
    found = [p for p in found if (p / "config.json").is_file() and (p / "vq").is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def build_random_model(out: Path, texts: list[str]) -> Path:
    """A tiny-cpu-shaped GPT-NeoX + BPE tokenizer + image tokens + VQConfig.tiny() VQ-GAN, random weights."""
    vq_cfg = VQConfig.tiny()
    tokenizer = train_bpe_tokenizer(
        texts + [INTRO_BLURB, *REPORT_GENERATION, *IMAGE_GENERATION], TINY_CPU.bpe_vocab_size
    )
    image_tokens = add_cxr_tokens(tokenizer, vq_cfg.codebook_size, vq_cfg.num_tokens, CONTROL_TOKENS)
    torch.manual_seed(0)
    save_vqgan(VQGAN(vq_cfg).eval(), out / "vq")
    model = build_scratch_model(TINY_CPU, len(tokenizer))
    return save_llmcxr_folder(
        model, tokenizer, image_tokens, out / "model", out / "vq", {"random_weights": True}
    )


def inputs(count: int, tmp: Path) -> tuple[list[str], list[Path], str]:
    """``count`` reports and image files: the synthetic world's, else fixed reports and noise images."""
    manifest = WORLD / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()[:count]]
        reports = [f"{r['findings']} {r['impression']}".strip() for r in rows]
        return reports, [WORLD / r["image_path"] for r in rows], "runs/tiny-cpu/world (synthetic)"
    images = []
    for i in range(count):
        images.append(tmp / f"noise{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (128, 128), dtype=np.uint8)).save(
            images[-1]
        )
    return (FALLBACK_REPORTS * count)[:count], images, "generated noise images + fixed reports"


def timed(fn) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def ours_images(llm: LLMCXR, reports: list[str], batch: int, guidance_scale: float = 1.0) -> dict[str, Any]:
    results, seconds = timed(lambda: llm.generate_image(reports, guidance_scale, seed=0, batch_size=batch))
    valid = sum(r.image_tokens.size == llm.image_tokens.tokens_per_image for r in results)
    return {
        "batch_size": batch,
        "guidance_scale": guidance_scale,
        "images": len(results),
        "valid": valid,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(results) / seconds, 3),
    }


def ours_reports(llm: LLMCXR, images: list[Path], batch: int, max_new_tokens: int) -> dict[str, Any]:
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    results, seconds = timed(lambda: llm.report(images, sampling=sampling, batch_size=batch))
    batches = {id(r.timings): r.timings for r in results}.values()  # one Timings per batch
    tokens = sum(t.new_tokens for t in batches)  # generated ids, stop tokens included
    return {
        "batch_size": batch,
        "reports": len(results),
        "stopped_at_end": sum(r.stopped for r in results),
        "seconds": round(seconds, 3),
        "reports_per_s": round(len(results) / seconds, 3),
        "mean_new_tokens": round(tokens / len(results), 1),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def _generate(llm: LLMCXR, prompt: list[int], max_new_tokens: int) -> torch.Tensor:
    """The original code's call: ``model.generate`` at batch 1, top-p 0.92, top-k off, no constraint."""
    ids = torch.tensor([prompt], device=llm.device)
    out = llm.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        top_p=0.92,
        top_k=0,
        max_new_tokens=max_new_tokens,
        eos_token_id=[llm.special.end, llm.special.eos],
        pad_token_id=llm.special.pad,
    )
    return out[0, ids.shape[1] :]


def baseline_images(llm: LLMCXR, reports: list[str], max_retries: int, slack: int) -> dict[str, Any]:
    """Sample, count the image tokens, retry until exactly tokens_per_image (LLM-CXR's generate loop)."""
    n = llm.image_tokens.tokens_per_image
    attempts, valid = 0, 0
    start = time.perf_counter()
    for i, report in enumerate(reports):
        prompt = llm.prompt_ids(PromptParts(IMAGE_GENERATION[0], report))
        for retry in range(max_retries + 1):
            torch.manual_seed(1000 * i + retry)
            attempts += 1
            out = _generate(llm, prompt, n + slack)
            if int(llm.image_tokens.is_image_id(out).sum()) == n:
                image_ids = out[llm.image_tokens.is_image_id(out)]
                llm.render(
                    llm.image_tokens.ids_to_codes(image_ids)
                    .reshape(1, llm.vq.cfg.grid_size, -1)
                    .cpu()
                    .numpy()
                )
                valid += 1
                break
    seconds = time.perf_counter() - start
    return {
        "batch_size": 1,
        "reports": len(reports),
        "valid_images": valid,
        "failures": len(reports) - valid,
        "attempts": attempts,
        "retries": attempts - len(reports),
        "retry_rate": round((attempts - valid) / attempts, 3),
        "max_retries": max_retries,
        "max_new_tokens": n + slack,
        "seconds": round(seconds, 3),
        "images_per_s": round(valid / seconds, 4),
        "attempts_per_s": round(attempts / seconds, 3),
    }


def baseline_reports(llm: LLMCXR, images: list[Path], max_new_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    stopped, tokens = 0, 0
    for i, image in enumerate(images):
        codes = llm.encode_images([image])[0]
        torch.manual_seed(i)
        out = _generate(
            llm, llm.prompt_ids(PromptParts(REPORT_GENERATION[0], "<image>"), codes), max_new_tokens
        )
        stopped += int(out[-1]) in (llm.special.end, llm.special.eos)
        tokens += len(out)
    seconds = time.perf_counter() - start
    return {
        "batch_size": 1,
        "reports": len(images),
        "stopped_at_end": stopped,
        "seconds": round(seconds, 3),
        "reports_per_s": round(len(images) / seconds, 3),
        "mean_new_tokens": round(tokens / len(images), 1),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="model folder (default: trained tiny, else random)"
    )
    parser.add_argument("--batch1", type=int, default=8, help="inputs timed at batch 1")
    parser.add_argument("--batch16", type=int, default=32, help="inputs timed at batch 16")
    parser.add_argument("--baseline-reports", type=int, default=8)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument(
        "--slack", type=int, default=8, help="baseline max_new_tokens = tokens_per_image + slack"
    )
    parser.add_argument("--report-tokens", type=int, default=64, help="max_new_tokens of a report")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see docs/generation.md)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reports, images, source = inputs(max(args.batch1, args.batch16, args.baseline_reports), tmp)
        folder = args.model or find_trained_model()
        kind = (
            "given"
            if args.model
            else ("trained" if folder else "random weights (no trained tiny model found)")
        )
        folder = folder or build_random_model(tmp / "random", reports)
        llm = LLMCXR.from_pretrained(folder, device="cpu")
        llm.generate_image(reports[:2], batch_size=2)  # warm-up
        result = {
            "model": {
                "folder": str(folder) if kind != "random weights (no trained tiny model found)" else None,
                "kind": kind,
                "parameters": sum(p.numel() for p in llm.model.parameters()),
                "dtype": str(llm.model.dtype),
                "tokens_per_image": llm.image_tokens.tokens_per_image,
                "codebook_size": llm.image_tokens.codebook_size,
            },
            "inputs": source,
            "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads},
            "sampling": "top-p 0.92, top-k off, temperature 1 (LLM-CXR)",
            "report_to_cxr": {
                "ours_batch1": ours_images(llm, reports[: args.batch1], 1),
                "ours_batch16": ours_images(llm, reports[: args.batch16], 16),
                "ours_batch16_cfg3": ours_images(llm, reports[: args.batch16], 16, 3.0),
                "baseline_batch1_retry": baseline_images(
                    llm, reports[: args.baseline_reports], args.max_retries, args.slack
                ),
            },
            "cxr_to_report": {
                "ours_batch1": ours_reports(llm, images[: args.batch1], 1, args.report_tokens),
                "ours_batch16": ours_reports(llm, images[: args.batch16], 16, args.report_tokens),
                "baseline_batch1": baseline_reports(llm, images[: args.baseline_reports], args.report_tokens),
            },
        }
    img, rep = result["report_to_cxr"], result["cxr_to_report"]
    base = img["baseline_batch1_retry"]
    result["ratios"] = {
        "images_per_s_batch16_vs_baseline": round(
            img["ours_batch16"]["images_per_s"] / base["images_per_s"], 2
        )
        if base["images_per_s"]
        else None,
        "images_per_s_batch16_vs_baseline_attempts_lower_bound": round(
            img["ours_batch16"]["images_per_s"] / base["attempts_per_s"], 2
        ),
        "images_per_s_batch1_vs_baseline": round(img["ours_batch1"]["images_per_s"] / base["images_per_s"], 2)
        if base["images_per_s"]
        else None,
        "report_tokens_per_s_batch16_vs_baseline": round(
            rep["ours_batch16"]["tokens_per_s"] / rep["baseline_batch1"]["tokens_per_s"], 2
        ),
        "reports_per_s_batch16_vs_baseline": round(
            rep["ours_batch16"]["reports_per_s"] / rep["baseline_batch1"]["reports_per_s"], 2
        ),
        "note": "None = the baseline made no valid image within its retry cap (speed-up unbounded); "
        "lower_bound divides by the baseline's attempts/s: the speed-up if every baseline attempt were valid "
        "and cost what a failed one did",
    }
    atomic.write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
