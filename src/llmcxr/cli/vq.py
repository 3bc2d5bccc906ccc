"""`llmcxr vq ...` commands."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


# --- encode / decode / eval (imaging engineer). Imports are local: `llmcxr --help` stays fast. ---


@app.command("encode")
def encode(
    vq_folder: Path = typer.Argument(..., help="VQ-GAN folder (vq_config.json + vqgan.safetensors)."),
    images: Path = typer.Argument(..., help="A folder of images/DICOMs, or a CSV/JSONL manifest."),
    out: Path = typer.Argument(..., help="Token store folder to create or resume."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    num_workers: int = typer.Option(2, help="DataLoader worker processes that read and resize images."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu, cuda, cuda:1."),
    precision: str = typer.Option(
        "fp32", help="fp32, or bf16 autocast (faster; codes may differ at near-ties)."
    ),
    frontal_only: bool = typer.Option(
        False, help="List images whose view (DICOM or manifest) is not frontal as failures."
    ),
    min_side: int = typer.Option(64, help="Smallest accepted image side in pixels."),
    max_pixels: int = typer.Option(64_000_000, help="Largest accepted width*height (decompression bombs)."),
    shard_size: int = typer.Option(4096, help="Images per safetensors shard."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Encode images into a token store (resumable; shards across torchrun/accelerate ranks)."""
    from rich import print as rprint

    from llmcxr.imaging import ImageLimits
    from llmcxr.vq.encode import encode_images

    summary = encode_images(
        vq_folder,
        images,
        out,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        precision=precision,
        limits=ImageLimits(min_side=min_side, max_pixels=max_pixels),
        frontal_only=frontal_only,
        shard_size=shard_size,
        progress=progress,
    )
    rprint(
        f"rank {summary.rank}/{summary.world_size}: encoded {summary.encoded}, skipped {summary.already_done} "
        f"already done, failed {summary.failed} ({summary.failures_path}); {summary.images_per_s:.1f} images/s; "
        f"store {out} holds {summary.store_size} images"
    )


@app.command("decode")
def decode(
    vq_folder: Path = typer.Argument(..., help="VQ-GAN folder of the tokenizer that made the tokens."),
    tokens: Path = typer.Argument(..., help="Token store folder."),
    out: Path = typer.Argument(..., help="Folder for <image_id>.png files."),
    ids: str = typer.Option("", help="Comma-separated image ids (default: all)."),
    limit: int = typer.Option(0, help="Decode at most this many images (0 = all)."),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    device: str = typer.Option("cpu", help="torch device."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Decode stored image tokens back into PNGs."""
    from rich import print as rprint

    from llmcxr.vq.encode import decode_tokens
    from llmcxr.vq.token_store import TokenStore

    store = TokenStore(tokens)
    chosen = [i.strip() for i in ids.split(",") if i.strip()] or store.ids()
    chosen = chosen[:limit] if limit > 0 else chosen
    written = decode_tokens(
        vq_folder, store, out, chosen, batch_size=batch_size, device=device, progress=progress
    )
    rprint(f"wrote {len(written)} PNGs to {out}")


@app.command("eval")
def evaluate(
    vq_folder: Path = typer.Argument(..., help="VQ-GAN folder."),
    images: Path = typer.Argument(..., help="A folder of images/DICOMs, or a CSV/JSONL manifest."),
    batch_size: int = typer.Option(16, help="Images per forward pass."),
    num_workers: int = typer.Option(0, help="DataLoader worker processes."),
    max_images: int = typer.Option(0, help="Evaluate at most this many images (0 = all)."),
    device: str = typer.Option("cpu", help="torch device."),
    precision: str = typer.Option("fp32", help="fp32 or bf16."),
    frontal_only: bool = typer.Option(False, help="Skip images whose stated view is not frontal."),
    min_side: int = typer.Option(64, help="Smallest accepted image side in pixels."),
    baseline: bool = typer.Option(True, help="Also score bicubic down/up-sampling through the token grid."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the scores to this JSON file."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """PSNR, SSIM, codebook usage and perplexity of the tokenizer's reconstructions."""
    from rich.console import Console
    from rich.table import Table

    from llmcxr import atomic
    from llmcxr.imaging import ImageLimits
    from llmcxr.vq.encode import evaluate_reconstruction

    scores = evaluate_reconstruction(
        vq_folder,
        images,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        precision=precision,
        limits=ImageLimits(min_side=min_side),
        frontal_only=frontal_only,
        max_images=max_images or None,
        baseline=baseline,
        progress=progress,
    )
    table = Table(title=f"{vq_folder.name} on {images.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("psnr", "ssim", "usage", "perplexity", "used_codes", "n_images", "n_failed"):
        table.add_row(key, f"{scores[key]:.4g}" if isinstance(scores[key], float) else str(scores[key]))
    if "baseline_bicubic" in scores:
        base = scores["baseline_bicubic"]
        table.add_row(f"bicubic {base['grid_size']}x{base['grid_size']} psnr", f"{base['psnr']:.4g}")
        table.add_row(f"bicubic {base['grid_size']}x{base['grid_size']} ssim", f"{base['ssim']:.4g}")
    Console().print(table)
    if json_out is not None:
        atomic.write_json(json_out, scores)


# --- train / convert (VQ engineer) ---------------------------------------------------------------


@app.command("train")
def train(
    config: Path = typer.Option(
        ..., "--config", help="A VQTrainConfig YAML/JSON, e.g. recipes/vq/tiny.yaml."
    ),
    resume: bool = typer.Option(
        True,
        "--resume/--restart",
        help="Continue from the output folder's checkpoint (default) or start over.",
    ),
    output_dir: Path | None = typer.Option(None, help="Override the recipe's output_dir."),
    steps: int = typer.Option(0, help="Override the recipe's steps (0 = keep)."),
    time_budget_s: float = typer.Option(-1.0, help="Override the wall-clock budget in seconds (-1 = keep)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train the VQ-GAN tokenizer; a killed run resumes from its last checkpoint."""
    import dataclasses

    from rich import print as rprint

    from llmcxr.config import load_config
    from llmcxr.vq.config import VQTrainConfig
    from llmcxr.vq.train import train_vqgan

    cfg = load_config(VQTrainConfig, config)
    overrides: dict = {}
    if output_dir is not None:
        overrides["output_dir"] = output_dir
    if steps > 0:
        overrides["steps"] = steps
    if time_budget_s >= 0:
        overrides["time_budget_s"] = time_budget_s
    cfg = dataclasses.replace(cfg, **overrides)
    final = train_vqgan(cfg, resume=resume, progress=progress)
    held = final["heldout"]
    rprint(
        f"step {final['step']}: held-out PSNR {held['psnr']:.2f} dB, SSIM {held['ssim']:.3f}, "
        f"codebook usage {held['usage']:.1%}, perplexity {held['perplexity']:.0f}; model in {cfg.output_dir}/final"
    )


@app.command("convert")
def convert(
    checkpoint: Path = typer.Argument(..., help="The official LLM-CXR VQ-GAN checkpoint (taming .ckpt)."),
    config: Path = typer.Argument(..., help="Its taming YAML (model.params.ddconfig, n_embed, embed_dim)."),
    out: Path = typer.Argument(..., help="Folder to write (vq_config.json + vqgan.safetensors)."),
    lpips: bool = typer.Option(
        True, help="Also extract its LPIPS weights to OUT/lpips.safetensors if present."
    ),
) -> None:
    """Convert a taming-transformers VQ-GAN checkpoint into an llmcxr one (RGB folded to grayscale)."""
    from rich import print as rprint

    from llmcxr.vq.convert import convert_taming_checkpoint

    report = convert_taming_checkpoint(checkpoint, config, out, extract_lpips=lpips)
    rprint(report)
