"""Instruction tuning: recipes, the task mixture, packing, and the one training loop."""

from llmcxr.training.config import DataSource, LoraSpec, Mixture, ModelSpec, OptimSpec, TrainRecipe
from llmcxr.training.packing import PackedRow, RowCollator, pack_examples, single_rows
from llmcxr.training.tasks import SampleCounts, TaskSample, encode_samples, mix_tasks, select_stage
from llmcxr.training.trainer import train as train_recipe

__all__ = [
    "DataSource",
    "LoraSpec",
    "Mixture",
    "ModelSpec",
    "OptimSpec",
    "PackedRow",
    "RowCollator",
    "SampleCounts",
    "TaskSample",
    "TrainRecipe",
    "encode_samples",
    "mix_tasks",
    "pack_examples",
    "select_stage",
    "single_rows",
    "train_recipe",
]
