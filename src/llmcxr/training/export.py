"""The self-describing model folder a run ends with (or any of its checkpoints): plain safetensors,
tokenizer, image-token map, VQ-GAN copy and the recipe."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer

from llmcxr.config import load_config, to_dict
from llmcxr.errors import BadInputError
from llmcxr.model.adapter import save_adapter_files
from llmcxr.model.folder import replace_folder, save_llmcxr_folder, staged_folder, write_llmcxr_files
from llmcxr.model.grid_stem import grid_stem_of
from llmcxr.model.vocab import IMAGE_TOKENS_FILE, ImageTokenMap
from llmcxr.training.config import TrainRecipe
from llmcxr.training.distributed import full_tensors
from llmcxr.training.loop import TIME_BUDGET_FILE, CXRTrainer

EXPORT_DIR = "model"  # output_dir/model: the self-describing folder
ADAPTER_DIR = "adapter"  # output_dir/adapter: a LoRA run's adapter over its base (llmcxr.model.adapter)


def weights_sha256(model) -> str:
    """Hash of every parameter and buffer (name, dtype, bytes): equal hashes = identical weights.

    Sharded weights (ZeRO-3, FSDP2) are hashed whole, so every rank computes the hash of the full
    model, the one its export holds (written in the training dtype). Collective under sharding: call
    it on every rank."""
    digest = hashlib.sha256()
    for name, tensor in full_tensors(model):
        digest.update(name.encode())
        digest.update(tensor.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_dtype(recipe: TrainRecipe) -> torch.dtype:
    """bf16 for a bf16 recipe unless it asks for fp32 (``export_fp32``)."""
    return torch.bfloat16 if recipe.bf16 and not recipe.export_fp32 else torch.float32


def export_model(trainer: CXRTrainer, recipe: TrainRecipe, tokenizer, image_tokens: ImageTokenMap) -> Path:
    """Write output_dir/model: merged LoRA or full weights as plain safetensors + the llmcxr files."""
    out = Path(recipe.output_dir) / EXPORT_DIR
    state = trainer.accelerator
    model = state.unwrap_model(trainer.model)
    train_config = to_dict(recipe)
    dtype = export_dtype(recipe)
    if recipe.lora.enabled:
        if state.is_main_process:  # LoRA runs are not sharded (training.distributed): merge here
            if recipe.model.base is not None and grid_stem_of(model) is None:
                export_adapter(model, recipe, tokenizer, image_tokens, train_config)
            merged = model.merge_and_unload().to(dtype)
            save_llmcxr_folder(merged, tokenizer, image_tokens, out, recipe.vq_folder, train_config)
    else:
        # Every rank takes part in save_model (ZeRO-3/FSDP gather shards); rank 0 writes the files.
        stage = out.with_name(f".{out.name}.staging")
        if state.is_main_process and stage.exists():
            shutil.rmtree(stage)
        state.wait_for_everyone()
        trainer.save_dtype = dtype
        try:
            trainer.save_model(str(stage))
        finally:
            trainer.save_dtype = None
        if state.is_main_process:
            (stage / "training_args.bin").unlink(
                missing_ok=True
            )  # a pickle: not shipped (it is in checkpoints)
            tokenizer.save_pretrained(stage)
            write_llmcxr_files(stage, image_tokens, recipe.vq_folder, train_config)
            replace_folder(stage, out)
    state.wait_for_everyone()
    return out


def export_adapter(
    peft_model, recipe: TrainRecipe, tokenizer, image_tokens: ImageTokenMap, train_config
) -> Path:
    """Write output_dir/adapter: the LoRA adapter and new token rows over the named base, with every
    llmcxr file but the base's weights (``llmcxr.model.adapter``; a few MB where the merge is 0.5 GB)."""
    out = Path(recipe.output_dir) / ADAPTER_DIR
    with staged_folder(out) as stage:
        save_adapter_files(peft_model, stage, Path(recipe.model.base), recipe.seed)
        tokenizer.save_pretrained(stage)
        write_llmcxr_files(stage, image_tokens, recipe.vq_folder, train_config)
    return out


CHECKPOINT_MODEL_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """A run's ``checkpoint-N`` as a model folder, as the run's own export would be at step N: to ship
    an earlier step (a lower eval loss, the weights before a later change) or continue from it."""
    checkpoint, out = Path(checkpoint), Path(out)
    run = checkpoint.parent
    if (checkpoint / "adapter_model.safetensors").is_file():
        raise BadInputError(
            checkpoint,
            "is a LoRA checkpoint (adapter weights only)",
            "let the run finish: its export merges them",
        )
    if not checkpoint.is_dir() or not any(checkpoint.glob("*.safetensors")):
        raise BadInputError(
            checkpoint, "has no .safetensors weights", "give a checkpoint-N folder of `llmcxr train`"
        )
    for needed in ("recipe.json", IMAGE_TOKENS_FILE):
        if not (run / needed).is_file():
            raise BadInputError(
                run,
                f"has no {needed} (written when `llmcxr train` starts)",
                "give a checkpoint inside its run folder",
            )
    recipe = load_config(TrainRecipe, run / "recipe.json")
    image_tokens = ImageTokenMap.load(run)
    image_tokens.check(AutoTokenizer.from_pretrained(checkpoint))  # it holds the tokens the map names
    step = checkpoint.name.removeprefix("checkpoint-")
    train_config = to_dict(recipe) | {
        "stopped_at_step": int(step) if step.isdigit() else None,
        "weights_from": str(checkpoint),
    }
    with staged_folder(out) as stage:
        # Weights, model and tokenizer files (tokenizer.model, merges.txt and chat templates of other
        # bases too); not the optimizer, scheduler and RNG states (pickles) or the trainer's state.
        for path in checkpoint.iterdir():
            if path.suffix in CHECKPOINT_MODEL_SUFFIXES and path.name not in (
                "trainer_state.json",
                TIME_BUDGET_FILE,
            ):
                shutil.copy2(path, stage / path.name)
        write_llmcxr_files(stage, image_tokens, recipe.vq_folder, train_config)
    return out
