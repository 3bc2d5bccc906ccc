"""Batch jobs of the tokenizer: images -> token store (encode), token store -> PNGs (decode), and
reconstruction quality on a set of images (evaluate).

``encode_images`` is resumable (ids already in the store are skipped), writes one line per image it
could not use to ``failures.jsonl`` instead of aborting, and shards across processes: run it under
``torchrun --nproc-per-node N`` or ``accelerate launch`` and every process reads ``RANK`` and
``WORLD_SIZE`` from the environment, takes every WORLD_SIZE-th image of the sorted listing (so the
split does not depend on what is already done), writes its own shards ``tokens-r<RANK>-*`` and its
own ``failures.rank<RANK>.jsonl``, and merges ``index.json`` from all shards when it finishes (the
last rank to finish writes the complete index; a reader rebuilds an index that misses shards). No
process group is needed. Re-running with another world size resumes from whatever is done.
'cuda' means cuda:LOCAL_RANK under a launcher:

    torchrun --nproc-per-node 8 --no-python llmcxr vq encode VQ_FOLDER IMAGES STORE --device cuda
    accelerate launch --num_processes 8 --no_python llmcxr vq encode VQ_FOLDER IMAGES STORE --device cuda

(torchrun checked on CPU with two processes; accelerate's multi-GPU launch sets the same variables.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.utils.data import DataLoader, Dataset

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.imaging import ImageEntry, ImageLimits, load_cxr, scan_images, to_pil
from llmcxr.metrics.reconstruction import ReconstructionScores, bicubic_baseline
from llmcxr.vq.model import VQGAN, load_vqgan
from llmcxr.vq.quantizer import codebook_stats
from llmcxr.vq.token_store import TokenStore, TokenStoreWriter

# --- reading images in DataLoader workers ----------------------------------------------------------


class CXRImages(Dataset):
    """Entries -> (position, image (1, R, R) in [-1, 1] or None, problem or None); never raises,
    so one bad file becomes a line in the failure list instead of killing a worker."""

    def __init__(
        self,
        entries: list[ImageEntry],
        size: int,
        limits: ImageLimits,
        frontal_only: bool,
        pipeline: str = "llmcxr",
    ) -> None:
        self.entries, self.size, self.limits, self.frontal_only = entries, size, limits, frontal_only
        self.pipeline = pipeline  # VQConfig.preprocessing of the VQ-GAN that reads them

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | None, str | None]:
        entry = self.entries[position]
        try:
            image = load_cxr(
                entry.path,
                self.size,
                self.pipeline,
                limits=self.limits,
                frontal_only=self.frontal_only,
                view=entry.view,
            )
            return position, image, None
        except BadInputError as err:
            return position, None, str(err)
        except Exception as err:  # an unexpected decoder failure must not abort a 377k-image job
            return position, None, f"{entry.path}: unexpected {type(err).__name__}: {err}"


@dataclass
class ImageBatch:
    """What the DataLoader yields: the images that loaded, and the problems of those that did not."""

    positions: list[int]
    """Positions (in the job's entry list) of the images that loaded."""
    images: torch.Tensor
    """(B, 1, R, R) in [-1, 1]; B may be 0 when every image of the batch failed."""
    failures: list[tuple[int, str]]
    """(position, problem) of the images that did not load."""

    def pin_memory(self) -> ImageBatch:
        """Called by the DataLoader's pin_memory thread (GPU jobs): page-locked images copy faster."""
        if self.images.numel():
            self.images = self.images.pin_memory()
        return self


def collate_images(items: list[tuple[int, torch.Tensor | None, str | None]]) -> ImageBatch:
    loaded = [(p, image) for p, image, _ in items if image is not None]
    failures = [(p, problem) for p, image, problem in items if image is None and problem is not None]
    images = torch.stack([image for _, image in loaded]) if loaded else torch.zeros(0)
    return ImageBatch([p for p, _ in loaded], images, failures)


def image_batches(
    entries: list[ImageEntry],
    size: int,
    batch_size: int,
    num_workers: int,
    limits: ImageLimits = ImageLimits(),
    frontal_only: bool = False,
    pin_memory: bool = False,
    pipeline: str = "llmcxr",
) -> Iterator[ImageBatch]:
    """Load and normalise ``entries`` in order, ``batch_size`` at a time, in ``num_workers`` processes,
    through the pixel ``pipeline`` the VQ-GAN was trained on (``VQConfig.preprocessing``)."""
    loader = DataLoader(
        CXRImages(entries, size, limits, frontal_only, pipeline),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
    yield from loader


# --- helpers --------------------------------------------------------------------------------------


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from the environment torchrun and accelerate set; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: str) -> torch.device:
    """'cuda' under torchrun/accelerate means this process's GPU, cuda:LOCAL_RANK; else as given."""
    local_rank = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local_rank is not None:
        return torch.device(f"cuda:{int(local_rank)}")
    return torch.device(device)


def _load_model(vq_folder: str | Path | None, device: torch.device) -> VQGAN:
    if vq_folder is None:
        raise BadInputError(None, "no VQ-GAN given", "pass a VQ-GAN folder (or a loaded model)")
    return load_vqgan(vq_folder, device=device)


def precision_context(device: torch.device, precision: str) -> Any:
    """'bf16' autocast for GPUs (codes may differ from fp32 at near-ties); on this CPU, without
    AVX512-BF16, bf16 convolutions ran ~36x slower than fp32 (benchmarks/results/vq_encode_throughput.json)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise BadInputError("precision", f"unknown precision {precision!r}", "use 'fp32' or 'bf16'")
    return nullcontext()


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _write_failures(path: Path, failures: list[dict[str, str]]) -> None:
    atomic.write_text(path, "".join(json.dumps(f) + "\n" for f in failures))


# --- encode ---------------------------------------------------------------------------------------


@dataclass
class EncodeSummary:
    """What an ``encode_images`` call did (this rank only)."""

    rank: int
    world_size: int
    assigned: int
    """Images of the listing this rank is responsible for."""
    already_done: int
    """Of those, how many were in the store before this call (skipped)."""
    encoded: int
    failed: int
    seconds: float
    images_per_s: float
    store_size: int
    """Images in the whole store after this call (all ranks' shards so far)."""
    failures_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_images(
    vq_folder: str | Path | None,
    images: str | Path,
    out_folder: str | Path,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    limits: ImageLimits = ImageLimits(),
    frontal_only: bool = False,
    shard_size: int = 4096,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    model: VQGAN | None = None,
) -> EncodeSummary:
    """Encode a folder or manifest of images into the token store ``out_folder``.

    Images already in the store are skipped (resume). Images that cannot be used (unreadable, too
    small, lateral with ``frontal_only``, ...) are listed in ``failures.jsonl`` (``failures.rank<R>.jsonl``
    when sharded) as ``{"image_id", "path", "problem"}``, and retried by the next run. ``rank`` and
    ``world_size`` default to the RANK/WORLD_SIZE environment of torchrun/accelerate. ``model``
    overrides loading from ``vq_folder`` (tests, benchmarks).
    """
    started = time.perf_counter()
    env_rank, env_world = distributed_rank()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    torch_device = rank_device(device)
    model = model if model is not None else _load_model(vq_folder, torch_device)
    cfg = model.cfg

    entries = scan_images(images)[rank::world_size]
    out = Path(out_folder)
    failures_path = out / ("failures.jsonl" if world_size == 1 else f"failures.rank{rank}.jsonl")
    failures: list[dict[str, str]] = []
    encoded = 0
    with TokenStoreWriter(out, cfg, rank=rank, shard_size=shard_size) as writer:
        done = writer.existing_ids()
        todo = [e for e in entries if e.image_id not in done]
        show = progress and rank == 0
        with _progress(show) as bar, torch.inference_mode(), precision_context(torch_device, precision):
            task = bar.add_task(f"encode r{rank}/{world_size}", total=len(todo), rate="")
            for batch in image_batches(
                todo,
                cfg.resolution,
                batch_size,
                num_workers,
                limits,
                frontal_only,
                torch_device.type == "cuda",
                cfg.preprocessing,
            ):
                if batch.positions:
                    codes = model.encode(batch.images.to(torch_device, non_blocking=True))  # (B, g, g) int64
                    writer.add_batch([todo[p].image_id for p in batch.positions], codes.cpu().numpy())
                    encoded += len(batch.positions)
                if batch.failures:
                    failures += [
                        {"image_id": todo[p].image_id, "path": str(todo[p].path), "problem": problem}
                        for p, problem in batch.failures
                    ]
                    _write_failures(failures_path, failures)
                elapsed = time.perf_counter() - started
                rate = f"{encoded / elapsed:.1f} img/s" if elapsed > 0 else ""
                bar.update(task, advance=len(batch.positions) + len(batch.failures), rate=rate)
    _write_failures(failures_path, failures)  # also empties the list a previous run left
    seconds = time.perf_counter() - started
    return EncodeSummary(
        rank=rank,
        world_size=world_size,
        assigned=len(entries),
        already_done=len(entries) - len(todo),
        encoded=encoded,
        failed=len(failures),
        seconds=seconds,
        images_per_s=encoded / seconds if seconds > 0 else 0.0,
        store_size=len(TokenStore(out)),
        failures_path=str(failures_path),
    )


# --- decode ---------------------------------------------------------------------------------------


def _check_same_tokenizer(model: VQGAN, store: TokenStore) -> None:
    made, used = store.config, model.cfg
    if (made.grid_size, made.codebook_size) != (used.grid_size, used.codebook_size):
        raise BadInputError(
            store.folder,
            f"tokens are {made.grid_size}x{made.grid_size} of {made.codebook_size} codes but the VQ-GAN "
            f"decodes {used.grid_size}x{used.grid_size} of {used.codebook_size}",
            "decode with the tokenizer that encoded them",
        )


def decode_tokens(
    vq_folder: str | Path | None,
    token_store: str | Path | TokenStore,
    out_dir: str | Path,
    image_ids: list[str] | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
    model: VQGAN | None = None,
) -> list[Path]:
    """Decode stored tokens back to 8-bit PNGs ``out_dir/<image_id>.png``; returns the paths written.

    ``image_ids`` defaults to every image in the store; an id with '/' makes subfolders.
    """
    torch_device = torch.device(device)
    model = model if model is not None else _load_model(vq_folder, torch_device)
    store = token_store if isinstance(token_store, TokenStore) else TokenStore(token_store)
    _check_same_tokenizer(model, store)
    ids = store.ids() if image_ids is None else list(image_ids)
    missing = [i for i in ids if i not in store]
    if missing:
        raise BadInputError(store.folder, f"image ids not in the store: {missing[:5]}", "check the ids")
    g, out, written = model.cfg.grid_size, Path(out_dir), []
    with _progress(progress) as bar, torch.inference_mode():
        task = bar.add_task("decode", total=len(ids), rate="")
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            codes = torch.from_numpy(store.get_many(chunk)).view(len(chunk), g, g).to(torch_device)
            for image_id, image in zip(chunk, model.decode(codes).cpu(), strict=True):
                path = out / f"{image_id}.png"
                with atomic.atomic_path(path) as tmp:
                    to_pil(image).save(tmp, format="PNG")
                written.append(path)
            bar.update(task, advance=len(chunk))
    return written


# --- evaluate -------------------------------------------------------------------------------------


def evaluate_reconstruction(
    vq_folder: str | Path | None,
    images: str | Path,
    batch_size: int = 16,
    num_workers: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    limits: ImageLimits = ImageLimits(),
    frontal_only: bool = False,
    max_images: int | None = None,
    baseline: bool = True,
    progress: bool = True,
    model: VQGAN | None = None,
) -> dict[str, Any]:
    """Reconstruction quality of the tokenizer on a folder or manifest of images.

    Returns ``psnr`` (dB) and ``ssim`` (``llmcxr.metrics.reconstruction``: images mapped to [0, 1],
    data range 1, per-image means), codebook ``usage``/``perplexity``/``used_codes`` over all codes of
    the set, ``n_images``, ``n_failed``, and with ``baseline`` the same PSNR/SSIM for bicubic
    downsampling to the token grid and back (as many numbers per image as there are tokens).
    """
    torch_device = torch.device(device)
    model = model if model is not None else _load_model(vq_folder, torch_device)
    cfg = model.cfg
    entries = scan_images(images)[:max_images]
    scores, plain = ReconstructionScores(), ReconstructionScores()
    all_codes: list[torch.Tensor] = []
    failed = 0
    with _progress(progress) as bar, torch.inference_mode(), precision_context(torch_device, precision):
        task = bar.add_task("eval", total=len(entries), rate="")
        for batch in image_batches(
            entries,
            cfg.resolution,
            batch_size,
            num_workers,
            limits,
            frontal_only,
            torch_device.type == "cuda",
            cfg.preprocessing,
        ):
            failed += len(batch.failures)
            if batch.positions:
                originals = batch.images.to(torch_device, non_blocking=True)
                codes = model.encode(originals)  # (B, g, g)
                scores.update(originals.float(), model.decode(codes).float())
                all_codes.append(codes.cpu())
                if baseline:
                    plain.update(originals.float(), bicubic_baseline(originals.float(), cfg.grid_size))
            bar.update(task, advance=len(batch.positions) + len(batch.failures))
    codes = torch.cat(all_codes) if all_codes else torch.zeros(0, dtype=torch.long)
    result: dict[str, Any] = {
        **scores.compute(),
        **codebook_stats(codes, cfg.codebook_size),
        "n_failed": failed,
    }
    result.update(resolution=cfg.resolution, grid_size=cfg.grid_size, num_tokens=cfg.num_tokens)
    if baseline:
        base = plain.compute()
        result["baseline_bicubic"] = {"psnr": base["psnr"], "ssim": base["ssim"], "grid_size": cfg.grid_size}
    return result
