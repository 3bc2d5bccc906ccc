"""One training loop for full fine-tuning and LoRA, on the Hugging Face Trainer: a recipe end to end.

Data (``training.data``), the model (``training.model_setup``), the Trainer (``training.loop``) and the
export (``training.export``) are put together here. Their configs gather full weights at save, so the
export is plain safetensors, no zero_to_fp32 step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from accelerate import PartialState
from transformers import IntervalStrategy, PrinterCallback, TrainerCallback

from llmcxr import atomic
from llmcxr.config import save_config
from llmcxr.datasets.instructions import read_instructions
from llmcxr.errors import BadInputError
from llmcxr.training.config import TrainRecipe
from llmcxr.training.data import build_datasets, corpus_texts
from llmcxr.training.distributed import check_sharding, init_deepspeed_processes
from llmcxr.training.export import export_model, weights_sha256
from llmcxr.training.loop import CXRTrainer, TimeBudget, last_complete_checkpoint, training_arguments
from llmcxr.training.model_setup import apply_lora, cxr_token_ids, prepare_model
from llmcxr.training.packing import RowCollator
from llmcxr.training.sources import open_token_stores, read_source
from llmcxr.training.tasks import select_stage


def _evaluated_at(log_history: list[dict], step: int) -> bool:
    return any(
        entry.get("step") == step and any(k.startswith("eval_") for k in entry) for entry in log_history
    )


def train(
    recipe: TrainRecipe,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    print_logs: bool = True,
) -> Path:
    """Run a recipe end to end; returns the exported model folder. ``resume`` continues from the
    last checkpoint in output_dir (after a kill), with the same data order and optimizer state.
    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (progress bars, stops, tests);
    ``print_logs=False`` keeps the log lines off stdout (a progress bar shows them instead; they are
    still in train_log.json)."""
    output_dir = Path(recipe.output_dir)
    if recipe.vq_folder is not None and not Path(recipe.vq_folder).is_dir():  # now, not after training
        raise BadInputError(
            recipe.vq_folder,
            "VQ-GAN folder not found (the exported model carries a copy as vq/)",
            "point vq_folder at a `llmcxr vq train` output, or leave it out",
        )
    check_sharding(recipe.deepspeed, recipe.fsdp, recipe.lora.enabled)  # the file is found by now
    checkpoint = (
        last_complete_checkpoint(output_dir) if resume else None
    )  # skips, with a warning, one a kill left incomplete
    if resume and checkpoint is None and print_logs:
        print(f"no checkpoint in {output_dir}: starting from the beginning")
    if not resume and output_dir.exists() and last_complete_checkpoint(output_dir) is not None:
        raise BadInputError(
            output_dir, "has checkpoints of an earlier run", "pass --resume, or a new output_dir"
        )
    init_deepspeed_processes(recipe.deepspeed)  # before ZeRO-3 shards a base as it loads
    args = training_arguments(recipe, has_eval=True)  # sets up the (distributed) process state first
    state = PartialState()
    if state.is_main_process:
        save_config(recipe, output_dir / "recipe.json")

    records = [r for source in recipe.data for r in read_source(source)]
    instructions = read_instructions(recipe.instructions) if recipe.mixture.text > 0 else []
    stores = open_token_stores(recipe.data)
    corpus = corpus_texts(select_stage(records, recipe.stage), instructions, recipe.stage)
    model, tokenizer, image_tokens = prepare_model(
        recipe, corpus, stores.config.codebook_size, stores.config.num_tokens
    )
    if state.is_main_process:  # beside recipe.json: with them any checkpoint can be exported
        image_tokens.save(output_dir)
    train_set, eval_sets, counts = build_datasets(
        recipe, records, instructions, tokenizer, image_tokens, stores
    )
    if recipe.lora.enabled:
        model = apply_lora(model, recipe, cxr_token_ids(tokenizer, image_tokens))
    if not eval_sets:
        args.eval_strategy = IntervalStrategy.NO
        args.eval_on_start = False

    budget = (
        TimeBudget(recipe.max_train_minutes, TimeBudget.spent_in(checkpoint))
        if recipe.max_train_minutes
        else None
    )
    trainer = CXRTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_sets or None,
        data_collator=RowCollator(tokenizer.pad_token_id, packed=recipe.packing),
        processing_class=tokenizer,
        callbacks=[*callbacks, *([budget] if budget else [])],
        time_budget=budget,
        schedule_clock=recipe.optim.schedule_clock,
    )
    if not print_logs:
        trainer.remove_callback(PrinterCallback)
    if state.is_main_process and print_logs:
        print(
            json.dumps(
                {
                    "train_rows": len(train_set),
                    "eval_rows": {t: len(d) for t, d in eval_sets.items()},
                    "samples": counts.as_dict(),
                }
            )
        )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if eval_sets and not _evaluated_at(trainer.state.log_history, trainer.state.global_step):
        trainer.evaluate()  # the last step's eval, where the eval interval did not already end there
    # Before export (a LoRA merge changes the weights on the main process only).
    if trainer.is_deepspeed_enabled:  # a stop mid-run can leave ZeRO-3 shards prefetched: gather fails
        trainer.deepspeed.empty_partition_cache()
    digest = weights_sha256(trainer.accelerator.unwrap_model(trainer.model))
    atomic.write_text(output_dir / f"weights_sha256.rank{state.process_index}.txt", digest + "\n")
    if state.is_main_process:  # before the export: a failed export leaves the run's log behind
        atomic.write_json(
            output_dir / "train_log.json",
            {
                "log_history": trainer.state.log_history,
                "samples": counts.as_dict(),
                "num_parameters": sum(p.numel() for p in trainer.model.parameters()),
            },
        )
    return export_model(trainer, recipe, tokenizer, image_tokens)
