"""Copy a trained model folder to checkpoints/llmcxr-tiny with its record (SHIPPED.json) and README.

    python tools/ship.py --run runs/e6/lm2 --recipe experiments/tiny-synth-stages/recipes/tiny-synth.yaml

Everything in the record is read from the run: parameters, steps and minutes from ``train_log.json``,
training images from the recipe's data sources (train split), sha256 of both weight files. A run that
continued another model (the recipe's ``model.base`` is an exported model folder) lists the whole chain
under ``stages``, oldest first; steps and minutes are the chain's totals (a stage cut at a checkpoint,
``stopped_at_step`` in its folder's ``llmcxr_train.json``, counts its minutes pro rata). A stage whose run
folder is gone but whose model was shipped before (restored from git into ``RUN/model``) brings the chain
of its ``SHIPPED.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from llmcxr.config import load_config
from llmcxr.model import RECOMMENDED_FILE
from llmcxr.training import TrainRecipe
from llmcxr.training.sources import read_source

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "llmcxr-tiny"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_summary(output_dir: Path) -> dict:
    """The trainer's closing log entry (steps, runtime) of a run folder."""
    log = json.loads((output_dir / "train_log.json").read_text())
    return next(e for e in log["log_history"] if "train_runtime" in e)


def stage(output_dir: str, steps: int | None, base: str | None) -> dict:
    """One training stage: the run, the steps its weights reached and their minutes."""
    summary = run_summary(Path(output_dir))
    steps = steps or summary["step"]
    minutes = summary["train_runtime"] / 60 * steps / summary["step"]
    return {"run": output_dir, "steps": steps, "minutes": round(minutes, 1), "continued_from": base}


def training_chain(recipe: TrainRecipe, run: Path) -> list[dict]:
    """This run and the runs whose exported models it continued from (``model.base``), oldest first."""
    chain = [stage(str(run), None, str(recipe.model.base) if recipe.model.base else None)]
    base = recipe.model.base
    pretraining = Path(base) / "block_summary_pretraining.json" if base is not None else None
    if (
        pretraining is not None and pretraining.is_file()
    ):  # experiments/tiny-synth-stages/pretrain_block_summary.py made the base
        record = json.loads(pretraining.read_text())
        chain.append(
            {
                "run": str(base),
                "steps": 0,
                "minutes": round(record["wall_s"] / 60, 1),
                "what": record["command"],
            }
        )
    while base is not None and (Path(base) / "llmcxr_train.json").is_file():
        earlier = json.loads((Path(base) / "llmcxr_train.json").read_text())
        run_folder = Path(earlier["output_dir"])
        shipped = run_folder / "model" / "SHIPPED.json"
        if not (run_folder / "train_log.json").is_file() and shipped.is_file():
            # a model restored from an earlier ship (git history) without its run: its record has the chain
            chain.extend(json.loads(shipped.read_text())["stages"][::-1])
            break
        parent = earlier["model"].get("base")
        chain.append(stage(earlier["output_dir"], earlier.get("stopped_at_step"), parent))
        base = parent
    return chain[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the recipe's output_dir (has model/)")
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=SHIPPED)
    args = parser.parse_args()

    log = json.loads((args.run / "train_log.json").read_text())
    summary = run_summary(args.run)
    recipe = load_config(TrainRecipe, args.recipe)
    chain = training_chain(recipe, args.run)
    train_images = sum(
        1 for source in recipe.data for record in read_source(source) if record.split == "train"
    )
    # the settings an earlier evaluation chose (llmcxr_generation.json) stay until a new one chooses
    recommended = args.out / RECOMMENDED_FILE
    kept = recommended.read_bytes() if recommended.is_file() else None
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.run / "model", args.out)
    if kept is not None and not recommended.exists():
        recommended.write_bytes(kept)
    about = {
        "parameters": log["num_parameters"],
        "train_steps": sum(s["steps"] for s in chain),
        "train_minutes": round(sum(s["minutes"] for s in chain), 1),
        "recipe": str(args.recipe),
        "train_images": train_images,
        "how": f"the final step ({summary['step']}) of `llmcxr train --config {args.recipe}`"
        + (f", the last of {len(chain)} stages (`stages`)" if len(chain) > 1 else ""),
        "stages": chain,
        "model_sha256": sha256(args.out / "model.safetensors"),
        "vq_sha256": sha256(args.out / "vq" / "vqgan.safetensors"),
    }
    (args.out / "SHIPPED.json").write_text(json.dumps(about, indent=2) + "\n")
    (args.out / "README.md").write_text(
        f"""# llmcxr-tiny: the shipped demo model

A {about["parameters"]:,}-parameter GPT-NeoX trained from scratch by the project on synthetic 64 px chest
X-rays (template reports), with its image tokenizer in `vq/` (8x8 = 64 tokens, 512 codes). It is what
`llmcxr demo` and the examples of `llmcxr serve` use by default. Not a clinical model: it has seen only
the project's synthetic world.

- Recipe: `{args.recipe}`; its header lists every command that rebuilds this folder from nothing
  ({about["train_minutes"]:.0f} minutes of LM training in {len(chain)} stage(s) on the shared 2-core
  CPU, plus 8-25 minutes per tokenizer stage), ending with `python tools/ship.py`, which wrote this
  README and `SHIPPED.json`.
- Which weights: {about["how"]}, {about["train_images"]} training images (`SHIPPED.json`, with the
  sha256 of both weight files; a test checks them).
- How good: `python benchmarks/eval_tiny.py` -> `benchmarks/results/eval_tiny.json` (synthetic test split,
  beside the baselines); `docs/evaluation.md`.
- Load: `llmcxr.generation.LLMCXR.from_pretrained("checkpoints/llmcxr-tiny")`; plain safetensors, no pickles.
"""
    )
    print(json.dumps(about, indent=2))


if __name__ == "__main__":
    main()
