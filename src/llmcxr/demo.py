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

import base64
import dataclasses
import html
import io
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
from llmcxr.errors import BadInputError
from llmcxr.records import CXRRecord

REPO = (
    Path(llmcxr.__file__).resolve().parents[2]
)  # src/llmcxr/__init__.py -> the repository (editable install)
VQ_FOLDER = REPO / "checkpoints" / "vq-tiny"
SHIPPED_MODEL = REPO / "checkpoints" / "llmcxr-tiny"
SHIPPED_WORLD_SEED = (
    10_000  # + --seed: the shipped model was trained on the seed-0 world; these images are new
)
SHIPPED_WORLD_IMAGES = 40  # enough for a test split to show examples from
RECIPE = REPO / "recipes" / "tiny-cpu.yaml"
SIZE = 64  # px: the tiny VQ-GAN's resolution
EXAMPLES = 2  # test records shown per task
CHAT_INSTRUCTIONS = ["What is a chest X-ray used for?", "Name one sign of heart failure on a chest X-ray."]
# Seconds per training step (4 packed rows x 512 tokens, fp32, one thread), measured on this 2-core
# CPU by the demo itself (150 steps in 115 s, docs/demo.md); sets max_steps so the cosine schedule ends near the cap.
SECONDS_PER_STEP = 0.8
VIEW_SCALE = 4  # 64 px -> 256 px on the page, nearest neighbour so the model's pixels stay visible


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
) -> dict[str, Any]:
    """All four tasks on ``records``; returns what was generated, with PIL images kept for the page."""
    from llmcxr.generation import LLMCXR, SamplingConfig

    model = LLMCXR.from_pretrained(model_dir, device="cpu", dtype=torch.float32)  # fp32: see default_dtype
    text = SamplingConfig(max_new_tokens=120, seed=seed)
    images = [Image.open(r.image_path).convert("L") for r in records]
    bar = progress.add_task("run the four tasks", total=4 * len(records))

    def step(done: int) -> None:
        progress.advance(bar, done)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    reports = model.report([r.image_path for r in records], sampling=text, progress=step)
    timings["report_s"] = time.perf_counter() - start
    start = time.perf_counter()
    # Greedy: after a few minutes of training, sampled image tokens decode to blobs, while the most
    # likely tokens already draw two lungs and a heart (looked at on this CPU's demo model).
    greedy = SamplingConfig(do_sample=False)
    drawn = model.generate_image(
        [r.report for r in records], guidance_scale=image_guidance, sampling=greedy, progress=step
    )
    timings["image_s"] = time.perf_counter() - start
    start = time.perf_counter()
    questions = [r.qa[0] for r in records]
    answers = model.answer(
        [r.image_path for r in records], [q.question for q in questions], text, progress=step
    )
    timings["vqa_s"] = time.perf_counter() - start
    start = time.perf_counter()
    chats = model.chat(CHAT_INSTRUCTIONS[: len(records)], sampling=text, progress=step)
    timings["chat_s"] = time.perf_counter() - start
    return {
        "report": [
            {"image_id": r.image_id, "image": im, "generated": g.text, "reference": r.report}
            for r, im, g in zip(records, images, reports, strict=True)
        ],
        "image": [
            {
                "image_id": r.image_id,
                "report": r.report,
                "generated": g.image,
                "guidance_scale": g.guidance_scale,
                "reference": im,
            }
            for r, im, g in zip(records, images, drawn, strict=True)
        ],
        "vqa": [
            {
                "image_id": r.image_id,
                "image": im,
                "question": q.question,
                "generated": a.text,
                "reference": q.answer,
            }
            for r, im, q, a in zip(records, images, questions, answers, strict=True)
        ],
        "chat": [
            {"instruction": i, "generated": c.text} for i, c in zip(CHAT_INSTRUCTIONS, chats, strict=False)
        ],
        "timings": timings,
    }


# --- the page -----------------------------------------------------------------------------------


def png_data_uri(image: Image.Image) -> str:
    """A base64 PNG, upscaled with nearest neighbour for viewing."""
    big = image.resize((image.width * VIEW_SCALE, image.height * VIEW_SCALE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure(image: Image.Image, caption: str) -> str:
    return f'<figure><img src="{png_data_uri(image)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def text_block(label: str, text: str) -> str:
    return f"<p><b>{html.escape(label)}</b><br>{html.escape(text) or '<i>(empty)</i>'}</p>"


STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
section{border-top:2px solid #ccc;margin-top:2em}.row{display:flex;gap:1.5em;margin:1em 0;align-items:flex-start}
figure{margin:0;text-align:center}img{image-rendering:pixelated;border:1px solid #999}.text{flex:1}
.note{background:#fff6d5;padding:.6em 1em}"""


def render_page(results: dict[str, Any], summary: dict[str, Any]) -> str:
    sections = []
    rows = [
        f'<div class="row">{figure(e["image"], "input CXR " + e["image_id"])}<div class="text">'
        f"{text_block('Generated report', e['generated'])}{text_block('Reference report', e['reference'])}</div></div>"
        for e in results["report"]
    ]
    sections.append(("CXR &rarr; report", rows))
    rows = [
        f'<div class="row"><div class="text">{text_block("Report", e["report"])}</div>'
        f"{figure(e['generated'], 'generated CXR (guidance {:g})'.format(e['guidance_scale']))}"
        f"{figure(e['reference'], 'reference ' + e['image_id'])}</div>"
        for e in results["image"]
    ]
    sections.append(("Report &rarr; CXR", rows))
    rows = [
        f'<div class="row">{figure(e["image"], "CXR " + e["image_id"])}<div class="text">'
        f"{text_block('Question', e['question'])}{text_block('Answer', e['generated'])}"
        f"{text_block('Reference answer', e['reference'])}</div></div>"
        for e in results["vqa"]
    ]
    sections.append(("Visual question answering", rows))
    rows = [
        f'<div class="row"><div class="text">{text_block("Instruction", e["instruction"])}'
        f"{text_block('Response', e['generated'])}</div></div>"
        for e in results["chat"]
    ]
    sections.append(("Text instruction", rows))
    body = "".join(f"<section><h2>{title}</h2>{''.join(rows)}</section>" for title, rows in sections)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings_s"].items())
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>llmcxr demo</title><style>{STYLE}</style>"
        f"</head><body><h1>llmcxr demo</h1><p class='note'>Model: {html.escape(summary['about'])}</p>"
        f"<p>Stages: {html.escape(stages)}.</p>{body}</body></html>"
    )


def json_summary(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` without the PIL images (the page has them)."""
    return {
        task: [{k: v for k, v in e.items() if not isinstance(v, Image.Image)} for e in results[task]]
        for task in ("report", "image", "vqa", "chat")
    }


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
) -> Path:
    """Build a world, get a model (the shipped one, or train with ``train=True``) and run the four
    tasks under ``out_dir``; returns the HTML page's path."""
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
        results = run_tasks(model_dir, shown_records(world), seed, bars, None)
        timings["generate"] = time.perf_counter() - start

    summary.update(
        {
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
