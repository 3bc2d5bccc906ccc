"""One training loop for full fine-tuning and LoRA, on the Hugging Face Trainer.

The Trainer brings bf16 autocast, gradient checkpointing, checkpoints and resume (optimizer,
scheduler, RNG and data position), torchrun/accelerate multi-process, DeepSpeed ZeRO-3 and FSDP
(``recipes/distributed/``; their configs gather full weights at save, so the export is plain
safetensors, no zero_to_fp32 step). Added here: image tokens in the vocabulary, the task mixture,
packing, per-task train and eval losses, real-token throughput, the self-describing export.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import PartialState
from peft import PeftModel
from torch.utils.data import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    IntervalStrategy,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from llmcxr import atomic
from llmcxr.config import load_config, save_config, to_dict
from llmcxr.datasets.instructions import Instruction, read_instructions
from llmcxr.errors import BadInputError
from llmcxr.model.folder import (
    replace_folder,
    save_llmcxr_folder,
    staged_folder,
    write_llmcxr_files,
)
from llmcxr.model.grid_stem import (
    STEM_ATTRIBUTE,
    GridStemConfig,
    attach_grid_stem,
    grid_stem_of,
    load_grid_stem,
    load_grid_stem_weights,
    save_grid_stem,
)
from llmcxr.model.grow import grow_layers
from llmcxr.model.scratch import build_scratch_model, train_bpe_tokenizer
from llmcxr.model.vocab import IMAGE_TOKENS_FILE, ImageTokenMap, add_cxr_tokens, resize_for_tokenizer
from llmcxr.prompt.dolly import CONTROL_TOKENS, INTRO_BLURB
from llmcxr.prompt.phrasings import PHRASINGS
from llmcxr.records import CXRRecord
from llmcxr.training.config import TASKS, WALL_TIME_SCHEDULERS, Mixture, TrainRecipe
from llmcxr.training.packing import PackedRow, RowCollator, pack_examples, single_rows
from llmcxr.training.sources import open_token_stores, read_source
from llmcxr.training.tasks import SampleCounts, encode_samples, mix_tasks, select_stage, stage_report

BASE_TOKENIZER_DIR = "base_tokenizer"  # the tokenizer before image tokens, kept for resume and ranks > 0
EXPORT_DIR = "model"  # output_dir/model: the self-describing folder
EVAL_SPLITS = ("validate", "val", "valid", "validation")
DRAW_SEED_STRIDE = 1000  # mixture draw d uses seed + 1000 d (the eval samples use seed + 1)
TIME_BUDGET_FILE = "time_budget.json"  # in each checkpoint: training seconds so far, for --resume


class RowDataset(Dataset):
    """Packed (or single-example) rows as a map-style dataset."""

    def __init__(self, rows: Sequence[PackedRow]) -> None:
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> PackedRow:
        return self.rows[index]


# ---- data -------------------------------------------------------------------------------------


def split_records(records: Sequence[CXRRecord]) -> tuple[list[CXRRecord], list[CXRRecord]]:
    """(train, eval): the records' own split when they have a validation split (else test), otherwise
    every 20th record is held out."""
    for wanted in (EVAL_SPLITS, ("test",)):
        held = [r for r in records if (r.split or "").lower() in wanted]
        if held:
            return [r for r in records if (r.split or "train").lower() == "train"], held
    return [r for i, r in enumerate(records) if i % 20 != 19], [
        r for i, r in enumerate(records) if i % 20 == 19
    ]


def split_instructions(items: Sequence[Instruction]) -> tuple[list[Instruction], list[Instruction]]:
    """Every 10th instruction is held out for the text task's eval loss."""
    return [x for i, x in enumerate(items) if i % 10 != 9], [x for i, x in enumerate(items) if i % 10 == 9]


def corpus_texts(records: Sequence[CXRRecord], instructions: Sequence[Instruction], stage: int) -> list[str]:
    """Text a from-scratch BPE is trained on: reports, QA, instructions and the prompt template."""
    texts = [INTRO_BLURB, "Input:\n", "\n\n"]
    texts += [p for phrasings in PHRASINGS.values() for p in phrasings]
    texts += [stage_report(r, stage) for r in records]
    texts += [f"{qa.question} {qa.answer}" for r in records for qa in r.qa]
    texts += [f"{x.instruction}\n{x.context}\n{x.response}" for x in instructions]
    return texts


def _rows(examples, recipe: TrainRecipe) -> list[PackedRow]:
    if recipe.packing:
        return pack_examples(examples, recipe.max_length, TASKS)
    return single_rows(examples, TASKS)


def build_datasets(recipe, records, instructions, tokenizer, image_tokens, stores):
    """(train dataset, {task: eval dataset}, SampleCounts of the training set)."""
    train_records, eval_records = split_records(select_stage(records, recipe.stage))
    train_text, eval_text = split_instructions(instructions)
    counts = SampleCounts()
    samples = [
        sample
        for draw in range(recipe.mixture_draws)
        for sample in mix_tasks(
            train_records,
            train_text,
            recipe.mixture,
            recipe.stage,
            recipe.seed + DRAW_SEED_STRIDE * draw,
            recipe.unconditional_fraction,
            recipe.unconditional_report_fraction,
        )
    ]
    train_examples = encode_samples(samples, tokenizer, image_tokens, stores, recipe.max_length, counts)
    if not train_examples:
        raise BadInputError("recipe", "no training samples", "check the data sources and their token stores")
    evals: dict[str, RowDataset] = {}
    for task in TASKS:
        if getattr(recipe.mixture, task) <= 0:
            continue
        only = Mixture(**{t: float(t == task) for t in TASKS})
        task_samples = mix_tasks(
            eval_records if task != "text" else [], eval_text, only, recipe.stage, recipe.seed + 1
        )
        examples = encode_samples(
            task_samples[: recipe.eval_samples_per_task], tokenizer, image_tokens, stores, recipe.max_length
        )
        if examples:
            evals[task] = RowDataset(_rows(examples, recipe))
    return RowDataset(_rows(train_examples, recipe)), evals, counts


# ---- model ------------------------------------------------------------------------------------


def prepare_model(recipe: TrainRecipe, corpus: list[str], codebook_size: int, tokens_per_image: int):
    """(model, tokenizer, image_tokens): the LM with control and image tokens in its vocabulary.

    The base (pre-image-token) tokenizer is saved in output_dir once, by the main process, and
    loaded from there by every other process and on resume: all ranks and restarts agree on ids.
    """
    base_dir = Path(recipe.output_dir) / BASE_TOKENIZER_DIR
    with PartialState().main_process_first():
        if not base_dir.is_dir():
            if recipe.model.base is not None:
                tokenizer = AutoTokenizer.from_pretrained(recipe.model.base)
            else:
                tokenizer = train_bpe_tokenizer(corpus, recipe.model.scratch.bpe_vocab_size)
            tokenizer.save_pretrained(base_dir)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:  # dolly-v2 pads with the end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    old_size = len(tokenizer)
    image_tokens = add_cxr_tokens(
        tokenizer, codebook_size, tokens_per_image, CONTROL_TOKENS, row_markers=recipe.image_row_markers
    )
    if recipe.model.base is not None:
        model = AutoModelForCausalLM.from_pretrained(
            recipe.model.base, dtype=torch.float32, attn_implementation=recipe.model.attn_implementation
        )
        resize_for_tokenizer(model, tokenizer, old_size, seed=recipe.seed)
        if recipe.model.grow_layers is not None:
            grow_layers(model, recipe.model.grow_layers)
    else:
        model = build_scratch_model(recipe.model.scratch, len(tokenizer))
        model.config._attn_implementation = recipe.model.attn_implementation
    base_stem = GridStemConfig.load(recipe.model.base) if recipe.model.base is not None else None
    if base_stem is not None:
        if recipe.model.grid_stem not in (None, base_stem):
            raise BadInputError(
                "recipe",
                f"model.grid_stem {recipe.model.grid_stem} differs from the base's ({base_stem})",
                "leave model.grid_stem out to keep the base's stem",
            )
        load_grid_stem(model, image_tokens, recipe.model.base)
    elif recipe.model.grid_stem is not None:
        attach_grid_stem(model, image_tokens, recipe.model.grid_stem)
    model.config.pad_token_id = tokenizer.pad_token_id
    if recipe.gradient_checkpointing:
        model.config.use_cache = False
    return model, tokenizer, image_tokens


def _module_name(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def apply_lora(model, recipe: TrainRecipe):
    """peft LoRA on the linear layers; input and output embeddings trained in full (modules_to_save)
    so the new image and control token rows learn. (peft's ``trainable_token_indices`` would train
    only the new rows, but covers embedding layers only, not an untied output head such as GPT-NeoX's.)"""
    from peft import LoraConfig, get_peft_model

    spec = recipe.lora
    keep = [_module_name(model, model.get_input_embeddings())]
    if model.get_output_embeddings() is not None:
        keep.append(_module_name(model, model.get_output_embeddings()))
    if grid_stem_of(model) is not None:  # new weights: trained in full, like the new token rows
        keep.append(STEM_ATTRIBUTE)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules or "all-linear",
        modules_to_save=keep,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# ---- the trainer ------------------------------------------------------------------------------


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
        saved = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype)
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

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
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
        fsdp=recipe.fsdp or "",
        fsdp_config=str(recipe.fsdp_config) if recipe.fsdp_config else None,
        seed=recipe.seed,
        disable_tqdm=True,
    )


def weights_sha256(model) -> str:
    """Hash of every parameter and buffer (name, dtype, bytes): equal hashes = identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def export_model(trainer: CXRTrainer, recipe: TrainRecipe, tokenizer, image_tokens: ImageTokenMap) -> Path:
    """Write output_dir/model: merged LoRA or full weights as plain safetensors + the llmcxr files."""
    out = Path(recipe.output_dir) / EXPORT_DIR
    state = trainer.accelerator
    model = state.unwrap_model(trainer.model)
    train_config = to_dict(recipe)
    if recipe.lora.enabled:
        if state.is_main_process:  # LoRA models fit one process: merge there (not under ZeRO-3 sharding)
            merged = model.merge_and_unload()
            save_llmcxr_folder(merged, tokenizer, image_tokens, out, recipe.vq_folder, train_config)
    else:
        # Every rank takes part in save_model (ZeRO-3/FSDP gather shards); rank 0 writes the files.
        stage = out.with_name(f".{out.name}.staging")
        if state.is_main_process and stage.exists():
            shutil.rmtree(stage)
        state.wait_for_everyone()
        trainer.save_model(str(stage))
        if state.is_main_process:
            (stage / "training_args.bin").unlink(
                missing_ok=True
            )  # a pickle: not shipped (it is in checkpoints)
            tokenizer.save_pretrained(stage)
            write_llmcxr_files(stage, image_tokens, recipe.vq_folder, train_config)
            replace_folder(stage, out)
    state.wait_for_everyone()
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


def _last_checkpoint(output_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if output_dir.is_dir() and (found := get_last_checkpoint(str(output_dir))) else None


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
    checkpoint = _last_checkpoint(output_dir) if resume else None
    if resume and checkpoint is None and print_logs:
        print(f"no checkpoint in {output_dir}: starting from the beginning")
    if not resume and output_dir.exists() and _last_checkpoint(output_dir) is not None:
        raise BadInputError(
            output_dir, "has checkpoints of an earlier run", "pass --resume, or a new output_dir"
        )
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
        model = apply_lora(model, recipe)
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
    if eval_sets:
        trainer.evaluate()
    # Before export (a LoRA merge changes the weights on the main process only).
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
