"""Several processes: what DeepSpeed ZeRO-3 and FSDP2 need beyond the Hugging Face Trainer.

Checked before a run starts (a DeepSpeed config that would silently change the recipe's schedule,
combinations that cannot export), the process group DeepSpeed needs before a sharded base loads, FSDP2
on CPU processes (accelerate would silently fall back to DDP there), and the full weights of a sharded
model read tensor by tensor on every rank (for the weight hash).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from llmcxr.errors import BadInputError


def deepspeed_config(path: Path) -> dict:
    """The DeepSpeed JSON a recipe names; BadInputError where it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(
            path, "DeepSpeed config not found", "point `deepspeed` at recipes/distributed/zero3.json"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadInputError(path, f"not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise BadInputError(path, "a DeepSpeed config is a JSON object")
    return config


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def check_sharding(deepspeed: Path | None, fsdp: bool, lora: bool) -> None:
    """Refuse what trains and then cannot export, or trains to another recipe than the one written.

    - A ``scheduler`` block in the DeepSpeed config replaces the recipe's learning-rate schedule
      (measured: ZeRO-3 losses left DDP's from step 3, 7.896 vs 7.572; without it they agree to 1e-5).
    - LoRA under ZeRO-3 or FSDP: the frozen base is sharded, and the export merges the adapters on one
      process, which then holds empty shards (``merge_and_unload`` failed on shape-(0,) weights).
      A LoRA model's base fits one device: DDP (plain torchrun) is the way to run it on several.
    """
    if deepspeed is not None and fsdp:
        raise BadInputError("recipe", "both `deepspeed` and `fsdp` are set", "choose one")
    if lora and fsdp:
        raise BadInputError(
            "recipe",
            "LoRA with FSDP cannot merge its adapters at export",
            "run LoRA with DDP: leave fsdp out",
        )
    if deepspeed is None:
        return
    config = deepspeed_config(deepspeed)
    if "scheduler" in config:
        raise BadInputError(
            deepspeed,
            "has a `scheduler` block: it would replace the recipe's learning-rate schedule",
            "remove the block; optim.lr_scheduler and optim.warmup_steps set the schedule",
        )
    if lora and zero_stage(config) == 3:
        raise BadInputError(
            "recipe",
            "LoRA with DeepSpeed ZeRO-3 cannot merge its adapters at export (the base is sharded)",
            "run LoRA with DDP (torchrun without `deepspeed`), or use ZeRO stage 1 or 2",
        )


def init_deepspeed_processes(deepspeed: Path | None) -> None:
    """On CPU, start DeepSpeed's process group (gloo) before the model loads.

    Under ZeRO-3 ``from_pretrained`` shards the base as it loads and checks the batch sizes against
    the number of processes; on GPUs the Trainer has started the group by then, on CPU it has not
    (``train_batch_size ... 4 != 2 * 1 * 1``). Only under a launcher (torchrun sets RANK).
    """
    if deepspeed is None or torch.cuda.is_available() or "RANK" not in os.environ:
        return
    import deepspeed as ds

    ds.init_distributed(dist_backend="gloo")


def shard_fsdp_on_cpu(trainer) -> None:
    """Make the Trainer shard with FSDP2 on CPU processes (gloo), as it does on GPUs.

    accelerate enables FSDP for accelerator devices only: on CPU it wraps the model in DDP and says
    nothing, so an FSDP recipe would never have run FSDP before reaching a GPU. torch's
    ``fully_shard`` itself runs on CPU tensors over gloo.
    """
    from accelerate import FullyShardedDataParallelPlugin, PartialState
    from accelerate.utils import DistributedType

    state = trainer.accelerator.state
    if trainer.args.fsdp_plugin_args is None or trainer.is_fsdp_enabled or state.num_processes < 2:
        return
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    # Both states: a later AcceleratorState() copies the process state's type over its own.
    state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    # torch's full state dict of CPU shards refers to all-gather buffers that are freed as soon as
    # each parameter is resharded (on GPUs it is copied to the host first): saving it then fails
    # ("invalid python storage"). Gathered here tensor by tensor instead, kept by the main process.
    accelerator = trainer.accelerator
    accelerator.get_state_dict = lambda model, unwrap=True: {
        name: tensor.clone()
        for name, tensor in full_tensors(accelerator.unwrap_model(model))
        if accelerator.is_main_process
    }


def full_tensors(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every entry of ``model.state_dict()``, in name order, on every rank.

    A ZeRO-3 parameter holds an empty shape-(0,) stub between steps and an FSDP2 one a DTensor shard:
    each is gathered in full (a collective: every rank must iterate), one tensor at a time, so no rank
    ever holds more than one whole tensor beyond its shards.
    """
    from torch.distributed.tensor import DTensor

    for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
        if hasattr(tensor, "ds_id"):  # a ZeRO-3 partitioned parameter
            import deepspeed

            with deepspeed.zero.GatheredParameters([tensor]):
                full = tensor.detach().clone()
            yield name, full
        elif isinstance(tensor, DTensor):
            yield name, tensor.full_tensor().detach()
        else:
            yield name, tensor.detach()
