"""`llmcxr data ...` commands."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


# --- synth (synth engineer). Imports are local: `llmcxr --help` stays fast. ---


@app.command("synth")
def synth(
    out: Path = typer.Option(
        ..., "--out", help="Folder for the world (created, or resumed with the same arguments)."
    ),
    n: int = typer.Option(1000, "--n", help="Number of images."),
    size: int = typer.Option(256, "--size", help="Image side in pixels (64..512)."),
    seed: int = typer.Option(0, "--seed", help="World seed: same seed and arguments, same bytes."),
    balance: bool = typer.Option(
        False, "--balance", help="Make every drawable finding (and normal) equally likely."
    ),
    reports: str = typer.Option("auto", "--reports", help="auto (IU X-ray where found), iu, or templates."),
    iu_reports: Path | None = typer.Option(
        None, "--iu-reports", help="NLMCXR_reports.tgz or its XML folder."
    ),
    workers: int = typer.Option(1, "--workers", help="Rendering processes."),
    split_by: str = typer.Option(
        "random",
        "--split-by",
        help="random (80/10/10), or r2gen: each IU report's R2Gen split, every val/test report drawn once.",
    ),
    r2gen_split: Path | None = typer.Option(
        None, "--r2gen-split", help="R2Gen's r2gen_split.json (default: beside the IU reports)."
    ),
) -> None:
    """Render a synthetic paired CXR world: images, reports, CheXpert labels, VQA pairs, splits."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from llmcxr.synth import build_world

    console = Console()
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("synth", total=n)
        summary = build_world(
            out,
            n,
            size,
            seed,
            balance=balance,
            reports=reports,
            iu_reports_path=iu_reports,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done),
            split_by=split_by,
            r2gen_split_path=r2gen_split,
        )
    speed = summary["images_per_second"]
    console.print(
        f"world {out}: {summary['images']} images ({summary['rendered_now']} rendered now"
        + (f", {speed} images/s" if speed else "")
        + f"), reports from {summary['config']['reports']}, splits {summary['splits']}, "
        f"{summary['qa_pairs']} VQA pairs, {summary['label_disagreements']} label disagreements"
    )


# --- label / vqa / convert-chexbert (reports engineer) ---


@app.command("label")
def label(
    input: Path = typer.Argument(
        ..., help="Reports: JSONL/CSV, a .txt file or folder of .txt, or NLMCXR_reports.tgz."
    ),
    out: Path = typer.Option(..., "--out", help="labels.jsonl: id, CheXpert-14 labels (1/0/-1), sides."),
    chexbert: Path | None = typer.Option(
        None, "--chexbert", help="CheXbert .safetensors (see convert-chexbert)."
    ),
    bert: Path | None = typer.Option(None, "--bert", help="Local bert-base-uncased folder, with --chexbert."),
) -> None:
    """Label reports with the rule-based CheXpert-14 labeler (or CheXbert, from local weights)."""
    import time

    from rich.console import Console

    from llmcxr.datasets.report_files import label_rows, read_reports, write_labels_jsonl

    labeler = None
    if chexbert is not None:
        from llmcxr.reports.chexbert import CheXbertLabeler

        if bert is None:
            raise typer.BadParameter("--chexbert needs --bert (a local bert-base-uncased folder)")
        labeler = CheXbertLabeler(chexbert, bert)
    rows = read_reports(input)
    start = time.perf_counter()
    label_rows(rows, labeler=labeler)
    seconds = time.perf_counter() - start
    write_labels_jsonl(out, rows)
    positives = sum(1 for r in rows for v in (r.labels or {}).values() if v == 1)
    Console().print(
        f"labeled {len(rows)} reports ({len(rows) / max(seconds, 1e-9):.0f}/s), {positives} positive labels -> {out}"
    )


@app.command("vqa")
def vqa(
    input: Path = typer.Argument(
        ..., help="labels.jsonl from `llmcxr data label`, or any report input it accepts."
    ),
    out: Path = typer.Option(..., "--out", help="vqa.jsonl: image_id, question, answer, kind, finding."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same questions."),
    pairs: int = typer.Option(2, "--pairs", help="Yes/no presence pairs per report (at most)."),
) -> None:
    """Generate VQA pairs from report labels (labels computed where the input has none)."""
    from collections import Counter

    from rich.console import Console

    from llmcxr.datasets.report_files import label_rows, read_reports
    from llmcxr.records import CXRRecord
    from llmcxr.reports.vqa import generate_qa, qa_seed, write_vqa_jsonl

    rows = label_rows(read_reports(input), relabel=False)
    records = [
        CXRRecord(
            image_id=r.id,
            labels=r.labels or {},
            qa=generate_qa(r.labels or {}, r.sides, qa_seed(r.id, seed), pairs=pairs),
        )
        for r in rows
    ]
    count = write_vqa_jsonl(out, records)
    kinds = Counter(qa.kind for rec in records for qa in rec.qa)
    Console().print(f"{count} QA pairs for {len(records)} reports ({dict(kinds)}) -> {out}")


@app.command("convert-chexbert")
def convert_chexbert_command(
    checkpoint: Path = typer.Argument(..., help="The released chexbert.pth (read once, weights only)."),
    out: Path = typer.Option(..., "--out", help="chexbert.safetensors for CheXbertLabeler."),
) -> None:
    """Convert CheXbert weights to safetensors (the only command that reads a torch pickle)."""
    from rich.console import Console

    from llmcxr.reports.chexbert import convert_chexbert

    Console().print(f"wrote {convert_chexbert(checkpoint, out)}")


@app.command("convert-biovil-t")
def convert_biovil_t_command(
    folder: Path = typer.Argument(..., help="The microsoft/BiomedVLP-BioViL-T snapshot folder."),
) -> None:
    """Write BioViL-T's image and text weights as safetensors beside the snapshot's .pt / .bin
    (read once, weights only), for `eval images --protocol chexgenbench --biovil-t`."""
    from rich.console import Console

    from llmcxr.metrics.biovil import convert_biovil_t

    written = convert_biovil_t(folder)
    Console().print(f"wrote {', '.join(map(str, written))}" if written else f"{folder} is already converted")
