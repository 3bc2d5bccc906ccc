"""The Hugging Face Trainer as llmcxr runs it: per-task losses and real-token throughput in every log
line, a wall-time budget and schedule carried across --resume, and the TrainingArguments a recipe maps to.

The Trainer brings bf16 autocast, gradient checkpointing, checkpoints and resume (optimizer,
scheduler, RNG and data position), torchrun/accelerate multi-process, DeepSpeed ZeRO-3 and FSDP
(``recipes/distributed/``).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from transformers import Trainer, TrainerCallback, TrainingArguments

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.model.folder import replace_folder
from llmcxr.model.grid_stem import STEM_ATTRIBUTE, grid_stem_of, load_grid_stem_weights, save_grid_stem
from llmcxr.training.config import TASKS, WALL_TIME_SCHEDULERS, TrainRecipe
from llmcxr.training.distributed import shard_fsdp_on_cpu

TIME_BUDGET_FILE = "time_budget.json"  # in each checkpoint: training seconds so far, for --resume
STAGING_DIR = ".staging"  # in output_dir: a checkpoint being written, renamed into place when complete
CHECKPOINT_PREFIX = "checkpoint-"


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (a file missing, empty or unreadable), or None."""
    for name in ("config.json", "trainer_state.json"):
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size == 0:
            return f"{name} is missing or empty"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"{name} is unreadable ({type(err).__name__})"
    weights = [*checkpoint.glob("*.safetensors"), *checkpoint.glob("*.bin"), *checkpoint.glob("global_step*")]
    if not any(p.is_dir() or p.stat().st_size > 0 for p in weights):
        return "it holds no weights"
    return None


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` of ``output_dir`` that a resume can read; newer incomplete ones (a
    kill while one was written by a run without staging, or a damaged copy) are skipped with a warning."""
    if not output_dir.is_dir():
        return None
    steps = sorted(
        (int(p.name.removeprefix(CHECKPOINT_PREFIX)), p)
        for p in output_dir.iterdir()
        if p.is_dir()
        and p.name.startswith(CHECKPOINT_PREFIX)
        and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()
    )
    for _, checkpoint in reversed(steps):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        warnings.warn(
            f"{checkpoint}: incomplete checkpoint ({problem}); resuming from an earlier one", stacklevel=2
        )
    return None


class CXRTrainer(Trainer):
    """The HF Trainer plus per-task training loss and real-token throughput in every log line."""

    def __init__(self, *args, time_budget: TimeBudget | None = None, schedule_clock: str = "steps", **kwargs):
        super().__init__(*args, **kwargs)
        # Summed on the model's device and read at log time only: a read per step would make the GPU
        # wait for the host at every step.
        self._task_loss = self._task_tokens = self._real_tokens = None
        self._since = time.perf_counter()
        self.time_budget = time_budget
        self.schedule_clock = schedule_clock
        self.save_dtype: torch.dtype | None = None  # set for the export: weights cast as they are written

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        shard_fsdp_on_cpu(self)  # accelerate would silently run DDP there

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.schedule_clock != "wall_time" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = wall_time_schedule(
            optimizer or self.optimizer,
            self.args.lr_scheduler_type,
            self.args.get_warmup_steps(num_training_steps),
            self.time_budget,
        )
        return self.lr_scheduler

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume a plain (single-process or DDP) full fine-tune through ``from_pretrained``.

        transformers 5.24 saves GPT-NeoX's output layer under its checkpoint name ``embed_out``
        while the module is ``lm_head``; the Trainer's own resume (a plain ``load_state_dict``)
        then silently leaves the output layer at its initial weights. ``from_pretrained`` applies
        the renaming. PEFT adapters, ZeRO-3 and FSDP keep the Trainer's own loading.
        """
        target = model if model is not None else self.model
        if isinstance(target, PeftModel) or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        dtype = next(target.parameters()).dtype
        saved = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype, use_safetensors=True)
        result = target.load_state_dict(saved.state_dict(), strict=False)  # a grid stem is saved apart
        stem = grid_stem_of(target)
        apart = f"{STEM_ATTRIBUTE}." if stem is not None else None
        if result.unexpected_keys or any(
            apart is None or not k.startswith(apart) for k in result.missing_keys
        ):
            raise BadInputError(resume_from_checkpoint, f"weights do not fit the model: {result}")
        if stem is not None:
            load_grid_stem_weights(stem, Path(resume_from_checkpoint))
        return None

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer writes ``checkpoint-N`` in place, so a kill mid-write left a 0-byte config.json
        that --resume died on (issue 24): write it under ``output_dir/.staging`` and rename it into place
        when complete. A multi-process run writes each rank's part in place (a rename would race);
        resume skips a checkpoint left incomplete (``last_complete_checkpoint``)."""
        if self.args.world_size > 1:
            return super()._save_checkpoint(model, trial)
        run_dir = Path(self.args.output_dir)
        staging = run_dir / STAGING_DIR
        shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
        self.args.output_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = str(run_dir)
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        if (
            self.time_budget is not None
        ):  # in the checkpoint before it appears (TimeBudget.on_save repeats it)
            atomic.write_json(
                staging / name / TIME_BUDGET_FILE, {"training_seconds": self.time_budget.elapsed()}
            )
        replace_folder(
            staging / name, run_dir / name
        )  # saved again at the same step: the new one replaces it
        shutil.rmtree(staging, ignore_errors=True)
        if self.args.save_total_limit:  # the Trainer's own rotation only saw the staging folder
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        return None

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.save_dtype is not None:
            if state_dict is None:
                state_dict = self.accelerator.unwrap_model(self.model).state_dict()
            state_dict = {
                k: v.to(self.save_dtype) if v.is_floating_point() else v for k, v in state_dict.items()
            }
        super()._save(output_dir, state_dict)
        if self.args.should_save:  # the LM's save_pretrained leaves the grid stem out (a file of its own)
            save_grid_stem(
                self.accelerator.unwrap_model(self.model), Path(output_dir or self.args.output_dir)
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        task_ids = inputs.pop("task_ids", None)
        # Without a KV cache only: transformers reads restarting position_ids as packed sequences
        # (block-diagonal mask) when no cache is passed; GPT-NeoX would otherwise build one.
        inputs["use_cache"] = False
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training and task_ids is not None and getattr(outputs, "logits", None) is not None:
            self._count(outputs.logits.detach(), inputs["labels"], task_ids)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _count(self, logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor) -> None:
        """logits (B, L, V), labels and task_ids (B, L): next-token loss summed per task."""
        if self._task_loss is None:
            self._task_loss = torch.zeros(len(TASKS), dtype=torch.float64, device=logits.device)
            self._task_tokens = torch.zeros_like(self._task_loss)
            self._real_tokens = torch.zeros((), dtype=torch.float64, device=logits.device)
        self._real_tokens += (task_ids >= 0).sum()
        # Masked by weights, not by indexing: a boolean index would make the host wait for its size.
        target, task = labels[:, 1:].reshape(-1), task_ids[:, 1:].reshape(-1)
        scored = (target != -100).double()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target, reduction="none", ignore_index=-100
        ).double()
        task = task.clamp(min=0)  # unscored padding (-1) weighs 0 anyway
        self._task_loss.index_add_(0, task, losses * scored)
        self._task_tokens.index_add_(0, task, scored)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._task_loss is not None:  # a training log line: add what was counted
            stats = torch.cat([self._task_loss, self._task_tokens, self._real_tokens.reshape(1)])
            if self.accelerator.num_processes > 1:
                stats = self.accelerator.reduce(stats.to(self.accelerator.device), "sum")
            stats = stats.cpu()
            loss, tokens, real = stats[: len(TASKS)], stats[len(TASKS) : 2 * len(TASKS)], float(stats[-1])
            for i, task in enumerate(TASKS):
                if tokens[i] > 0:
                    logs[f"loss_{task}"] = round(float(loss[i] / tokens[i]), 4)
            elapsed = time.perf_counter() - self._since
            logs["real_tokens_per_second"] = round(real / max(elapsed, 1e-9), 1)
            self._task_loss = self._task_tokens = self._real_tokens = None
            self._since = time.perf_counter()
        super().log(logs, start_time)


class TimeBudget(TrainerCallback):
    """Stop training after ``minutes`` of wall time; the Trainer then saves and the run exports as usual.
    The training seconds so far go into every checkpoint, so a resumed run spends only what is left
    (and a wall-time schedule goes on where it stopped)."""

    def __init__(self, minutes: float, spent_seconds: float = 0.0) -> None:
        self.seconds = minutes * 60
        self.spent_before = spent_seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.spent_before + time.perf_counter() - self.start

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()  # model set-up and data building are not training time

    def on_step_end(self, args, state, control, **kwargs):
        if self.elapsed() > self.seconds:
            control.should_training_stop = True
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            atomic.write_json(checkpoint / TIME_BUDGET_FILE, {"training_seconds": self.elapsed()})
        return control

    @staticmethod
    def spent_in(checkpoint: Path | None) -> float:
        path = checkpoint / TIME_BUDGET_FILE if checkpoint else None
        return float(json.loads(path.read_text())["training_seconds"]) if path and path.is_file() else 0.0


WALL_TIME_SCHEDULES = {  # progress p in [0, 1] -> learning-rate factor; keys: WALL_TIME_SCHEDULERS
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "constant": lambda p: 1.0,
    "constant_with_warmup": lambda p: 1.0,
}
assert tuple(WALL_TIME_SCHEDULES) == WALL_TIME_SCHEDULERS


def wall_time_schedule(optimizer, kind: str, warmup_steps: int, budget: TimeBudget | None):
    """``kind`` over the time budget (progress = training seconds / budget, carried across --resume),
    under a linear warm-up over the first ``warmup_steps`` steps."""
    if budget is None:
        raise BadInputError("recipe", "optim.schedule_clock: wall_time needs max_train_minutes")
    if kind not in WALL_TIME_SCHEDULES:
        raise BadInputError(
            "recipe",
            f"lr_scheduler {kind!r} has no wall-time form",
            f"use one of {WALL_TIME_SCHEDULERS}, or schedule_clock: steps",
        )
    shape = WALL_TIME_SCHEDULES[kind]

    def factor(step: int) -> float:  # a function, not an object: LambdaLR then saves no state for it
        warm = (step + 1) / (warmup_steps + 1) if step < warmup_steps else 1.0
        return warm * shape(min(budget.elapsed() / budget.seconds, 1.0))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (the old name warns there).
CHECKPOINTING_ARG = (
    "activation_checkpointing"
    if "activation_checkpointing" in inspect.signature(TrainingArguments).parameters
    else "gradient_checkpointing"
)


def training_arguments(recipe: TrainRecipe, has_eval: bool) -> TrainingArguments:
    o = recipe.optim
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(recipe.output_dir),
        per_device_train_batch_size=o.per_device_batch_size,
        per_device_eval_batch_size=o.per_device_batch_size,
        gradient_accumulation_steps=o.gradient_accumulation_steps,
        learning_rate=o.learning_rate,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_steps,
        lr_scheduler_type=o.lr_scheduler,
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        optim=o.optimizer,
        max_grad_norm=o.max_grad_norm,
        bf16=recipe.bf16,
        **{
            CHECKPOINTING_ARG: recipe.gradient_checkpointing,
            f"{CHECKPOINTING_ARG}_kwargs": {"use_reentrant": False}
            if recipe.gradient_checkpointing
            else None,
        },
        logging_strategy="steps",
        logging_steps=recipe.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_on_start=has_eval,  # the step-0 eval loss is the baseline the curves fall from
        eval_steps=recipe.eval_steps,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=recipe.num_workers,
        use_cpu=not on_gpu,
        # torchrun on CPU needs gloo; a single process must not name a backend at all.
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        ddp_find_unused_parameters=False,
        deepspeed=str(recipe.deepspeed) if recipe.deepspeed else None,
        fsdp=True if recipe.fsdp else None,
        fsdp_config=str(recipe.fsdp_config) if recipe.fsdp_config else None,
        seed=recipe.seed,
        disable_tqdm=True,
    )
