"""Train the VQ-GAN: `train_vqgan(VQTrainConfig)` (`llmcxr vq train --config recipes/vq/tiny.yaml`).

One loop, top to bottom: split the images by patient, load them once into memory, then per step a
generator update (reconstruction + perceptual + quantizer + clinical feature + adaptive hinge GAN
loss) and, after `discriminator_start`, a discriminator update. Every `checkpoint_every` steps the
whole state (models, optimizers, step, RNG) goes to `checkpoint-<step>/` and `latest` points to it,
so a killed run resumes where it left off and ends in the same state as an uninterrupted one: batch
order and augmentation are drawn from a generator seeded by (seed, step), not from running state.
"""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from llmcxr import atomic
from llmcxr.config import save_config, to_dict
from llmcxr.errors import BadInputError
from llmcxr.imaging import load_cxr, scan_images
from llmcxr.metrics.reconstruction import ReconstructionScores
from llmcxr.vq.config import VQTrainConfig
from llmcxr.vq.densenet import ClinicalFeatureLoss, XRVDenseNet
from llmcxr.vq.discriminator import PatchDiscriminator
from llmcxr.vq.losses import (
    adaptive_weight,
    build_perceptual,
    feature_distance,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    reconstruction_loss,
)
from llmcxr.vq.model import VQGAN, load_vqgan, save_vqgan
from llmcxr.vq.quantizer import codebook_stats

# --- data: split by patient, load once ------------------------------------------------------------


def _column_by_path(source: Path, column: str) -> dict[Path, str]:
    """Resolved image path -> its value in a CSV/JSONL manifest's `column` (patient, split); {} for folders."""
    if not source.is_file():
        return {}
    if source.suffix.lower() == ".csv":
        with open(source, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    patients = {}
    for row in rows:
        name = row.get("image_path") or row.get("image")
        if name and row.get(column) not in (None, ""):
            path = Path(str(name))
            patients[(path if path.is_absolute() else source.parent / path).resolve()] = str(row[column])
    return patients


def split_by_patient(
    source: Path, column: str, holdout_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """(train paths, held-out paths): a seeded shuffle of patients, ~`holdout_fraction` of them held out.

    Images without a patient id count as their own patient.
    """
    entries = scan_images(source)
    patients = _column_by_path(source, column)
    groups: dict[str, list[Path]] = {}
    for entry in entries:
        groups.setdefault(patients.get(entry.path.resolve(), f"image:{entry.image_id}"), []).append(
            entry.path
        )
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    n_holdout = round(len(names) * holdout_fraction) if holdout_fraction > 0 else 0
    if len(names) > 1:
        n_holdout = min(max(n_holdout, 1 if holdout_fraction > 0 else 0), len(names) - 1)
    held = {name for name in names[:n_holdout]}
    train = [p for name in sorted(groups) if name not in held for p in groups[name]]
    holdout = [p for name in sorted(groups) if name in held for p in groups[name]]
    return train, holdout


def split_by_column(source: Path, column: str) -> tuple[list[Path], list[Path]]:
    """(train paths, held-out paths) from a manifest column with values train / validate (/ test, unused)."""
    splits = _column_by_path(source, column)
    train = sorted(p for p, split in splits.items() if split == "train")
    holdout = sorted(p for p, split in splits.items() if split == "validate")
    if not train:
        raise BadInputError(
            source,
            f"no rows with {column} = train",
            "give a manifest with a split column, or unset split_column",
        )
    return train, holdout


def load_images(paths: list[Path], size: int, console: Console | None = None) -> torch.Tensor:
    """(N, 1, size, size) in [-1, 1]; unreadable files are reported and skipped."""
    images, failures = [], []
    for path in paths:
        try:
            images.append(load_cxr(path, size=size))
        except BadInputError as err:
            failures.append(str(err))
    if failures and console is not None:
        console.print(f"[yellow]skipped {len(failures)} unreadable image(s)[/], first: {failures[0]}")
    if not images:
        raise BadInputError(paths[0] if paths else None, "no readable images", "check the data path")
    return torch.stack(images)


# --- augmentation (small: the real set has a few hundred images) ----------------------------------


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, R, R) -> same: rotation +-5 deg, scale 0.95-1.05, shift +-3%, brightness +-0.05,
    contrast 0.9-1.1. Small on purpose: CXRs are acquired upright and centred."""
    b = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=generator)

    angle = uniform(-5, 5) * math.pi / 180
    scale = uniform(0.95, 1.05)
    shift = torch.stack([uniform(-0.03, 0.03), uniform(-0.03, 0.03)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    theta = torch.cat([theta, shift[:, :, None]], dim=2)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast, brightness = uniform(0.9, 1.1), uniform(-0.05, 0.05)
    return (moved * contrast[:, None, None, None] + brightness[:, None, None, None]).clamp(-1, 1)


def batch_for_step(images: torch.Tensor, cfg: VQTrainConfig, step: int) -> torch.Tensor:
    """The training batch of `step`: a function of (seed, step) only, so resuming replays it exactly."""
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    picks = torch.randperm(images.shape[0], generator=generator)[: cfg.batch_size]
    batch = images[picks]
    return augment(batch, generator) if cfg.augment else batch


# --- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: VQGAN, images: torch.Tensor, batch_size: int = 32) -> dict[str, float]:
    """Held-out PSNR/SSIM (`llmcxr.metrics.reconstruction`) and codebook usage/perplexity."""
    was_training = model.training
    model.eval()
    scores, all_codes = ReconstructionScores(), []
    device = next(model.parameters()).device
    for start in range(0, images.shape[0], batch_size):
        originals = images[start : start + batch_size].to(device)
        codes = model.encode(originals)
        scores.update(originals, model.decode(codes).float())
        all_codes.append(codes.cpu())
    model.train(was_training)
    return {**scores.compute(), **codebook_stats(torch.cat(all_codes), model.cfg.codebook_size)}


def save_sample_grid(model: VQGAN, images: torch.Tensor, path: Path) -> None:
    """PNG with inputs on the top row and their reconstructions below (8-bit grayscale)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        recon = model.decode(model.encode(images)).cpu()
    model.train(was_training)
    rows = [torch.cat(list(images.cpu()[:, 0]), dim=1), torch.cat(list(recon[:, 0]), dim=1)]
    grid = ((torch.cat(rows, dim=0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(grid, mode="L").save(tmp, format="PNG")


# --- checkpoints ----------------------------------------------------------------------------------


def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat safetensors-ready tensors plus its JSON-able param groups."""
    state = optimizer.state_dict()
    tensors = {
        f"{prefix}.{index}.{name}": value.detach().cpu().contiguous()
        for index, slots in state["state"].items()
        for name, value in slots.items()
        if torch.is_tensor(value)
    }
    return tensors, {"param_groups": state["param_groups"]}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, prefix: str, groups: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def save_checkpoint(
    out: Path,
    step: int,
    model: VQGAN,
    disc: PatchDiscriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> Path:
    """Write `checkpoint-<step>/` (model, discriminator, optimizers, RNG), then point `latest` at it."""
    folder = out / f"checkpoint-{step:07d}"
    save_vqgan(model, folder)
    tensors = {f"discriminator.{k}": v.detach().cpu().contiguous() for k, v in disc.state_dict().items()}
    g_tensors, g_groups = _optimizer_tensors(opt_g, "opt_g")
    d_tensors, d_groups = _optimizer_tensors(opt_d, "opt_d")
    tensors.update(g_tensors | d_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    with atomic.atomic_path(folder / "trainer.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic.write_json(folder / "trainer_state.json", {"step": step, "opt_g": g_groups, "opt_d": d_groups})
    atomic.write_text(out / "latest", folder.name + "\n")
    for old in out.glob("checkpoint-*"):  # keep only the newest: it has everything
        if old.is_dir() and old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(
    out: Path,
    model: VQGAN,
    disc: PatchDiscriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> int:
    """Restore the state `latest` points to; returns the step to continue from (0 if none)."""
    pointer = out / "latest"
    if not pointer.is_file():
        return 0
    folder = out / pointer.read_text().strip()
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        tensors = load_file(str(folder / "trainer.safetensors"))
        weights = load_file(str(folder / "vqgan.safetensors"))
    except (OSError, json.JSONDecodeError) as err:
        raise BadInputError(folder, f"broken checkpoint ({err})", "delete it to start over") from None
    model.load_state_dict(weights)
    disc.load_state_dict(
        {k.removeprefix("discriminator."): v for k, v in tensors.items() if k.startswith("discriminator.")}
    )
    _load_optimizer(opt_g, tensors, "opt_g", state["opt_g"])
    _load_optimizer(opt_d, tensors, "opt_d", state["opt_d"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(state["step"])


# --- the loop -------------------------------------------------------------------------------------


def learning_rate(cfg: VQTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% at `steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast where it pays. 'auto' = bf16 on GPU, fp32 on CPU: measured here (AMD EPYC without
    AVX512-BF16), bf16 convolutions run 4x slower than fp32, and a VQ-GAN is all convolutions."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    if path.is_file():
        kept = [
            line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step
        ]
        atomic.write_text(path, "".join(line + "\n" for line in kept))


def generator_step(
    cfg: VQTrainConfig,
    model: VQGAN,
    disc: PatchDiscriminator,
    perceptual: torch.nn.Module,
    images: torch.Tensor,
    step: int,
    device: torch.device,
    clinical_net: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Generator loss of one batch -> (loss, reconstructions, logged parts).

    The clinical feature term uses `clinical_net` (the torchxrayvision DenseNet) from step 0 when
    given; otherwise the discriminator's features, once the discriminator has started.
    """
    gan_on = step >= cfg.discriminator_start
    with _autocast(device, cfg.precision):
        recon, quantizer_loss, _ = model(images)
        recon = recon.float()
        rec = reconstruction_loss(images, recon, cfg.l1_weight, cfg.l2_weight)
        perc = perceptual(images, recon).float() if cfg.perceptual_weight > 0 else rec.new_zeros(())
        nll = rec + cfg.perceptual_weight * perc
        loss = nll + quantizer_loss
        parts = {"rec": rec.item(), "perc": perc.item(), "vq": quantizer_loss.item()}
        if gan_on and cfg.adversarial_weight > 0:
            adv = generator_adversarial_loss(disc(recon).float())
            weight = adaptive_weight(nll, adv, model.last_layer) if model.training else adv.new_ones(())
            loss = loss + cfg.adversarial_weight * weight * adv
            parts |= {"adv": adv.item(), "adv_w": weight.item()}
        if cfg.clinical_weight > 0 and clinical_net is not None:
            clinical = clinical_net(images, recon).float()
            loss = loss + cfg.clinical_weight * clinical
            parts["clin"] = clinical.item()
        elif cfg.clinical_weight > 0 and gan_on:
            with torch.no_grad():
                real_feats = disc.features(images)
            clinical = feature_distance(real_feats, disc.features(recon))
            loss = loss + cfg.clinical_weight * clinical
            parts["clin"] = clinical.item()
    return loss, recon, parts


def train_vqgan(
    cfg: VQTrainConfig, resume: bool = True, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Train (or resume, when `output_dir` holds a checkpoint and `resume`) and return final metrics.

    `stop_after` ends this invocation after that step's checkpoint as a kill would (no final model),
    without changing the learning-rate schedule, which depends on `cfg.steps` only.

    Writes `output_dir/{train_config.json, metrics.jsonl, samples/, checkpoint-*/, latest, final/,
    final_metrics.json}`; `final/` is a `load_vqgan` folder.
    """
    console = Console()
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "train_config.json")

    if cfg.split_column:
        train_paths, holdout_paths = split_by_column(Path(cfg.data), cfg.split_column)
    else:
        train_paths, holdout_paths = split_by_patient(
            Path(cfg.data), cfg.patient_column, cfg.holdout_fraction, cfg.seed
        )
    size = cfg.model.resolution
    train_images = load_images(train_paths, size, console)
    holdout_images = load_images(holdout_paths, size, console) if holdout_paths else train_images[:8]
    console.print(f"{len(train_images)} training / {len(holdout_images)} held-out images at {size} px")

    model = VQGAN(cfg.model).to(device)
    if cfg.init_from is not None:
        start_from = load_vqgan(cfg.init_from)
        if start_from.cfg != cfg.model:
            raise BadInputError(
                cfg.init_from, "its architecture differs from the recipe's `model`", "copy its vq_config.json"
            )
        model.load_state_dict(start_from.state_dict())
    disc = PatchDiscriminator(cfg.model.in_channels, cfg.discriminator_channels, cfg.discriminator_layers).to(
        device
    )
    perceptual = build_perceptual(cfg.lpips_weights).to(device)
    clinical_net = None
    if cfg.xrv_densenet_weights is not None:
        clinical_net = ClinicalFeatureLoss(XRVDenseNet.from_file(cfg.xrv_densenet_weights)).to(device)
    elif cfg.clinical_classifier is not None:
        from llmcxr.metrics.finding_classifier import load_finding_classifier

        clinical_net = ClinicalFeatureLoss(load_finding_classifier(cfg.clinical_classifier)).to(device)
    if cfg.decoder_only:
        for frozen in (model.encoder, model.quant_conv, model.quantize):
            frozen.requires_grad_(False)
        model.quantize.dead_code_threshold = 0.0  # no restarts: every code keeps its vector
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    start = load_checkpoint(out, model, disc, opt_g, opt_d) if resume else 0
    metrics_path = out / "metrics.jsonl"
    if start:
        _truncate_metrics(metrics_path, start)
        console.print(f"resumed from step {start}")
    else:
        metrics_path.unlink(missing_ok=True)

    eval_images = holdout_images[: cfg.eval_max_images]
    began = time.monotonic()
    step = start
    columns = [
        TextColumn("vq train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[losses]}"),
    ]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=start, losses="")
        model.train()
        disc.train()
        while step < cfg.steps:
            if cfg.time_budget_s and time.monotonic() - began > cfg.time_budget_s:
                console.print(f"time budget of {cfg.time_budget_s:.0f}s reached at step {step}")
                break
            for group in (*opt_g.param_groups, *opt_d.param_groups):
                group["lr"] = learning_rate(cfg, step)
            images = batch_for_step(train_images, cfg, step).to(device)
            loss, recon, parts = generator_step(
                cfg, model, disc, perceptual, images, step, device, clinical_net
            )
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            if step >= cfg.discriminator_start and cfg.adversarial_weight + cfg.clinical_weight > 0:
                with _autocast(device, cfg.precision):
                    d_loss = hinge_discriminator_loss(disc(images).float(), disc(recon.detach()).float())
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                parts["disc"] = d_loss.item()
            step += 1
            bar.update(task, completed=step, losses=" ".join(f"{k} {v:.3f}" for k, v in parts.items()))
            if step % 10 == 0 or step == cfg.steps:
                _append_metrics(
                    metrics_path,
                    {"step": step, "loss": loss.item(), **parts, "lr": learning_rate(cfg, step - 1)},
                )
            if step % cfg.eval_every == 0 or step == cfg.steps:
                scores = evaluate(model, eval_images.to(device))
                _append_metrics(
                    metrics_path, {"step": step, "heldout": scores, "elapsed_s": time.monotonic() - began}
                )
                save_sample_grid(model, eval_images[:8].to(device), out / "samples" / f"step-{step:07d}.png")
                console.print(
                    f"step {step}: held-out psnr {scores['psnr']:.2f} ssim {scores['ssim']:.3f} usage {scores['usage']:.2f}"
                )
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(out, step, model, disc, opt_g, opt_d)
            if stop_after is not None and step >= stop_after:
                return {"step": step, "stopped": True}

    save_checkpoint(out, step, model, disc, opt_g, opt_d)
    save_vqgan(model, out / "final")
    final = {
        "step": step,
        "train_images": len(train_images),
        "heldout_images": len(holdout_images),
        "heldout": evaluate(model, holdout_images.to(device)),
        "train_seconds_this_run": time.monotonic() - began,
        "config": to_dict(cfg),
    }
    atomic.write_json(out / "final_metrics.json", final)
    return final
