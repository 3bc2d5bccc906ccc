"""One rank of a multi-process training run for tests/test_distributed.py and benchmarks/distributed.py
(started by torchrun):

    torchrun --nproc-per-node 2 tests/_train_ranks.py RECIPE [--resume] [--stop-after N] [--keep-shm]

``--stop-after N`` ends training right after the checkpoint of step N, as a kill there would.
``--keep-shm`` lets DeepSpeed build its shared-memory allreduce op (the benchmark's cold start).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--keep-shm", action="store_true")
    args = parser.parse_args()
    try:  # DeepSpeed's shared-memory allreduce kernel compiles for ~2 minutes on first use on CPU;
        # without it DeepSpeed reduces over gloo, as plain torch.distributed does.
        import deepspeed.comm.torch

        if not args.keep_shm:
            deepspeed.comm.torch.build_shm_op = lambda: None
    except ImportError:
        pass
    from _tiny_lm import StopAfterCheckpoint  # this script's folder is on sys.path
    from llmcxr.config import load_config
    from llmcxr.training import TrainRecipe, train_recipe

    recipe = load_config(TrainRecipe, args.recipe)
    callbacks = [StopAfterCheckpoint(args.stop_after)] if args.stop_after else []
    train_recipe(recipe, resume=args.resume, callbacks=callbacks, print_logs=False)


if __name__ == "__main__":
    sys.exit(main())
