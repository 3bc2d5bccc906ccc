"""`llmcxr report | image | ask | chat`: generation from a trained model folder (``llmcxr.generation``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmcxr.errors import BadInputError

console = Console()

MODEL = typer.Option(
    None,
    "--model",
    "-m",
    help="Model folder written by `llmcxr train` (default: the shipped model, checkpoints/llmcxr-tiny "
    "of this clone, trained on synthetic 64 px CXRs only; for chat, checkpoints/llmcxr-smol once its "
    "base is fetched: `llmcxr base fetch smollm2-135m-instruct`).",
    show_default=False,
)
JSON = typer.Option(False, "--json", help="Print one JSON object per result instead of text.")
DEVICE = typer.Option(None, help="torch device (default: cuda if present, else cpu).")
DTYPE = typer.Option("auto", help="auto (bf16 where the hardware is fast at it), fp32, bf16 or fp16.")
GREEDY = typer.Option(False, "--greedy", help="Greedy decoding instead of top-p sampling.")
SEED = typer.Option(0, help="Sampling seed of the first result (result i uses seed + i).")
TOP_P = typer.Option(None, help="Nucleus sampling mass (default: the model folder's; LLM-CXR: 0.92).")
TEMPERATURE = typer.Option(None, help="Sampling temperature (default: the model folder's, 1 unless it says).")
MAX_NEW_TOKENS = typer.Option(256, help="Longest text reply in tokens.")
BATCH_SIZE = typer.Option(16, help="Inputs per forward pass.")
THREADS = typer.Option(
    0, help="CPU threads for torch (0 = auto: 1 for a model under 50 M parameters, else torch's default)."
)
err_console = Console(stderr=True, soft_wrap=True)


def _load(model: Path | None, device: str | None, dtype: str, threads: int, task: str | None = None):
    import torch

    from llmcxr.generation import LLMCXR, default_cpu_threads
    from llmcxr.model.folder import model_or_shipped

    dtypes = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in dtypes:
        raise typer.BadParameter(f"--dtype must be one of {list(dtypes)}")
    folder = model_or_shipped(model, task)
    with console.status(f"loading {folder}"):
        llm = LLMCXR.from_pretrained(folder, device=device, dtype=dtypes[dtype])
    chosen = threads if threads > 0 else default_cpu_threads(llm.model)
    if chosen:
        torch.set_num_threads(chosen)
    if note := _synthetic_note(llm):
        err_console.print(f"[bold yellow]note:[/] {note}", highlight=False)
    return llm


def _synthetic_note(llm) -> str | None:
    """Said once on stderr and in every --json row: what the model has (not) seen."""
    if not llm.synthetic_only:
        return None
    return (
        f"{llm.folder.name} was trained only on synthetic CXRs (llmcxr.synth); what it writes or draws "
        "for a real chest X-ray is not a medical reading"
    )


def _sampling(
    llm, greedy: bool, seed: int, top_p: float | None, temperature: float | None, max_new_tokens: int
):
    """The model folder's recommended sampling (``llm.default_sampling()``) with what the user gave."""
    from dataclasses import replace

    sampling = replace(llm.default_sampling(), max_new_tokens=max_new_tokens, seed=seed)
    if greedy:
        sampling = replace(sampling, do_sample=False)
    if top_p is not None:
        sampling = replace(sampling, top_p=top_p)
    if temperature is not None:
        sampling = replace(sampling, temperature=temperature)
    return sampling


def _check_images(images: list[Path]) -> None:
    """Fail on a missing file or a folder before the model loads (the loader checks the contents later)."""
    from llmcxr.imaging import check_image_path

    for image in images:
        check_image_path(image)


def _readable(images: list[Path], size: int) -> tuple[list[int], dict[int, str]]:
    """(positions of the images that load, {position: problem} of those that do not): one bad file
    in a batch costs its own report only (the loader's checks, as the model will read it)."""
    from llmcxr.imaging import load_image

    good, failed = [], {}
    for position, image in enumerate(images):
        try:
            load_image(image, draft_side=2 * size)
            good.append(position)
        except BadInputError as err:
            failed[position] = str(err)
    return good, failed


def _runs(positions: list[int]) -> list[list[int]]:
    """Consecutive positions grouped ([0, 1, 3] -> [[0, 1], [3]]), so input i keeps seed + i."""
    runs: list[list[int]] = []
    for position in positions:
        if runs and runs[-1][-1] == position - 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    return runs


@contextmanager
def _progress(total: int, label: str, show: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar over ``total`` inputs (only for more than one input and without --json)."""
    if not show or total <= 1:
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.advance(task, done)


def _print_text(results, sources: list[str], as_json: bool, note: str | None = None) -> None:
    """Each result (a TextResult, or the problem of an input that failed) in input order."""
    for source, result in zip(sources, results, strict=True):
        if isinstance(result, str):
            if as_json:
                typer.echo(json.dumps({"source": source, "error": result}))
            continue  # said on stderr when it was found
        if as_json:
            row = {"source": source, "text": result.text, "stopped": result.stopped, "tokens": result.tokens}
            if result.candidates > 1:
                row |= {"candidates": result.candidates, "image_log_likelihood": result.image_log_likelihood}
            row["seconds"] = round(result.timings.total_s / result.timings.batch_size, 4)
            if note:
                row["model_note"] = note
            typer.echo(json.dumps(row))
        elif len(sources) > 1:
            console.print(f"[bold]{source}[/]", highlight=False)
            console.print(result.text, highlight=False, markup=False)
        else:
            console.print(result.text, highlight=False, markup=False)


def report(
    images: list[Path] = typer.Argument(..., help="Chest X-ray files (PNG, JPEG, DICOM, .npy)."),
    model: Path | None = MODEL,
    instruction: str | None = typer.Option(
        None, help="Instruction text (default: the model folder's, else the first training phrasing)."
    ),
    as_json: bool = JSON,
    device: str | None = DEVICE,
    dtype: str = DTYPE,
    threads: int = THREADS,
    greedy: bool = GREEDY,
    seed: int = SEED,
    top_p: float = TOP_P,
    temperature: float = TEMPERATURE,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = BATCH_SIZE,
    guidance_scale: float | None = typer.Option(
        None,
        "--guidance-scale",
        help="Classifier-free guidance against no image (default: the model folder's; 1 = none; needs a "
        "model trained with unconditional_report_fraction > 0).",
    ),
    candidates: int = typer.Option(
        1,
        help="Keep the best of this many sampled drafts per image: the one under which the model finds "
        "the image most likely.",
    ),
) -> None:
    """Write a radiology report for each chest X-ray. A file that cannot be read is reported (an
    ``error`` row with --json) and skipped; the others are written; the exit code is then 2."""
    import dataclasses

    llm = _load(model, device, dtype, threads)
    size = llm.vq.cfg.resolution if llm.vq is not None else 256
    good, failed = _readable(list(images), size)
    for problem in failed.values():
        err_console.print(f"[bold red]error:[/] {problem}", highlight=False)
    sampling = _sampling(llm, greedy, seed, top_p, temperature, max_new_tokens)
    results: list = [failed.get(i) for i in range(len(images))]
    with _progress(len(good), "reports", not as_json) as progress:
        for run in _runs(good):
            drafts = llm.report(
                [images[i] for i in run],
                instruction,
                dataclasses.replace(sampling, seed=seed + run[0]),
                batch_size,
                progress,
                guidance_scale,
                candidates,
            )
            for i, result in zip(run, drafts, strict=True):
                results[i] = result
    _print_text(results, [str(p) for p in images], as_json, _synthetic_note(llm))
    if failed:
        err_console.print(
            f"[bold red]{len(failed)} of {len(images)} images failed[/] (above); {len(good)} reported",
            highlight=False,
        )
        raise typer.Exit(2)


def ask(
    image: Path = typer.Argument(..., help="Chest X-ray file."),
    question: str = typer.Argument(..., help="Question about the image."),
    model: Path | None = MODEL,
    as_json: bool = JSON,
    device: str | None = DEVICE,
    dtype: str = DTYPE,
    threads: int = THREADS,
    greedy: bool = GREEDY,
    seed: int = SEED,
    top_p: float = TOP_P,
    temperature: float = TEMPERATURE,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> None:
    """Answer a question about a chest X-ray (VQA)."""
    _check_images([image])
    if not question.strip():
        raise BadInputError("QUESTION", "is empty", "ask a question about the image")
    llm = _load(model, device, dtype, threads)
    result = llm.answer(image, question, _sampling(llm, greedy, seed, top_p, temperature, max_new_tokens))
    _print_text([result], [str(image)], as_json, _synthetic_note(llm))


def chat(
    instruction: str = typer.Argument(..., help="Instruction or question."),
    input: str | None = typer.Option(None, "--input", help="Optional context (Dolly `Input:`)."),
    model: Path | None = MODEL,
    as_json: bool = JSON,
    device: str | None = DEVICE,
    dtype: str = DTYPE,
    threads: int = THREADS,
    greedy: bool = GREEDY,
    seed: int = SEED,
    top_p: float = TOP_P,
    temperature: float = TEMPERATURE,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> None:
    """Follow a text instruction (the model never answers with image tokens here)."""
    if not instruction.strip():
        raise BadInputError("INSTRUCTION", "is empty", "give an instruction or a question")
    llm = _load(model, device, dtype, threads, task="chat")
    result = llm.chat(instruction, input, _sampling(llm, greedy, seed, top_p, temperature, max_new_tokens))
    _print_text([result], ["chat"], as_json, _synthetic_note(llm))


def _output_paths(out: Path, n: int) -> list[Path]:
    """``out`` for one image; ``stem-0.png .. stem-{n-1}.png`` beside it for several."""
    from PIL import Image

    if out.suffix.lower() not in Image.registered_extensions():
        raise BadInputError(out, f"unknown image file extension {out.suffix!r}", "use .png or .jpg")
    return [out] if n == 1 else [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(n)]


def image(
    report_text: str = typer.Argument(..., metavar="REPORT", help="Radiology report to draw."),
    model: Path | None = MODEL,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output image (.png); several: stem-0.png, stem-1.png..."
    ),
    n: int = typer.Option(1, "--n", help="Images to draw for the report."),
    guidance_scale: float | None = typer.Option(
        None, help="Classifier-free guidance scale (default: the model folder's; 1 = none)."
    ),
    candidates: int = typer.Option(
        1,
        help="Keep the best of this many draws per image: the one whose report the model reads back most likely.",
    ),
    as_json: bool = JSON,
    device: str | None = DEVICE,
    dtype: str = DTYPE,
    threads: int = THREADS,
    greedy: bool = GREEDY,
    seed: int = SEED,
    top_p: float = TOP_P,
    temperature: float = TEMPERATURE,
    batch_size: int = BATCH_SIZE,
) -> None:
    """Draw chest X-rays for a report: always exactly one VQ-GAN grid of image tokens each."""
    from PIL import Image

    from llmcxr import atomic

    if not report_text.strip():
        raise BadInputError(
            "REPORT", "is empty", "give the report to draw (the model draws no image for no text)"
        )
    paths = _output_paths(out, n)
    llm = _load(model, device, dtype, threads)
    note = _synthetic_note(llm)
    sampling = _sampling(llm, greedy, seed, top_p, temperature, 256)
    with _progress(n, "images", not as_json) as progress:
        results = llm.generate_image(
            [report_text],
            guidance_scale,
            n,
            seed,
            sampling,
            batch_size=batch_size,
            progress=progress,
            candidates=candidates,
        )
    fmt = Image.registered_extensions()[out.suffix.lower()]
    for path, result in zip(paths, results, strict=True):
        with atomic.atomic_path(path) as tmp:
            result.image.save(tmp, format=fmt)
        if as_json:
            row = {"path": str(path), "seed": result.seed, "guidance_scale": result.guidance_scale}
            row |= {"candidates": candidates, "report_log_likelihood": result.report_log_likelihood}
            row["image_tokens"] = result.image_tokens.tolist()
            if note:
                row["model_note"] = note
            typer.echo(json.dumps(row))
        else:
            console.print(f"wrote {path} (seed {result.seed})", highlight=False)
