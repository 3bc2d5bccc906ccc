"""Encode throughput of the image tokenizer: images/s for VQConfig.tiny() and VQConfig.paper().

Random weights (throughput does not depend on training). Two numbers per configuration:
- ``model``: ``VQGAN.encode`` alone on preprocessed (B, 1, R, R) batches, fp32 and bf16 autocast;
- ``end_to_end`` (tiny): ``llmcxr.vq.encode.encode_images`` on the image files: PNG decode, Lanczos
  resize, DataLoader, encode, safetensors shards; what ``llmcxr vq encode`` does.
Images come from ../shared/data/cxr-real when present, else generated noise images.

    python benchmarks/vq_encode_throughput.py                 # writes benchmarks/results/vq_encode_throughput.json
    python benchmarks/vq_encode_throughput.py --device cuda --paper-batch-size 64
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from llmcxr import atomic
from llmcxr.imaging import list_images, load_cxr
from llmcxr.vq import VQGAN, VQConfig
from llmcxr.vq.encode import encode_images, precision_context

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "cxr-real" / "manifest.csv"
RESULT = ROOT / "benchmarks" / "results" / "vq_encode_throughput.json"


def image_source(folder: Path, count: int) -> tuple[Path, str]:
    """A folder or manifest of ``count`` images: the shared real CXRs, else generated ones in ``folder``."""
    if SHARED_IMAGES.is_file():
        with open(SHARED_IMAGES, newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))[:count]
        manifest = folder / "subset.csv"
        with open(manifest, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "view"])
            writer.writeheader()
            for record in records:
                writer.writerow(
                    {"image": str(SHARED_IMAGES.parent / record["image"]), "view": record["view"]}
                )
        return manifest, f"../shared/data/cxr-real (first {count} of the manifest)"
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(folder / f"gen{i:04d}.png")
    return folder, f"{count} generated 256x256 noise PNGs"


def model_throughput(
    model: VQGAN, batch: torch.Tensor, precision: str, budget_s: float, device: torch.device
) -> dict[str, Any]:
    """images/s of model.encode on one repeated batch for ~budget_s (at least one call), after a
    warm-up call (one image on CPU, where the first call measured no slower; the full batch on GPU)."""
    batch = batch.to(device)
    with torch.inference_mode(), precision_context(device, precision):
        model.encode(batch if device.type == "cuda" else batch[:1])  # allocations, kernel selection
        if device.type == "cuda":
            torch.cuda.synchronize()
        calls, started = 0, time.perf_counter()
        while calls < 1 or time.perf_counter() - started < budget_s:
            model.encode(batch)
            calls += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    images = calls * batch.shape[0]
    return {
        "precision": precision,
        "batch_size": batch.shape[0],
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 here: with 2 threads on the 2 shared cores, busy neighbours slowed a tiny "
        "VQ-GAN 40x (measured 0.83 s vs 0.019 s per batch), OpenMP threads waiting on each other",
    )
    parser.add_argument("--tiny-batch-size", type=int, default=32)
    parser.add_argument("--paper-batch-size", type=int, default=4)
    parser.add_argument(
        "--tiny-precisions", default="fp32,bf16", help="bf16 autocast convs measured ~40x slower on this CPU"
    )
    parser.add_argument("--paper-precisions", default="fp32")
    parser.add_argument("--budget-s", type=float, default=30.0, help="seconds per model measurement")
    parser.add_argument("--end-to-end-images", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()

    results: dict[str, Any] = {
        "benchmark": "vq_encode_throughput",
        "command": "python benchmarks/vq_encode_throughput.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {
            "device": args.device,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "note": "shared 2-core machine: other jobs ran beside this measurement (see load averages)",
        },
        "weights": "random (throughput does not depend on training)",
        "configs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        source, source_note = image_source(Path(tmp), args.end_to_end_images)
        results["images"] = source_note
        paths = [p for _, p in list_images(source)]
        for name, cfg, batch_size, precisions in (
            ("tiny", VQConfig.tiny(), args.tiny_batch_size, args.tiny_precisions),
            ("paper", VQConfig.paper(), args.paper_batch_size, args.paper_precisions),
        ):
            torch.manual_seed(0)
            model = VQGAN(cfg).eval().to(device)
            print(f"{name}: {cfg.resolution} px, batch {batch_size}", flush=True)
            batch = torch.stack([load_cxr(p, cfg.resolution) for p in paths[:batch_size]])  # (B, 1, R, R)
            entry: dict[str, Any] = {
                "resolution": cfg.resolution,
                "tokens": cfg.num_tokens,
                "codebook_size": cfg.codebook_size,
                "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "model": [
                    model_throughput(model, batch, precision, args.budget_s, device)
                    for precision in precisions.split(",")
                ],
            }
            if name == "tiny":
                started = time.perf_counter()
                summary = encode_images(
                    None,  # the model is given below
                    source,
                    Path(tmp) / f"store-{name}",
                    batch_size=batch_size,
                    num_workers=args.num_workers,
                    device=args.device,
                    progress=False,
                    model=model,
                )
                entry["end_to_end"] = {
                    "what": "encode_images: PNG decode + Lanczos + DataLoader + encode (fp32) + shards",
                    "batch_size": batch_size,
                    "num_workers": args.num_workers,
                    "images": summary.encoded,
                    "failed": summary.failed,
                    "seconds": round(time.perf_counter() - started, 3),
                    "images_per_s": round(summary.images_per_s, 3),
                }
            results["configs"][name] = entry
            print(json.dumps({name: entry}, indent=1))
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    atomic.write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
