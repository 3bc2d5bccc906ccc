"""The training recipe: typed dataclasses loaded from ``recipes/*.yaml`` (``llmcxr.config.load_config``).

Relative paths in a recipe are relative to the directory ``llmcxr train`` runs in (the repo root).
Every exported model folder carries its recipe as ``llmcxr_train.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.model.grid_stem import GridStemConfig
from llmcxr.model.scratch import ScratchConfig
from llmcxr.training.distributed import check_sharding

SOURCE_KINDS = ("synthetic", "mimic", "iu_xray", "manifest")
TASKS = ("report_generation", "image_generation", "vqa", "text")
SCHEDULE_CLOCKS = ("steps", "wall_time")
WALL_TIME_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")  # lr_scheduler names


@dataclass
class ModelSpec:
    """The language model to start from: a local Hugging Face folder, or a from-scratch GPT-NeoX."""

    base: Path | None = (
        None  # local causal-LM folder (dolly-v2-3b, pythia, Llama, Qwen, ...); never downloaded
    )
    scratch: ScratchConfig | None = None  # used when base is None: BPE tokenizer + small GPT-NeoX
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" | "flash_attention_2" (packing works with all three)
    # Deepen the base to this many decoder layers before training, without changing what it computes
    # at step 0 (llmcxr.model.grow): a model that has stopped improving trains on with more depth.
    grow_layers: int | None = None
    # Masked convolutions over the image-token grid added to the image codes' input embeddings
    # (llmcxr.model.grid_stem): the model sees which codes are neighbours in the image. Added with a
    # zero output to a base without one (the base's function is kept); a base that has one keeps it.
    grid_stem: GridStemConfig | None = None


@dataclass
class DataSource:
    """One dataset of CXR records and the token store holding its images' VQ codes."""

    kind: str  # one of SOURCE_KINDS
    path: Path  # synthetic world folder / MIMIC-CXR-JPG root / IU reports .tgz or folder / manifest file
    token_store: Path  # `llmcxr vq encode` output for this source's images (keys = CXRRecord.image_id)
    limit: int | None = None  # keep only the first N records (smoke runs)


@dataclass
class Mixture:
    """Relative sampling weights of the tasks (LLM-CXR: image tasks 0.8, plain-text instructions 0.2)."""

    report_generation: float = 0.4  # CXR -> report
    image_generation: float = 0.4  # report -> CXR
    vqa: float = 0.0  # question about a CXR -> answer (needs records with qa)
    text: float = 0.2  # Dolly-style text instructions, keeps the LM's language ability


@dataclass
class LoraSpec:
    """LoRA via peft; the embedding and output rows of the control and image tokens are trained in full."""

    enabled: bool = False
    r: int = 16  # rank
    alpha: int = 32  # scale = alpha / r
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: every linear layer ("all-linear")
    # Train (and save in the adapter) only the rows of the control and image tokens of the input and
    # output embeddings (peft's trainable_token_indices), not the whole matrices: at dolly-v2-3b's
    # shape the adapter checkpoint falls from 3.2 GB to a few MB. False: both matrices in full.
    train_new_token_rows_only: bool = True


@dataclass
class OptimSpec:
    """Optimiser and schedule (paper: AdamW, lr 5e-6, 50 warm-up steps, 5 epochs, batch 2 x 8 GPUs)."""

    learning_rate: float = 5e-6
    weight_decay: float = 0.0
    warmup_steps: int = 50
    lr_scheduler: str = "linear"  # any transformers SchedulerType
    epochs: float = 5.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    optimizer: str = "adamw_torch"  # any transformers OptimizerNames
    max_grad_norm: float = 1.0
    # "steps": the schedule runs over max_steps (or the epochs). "wall_time": it runs over the recipe's
    # max_train_minutes (warm-up still by steps), so a run on hardware of unknown speed (a GPU lease of
    # fixed length) still decays its learning rate to the end; max_steps is then only an upper bound.
    schedule_clock: str = "steps"


@dataclass
class TrainRecipe:
    """Everything one `llmcxr train` run needs."""

    output_dir: Path  # checkpoints, logs and the exported model folder (output_dir/model)
    data: list[DataSource] = field(default_factory=list)
    model: ModelSpec = field(default_factory=ModelSpec)
    vq_folder: Path | None = None  # VQ-GAN copied into the exported folder as vq/ (decodes image tokens)
    instructions: Path | None = None  # Dolly-15k JSONL; None: the project's built-in instruction set
    mixture: Mixture = field(default_factory=Mixture)
    stage: int = 1  # 1: frontal, findings + impression; 2: PA/AP, earliest study per patient, impression
    max_length: int = 1024  # tokens per sample (and per packed row)
    packing: bool = True  # several samples per row, attention kept inside each (see training/packing.py)
    unconditional_fraction: float = 0.1  # report -> CXR samples with the report left out (for CFG)
    # CXR -> report samples with the image left out: the model also learns p(report), the other half
    # of classifier-free guidance for reports (``LLMCXR.report(..., guidance_scale=...)``).
    unconditional_report_fraction: float = 0.0
    # One marker token opening each row of an image's token grid (``llmcxr.model.vocab``): tells the
    # model where in the grid each code sits. A base model that has them keeps them.
    image_row_markers: bool = False
    # How prompts are laid out (``llmcxr.model.vocab``): "llmcxr" (ours, the Dolly text), "official"
    # (the published LLM-CXR's layout and instruction lists, to go on training a model converted from
    # it) or "chat" (the base's own chat template around our image tokens). A base folder that records
    # the official layout keeps it.
    prompt_layout: str = "llmcxr"
    lora: LoraSpec = field(default_factory=LoraSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    bf16: bool = True
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int = 3
    eval_samples_per_task: int = 64  # validation samples per task for the per-task eval loss
    deepspeed: Path | None = None  # DeepSpeed JSON (recipes/distributed/zero3.json)
    fsdp: bool = False  # FSDP2 (fully_shard); its options are in fsdp_config
    fsdp_config: Path | None = None  # recipes/distributed/fsdp.json
    # The exported model's weights: the training dtype by default (bf16 when bf16 is on: half the
    # size, what inference loads anyway), fp32 on request.
    export_fp32: bool = False
    num_workers: int = 0  # DataLoader workers
    max_train_minutes: float | None = None  # stop (checkpoint, eval, export) after this wall time
    # Independent draws of the task mixture built up front: each record is one task per draw, so with
    # several a record is a report sample in one draw and an image sample in another. One draw is one
    # pass of the data; runs of many passes (a GPU) should draw several times.
    mixture_draws: int = 1
    seed: int = 42

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise BadInputError("recipe", f"stage must be 1 or 2, got {self.stage}")
        for source in self.data:
            if source.kind not in SOURCE_KINDS:
                raise BadInputError(
                    "recipe", f"unknown data kind {source.kind!r}", f"use one of {SOURCE_KINDS}"
                )
        if self.model.base is None and self.model.scratch is None:
            raise BadInputError("recipe", "model needs `base` (an LM folder) or `scratch` (a config)")
        if self.model.grow_layers is not None and self.model.base is None:
            raise BadInputError(
                "recipe", "model.grow_layers deepens a trained `base`", "set scratch.num_layers instead"
            )
        if self.mixture_draws < 1:
            raise BadInputError("recipe", f"mixture_draws must be >= 1, got {self.mixture_draws}")
        if self.optim.schedule_clock not in SCHEDULE_CLOCKS:
            raise BadInputError(
                "recipe",
                f"optim.schedule_clock must be one of {SCHEDULE_CLOCKS}, got {self.optim.schedule_clock!r}",
            )
        if self.optim.schedule_clock == "wall_time" and not self.max_train_minutes:
            raise BadInputError(
                "recipe",
                "optim.schedule_clock: wall_time runs over max_train_minutes",
                "set max_train_minutes",
            )
        # Checked here, not when training starts: before that come minutes of data building.
        if self.optim.schedule_clock == "wall_time" and self.optim.lr_scheduler not in WALL_TIME_SCHEDULERS:
            raise BadInputError(
                "recipe",
                f"lr_scheduler {self.optim.lr_scheduler!r} has no wall-time form",
                f"use one of {WALL_TIME_SCHEDULERS}, or schedule_clock: steps",
            )
        if not isinstance(self.fsdp, bool):  # the string form ("full_shard auto_wrap") is deprecated
            raise BadInputError(
                "recipe", f"fsdp is true or false, got {self.fsdp!r}", "put FSDP's options in fsdp_config"
            )
        # The DeepSpeed file is read here where it can be found (paths are relative to where
        # `llmcxr train` runs); training checks again before it starts.
        if self.deepspeed is None or Path(self.deepspeed).is_file():
            check_sharding(self.deepspeed, self.fsdp, self.lora.enabled)
        for name in ("unconditional_fraction", "unconditional_report_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise BadInputError("recipe", f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.prompt_layout not in ("llmcxr", "official", "chat"):  # llmcxr.model.vocab.PROMPT_LAYOUTS
            raise BadInputError(
                "recipe", f"prompt_layout must be llmcxr, official or chat, got {self.prompt_layout!r}"
            )
        if self.prompt_layout == "official" and self.image_row_markers:
            raise BadInputError("recipe", "the official prompt layout has no image row markers")
