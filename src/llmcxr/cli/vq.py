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
    table = Table(title=f"{vq_folder} on {images}")
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
