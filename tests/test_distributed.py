"""Two CPU processes over gloo (torchrun) train as one process does with the same global batch:
DDP, LoRA + DDP, DeepSpeed ZeRO-3 (from scratch and from a pretrained base) and FSDP2. Each run:
the same losses as one process, identical weights on both ranks, an export that loads, and a killed
run that resumes to the same weights. Recipes that would train and then fail are refused up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _tiny_lm import plain_base, rank_hashes, run_losses, tiny_run_recipe, torchrun_command, write_world
from llmcxr.errors import BadInputError
from llmcxr.training import LoraSpec, ModelSpec, TrainRecipe, train_recipe

ROOT = Path(__file__).resolve().parents[1]
ZERO3 = ROOT / "recipes" / "distributed" / "zero3.json"
FSDP = ROOT / "recipes" / "distributed" / "fsdp.json"
STEPS = 3  # 15 packed rows: three full global batches of 4


def _recipe(root: Path, per_device: int, **fields) -> TrainRecipe:
    write_world(root.parent / "world", n=16)
    return tiny_run_recipe(root, root.parent / "world", per_device, STEPS, **fields)


def _torchrun(recipe: TrainRecipe, *options: str) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path]),
    }
    done = subprocess.run(
        torchrun_command(recipe, *options), env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def _hashes(run: Path) -> list[str]:
    return sorted(rank_hashes(run))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()


MODES = {
    "ddp": {},
    "lora_ddp": {"lora": LoraSpec(enabled=True, r=4, alpha=8, dropout=0.0)},
    "zero3": {"deepspeed": ZERO3},
    "zero3_pretrained_base": {"deepspeed": ZERO3},
    "fsdp2": {"fsdp": True, "fsdp_config": FSDP},
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_two_processes_train_as_one_process_with_the_same_global_batch(tmp_path: Path, mode: str) -> None:
    from llmcxr.generation import LLMCXR
    from llmcxr.training.export import weights_sha256

    if mode.startswith("zero3"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is the `distributed` extra")
    fields = dict(MODES[mode])
    if mode == "zero3_pretrained_base":
        fields["model"] = ModelSpec(base=plain_base(tmp_path / "base"))
    reference_fields = {k: v for k, v in fields.items() if k in ("lora", "model")}
    one = _recipe(tmp_path / "one", per_device=4, **reference_fields)
    train_recipe(one, print_logs=False)
    two = _recipe(tmp_path / "two", per_device=2, **fields)
    _torchrun(two)

    assert run_losses(two.output_dir) == pytest.approx(run_losses(one.output_dir), rel=1e-5)
    hashes = _hashes(two.output_dir)
    assert hashes[0] == hashes[1]  # both ranks hold the same (whole) weights
    export = two.output_dir / "model"
    exported, reference = _weights(export), _weights(one.output_dir / "model")
    assert exported.keys() == reference.keys()
    assert max(float((exported[k] - reference[k]).abs().max()) for k in exported) < 1e-4
    if mode != "lora_ddp":  # the hash is of the trained weights, the export of them merged
        from transformers import AutoModelForCausalLM

        assert weights_sha256(AutoModelForCausalLM.from_pretrained(export)) == hashes[0]
    assert LLMCXR.from_pretrained(export, device="cpu").image_tokens.tokens_per_image == 64
    history = json.loads((two.output_dir / "train_log.json").read_text())["log_history"]
    last = [e for e in history if e.get("step") == STEPS and "eval_text_loss" in e]
    assert len(last) == 1  # the final evaluation runs once
    if mode.startswith("zero3"):  # DeepSpeed ran: its engine's own checkpoint folder
        assert (two.output_dir / f"checkpoint-{STEPS}" / f"global_step{STEPS}").is_dir()
    if mode == "fsdp2":  # it sharded (accelerate alone falls back to DDP on CPU): FSDP's own checkpoint
        assert (two.output_dir / f"checkpoint-{STEPS}" / "pytorch_model_fsdp.bin").is_file()

    if mode == "zero3_pretrained_base":
        return  # resume is the same as from scratch
    killed = _recipe(tmp_path / "killed", per_device=2, **fields)
    _torchrun(killed, "--stop-after", "2")
    assert (killed.output_dir / "checkpoint-2").is_dir()
    assert not (killed.output_dir / f"checkpoint-{STEPS}").exists()
    _torchrun(killed, "--resume")
    assert _hashes(killed.output_dir) == hashes  # bit-exact


def test_recipes_that_would_train_and_then_fail_are_refused(tmp_path: Path) -> None:
    lora = LoraSpec(enabled=True)
    with pytest.raises(BadInputError, match="LoRA with DeepSpeed ZeRO-3"):
        _recipe(tmp_path / "a", 2, lora=lora, deepspeed=ZERO3)
    with pytest.raises(BadInputError, match="LoRA with FSDP"):
        _recipe(tmp_path / "b", 2, lora=lora, fsdp=True, fsdp_config=FSDP)
    with_schedule = tmp_path / "zero3-scheduler.json"
    with_schedule.write_text(
        json.dumps({**json.loads(ZERO3.read_text()), "scheduler": {"type": "WarmupDecayLR", "params": {}}})
    )
    with pytest.raises(BadInputError, match="replace the recipe's learning-rate schedule"):
        _recipe(tmp_path / "c", 2, deepspeed=with_schedule)
    with pytest.raises(BadInputError, match="fsdp is true or false"):
        _recipe(tmp_path / "d", 2, fsdp="full_shard auto_wrap")
    with pytest.raises(BadInputError, match="both `deepspeed` and `fsdp`"):
        _recipe(tmp_path / "e", 2, deepspeed=ZERO3, fsdp=True)
