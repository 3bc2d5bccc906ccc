"""`llmcxr eval ...` commands: score reports, images and VQA answers from files; train the finding
classifier; `eval run`: generate on a split and score it all end to end (``llmcxr.evaluation.run``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from llmcxr import atomic

# The metric modules import torch/torchmetrics (seconds): each command imports them itself so that
# `llmcxr --help` and the other verb groups stay fast.

app = typer.Typer(no_args_is_help=True)
console = Console()


def _convention(uncertain: str):  # -> llmcxr.metrics.clinical.LabelConvention
    from llmcxr.metrics.clinical import UNCERTAIN_CHOICES, LabelConvention

    if uncertain not in UNCERTAIN_CHOICES:
        raise typer.BadParameter(f"--uncertain must be one of {UNCERTAIN_CHOICES}")
    return LabelConvention(uncertain=uncertain)


def _labeler(chexbert: Path | None, bert_folder: Path | None):  # -> llmcxr.reports Labeler
    from llmcxr.reports import CheXbertLabeler, RuleLabeler

    if chexbert is None:
        return RuleLabeler()
    if bert_folder is None:
        raise typer.BadParameter(
            "--chexbert needs --bert-folder (a local bert-base-uncased config + tokenizer)"
        )
    return CheXbertLabeler(chexbert, bert_folder)


def _table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def _write(result: dict, out: Path | None) -> None:
    if out is not None:
        atomic.write_json(out, result)
        console.print(f"wrote {out}")


UNCERTAIN_HELP = "How uncertain labels count: positive (CheXbert-F1 / f1chexbert) or negative (R2Gen)."


@app.command("reports")
def reports(
    pred: Path = typer.Option(
        ..., "--pred", help="Generated reports: JSONL or CSV with an id and a report column."
    ),
    ref: Path | None = typer.Option(
        None,
        "--ref",
        help="Reference reports, same layout; rows matched by id (none: --pred is ReXrank JSON).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the full result as JSON here."),
    protocol: str = typer.Option(
        "llmcxr", help="llmcxr (CheXpert F1 + language scores) or rexrank (ReXrank's metric set)."
    ),
    bertscore: Path | None = typer.Option(
        None, help="rexrank: local distilroberta-base folder for BERTScore."
    ),
    ratescore_ner: Path | None = typer.Option(None, help="rexrank: local RaTE-NER-Deberta folder."),
    ratescore_encoder: Path | None = typer.Option(None, help="rexrank: local BioLORD-2023-C folder."),
    green: Path | None = typer.Option(None, help="rexrank: local GREEN judge LM folder."),
    uncertain: str = typer.Option("positive", help=UNCERTAIN_HELP),
    meteor: bool = typer.Option(True, help="Score METEOR (needs java; reported missing otherwise)."),
    chexbert: Path | None = typer.Option(
        None, help="Label with CheXbert: a converted .safetensors checkpoint."
    ),
    bert_folder: Path | None = typer.Option(None, help="Local bert-base-uncased folder for --chexbert."),
    radgraph: Path | None = typer.Option(
        None,
        help="Also score RadGraph F1 with this extracted RadGraph model (config.json, weights.th, vocabulary/).",
    ),
    radgraph_type: str = typer.Option(
        "radgraph", help="Which RadGraph release --radgraph is: radgraph, radgraph-xl or modern-radgraph-xl."
    ),
    radgraph_bert: Path | None = typer.Option(
        None, help="Local copy of the BERT --radgraph's config names (default: the Hugging Face cache)."
    ),
) -> None:
    """Clinical efficacy (CheXpert F1, micro/macro, 14 and 5 classes), language scores and, with
    --radgraph, RadGraph F1 of reports. --protocol rexrank: the ReXrank metric set instead, each
    learned metric run from the local weights given and listed as not run without them."""
    from llmcxr.metrics.radgraph import RadGraphModel

    graph = None if radgraph is None else RadGraphModel(radgraph, radgraph_type, radgraph_bert)
    if protocol == "rexrank":
        from llmcxr.metrics.protocols import ReXrankWeights

        weights = ReXrankWeights(
            bertscore=bertscore,
            chexbert=chexbert,
            chexbert_bert=bert_folder,
            radgraph=graph,
            ratescore_ner=ratescore_ner,
            ratescore_encoder=ratescore_encoder,
            green=green,
        )
        from llmcxr.cli.eval_protocols import protocol_report, rexrank

        protocol_report("rexrank", rexrank(pred, ref, weights), out)
        return
    if protocol != "llmcxr":
        raise typer.BadParameter("--protocol must be llmcxr or rexrank")
    if ref is None:
        raise typer.BadParameter("--ref is needed unless --protocol rexrank reads a ReXrank prediction JSON")
    from llmcxr.evaluation.files import evaluate_report_files

    result = evaluate_report_files(
        pred, ref, _labeler(chexbert, bert_folder), _convention(uncertain), meteor, radgraph=graph
    )
    clinical, language = result["clinical"], result["language"]
    headline = {k: clinical[k] for k in ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5")}
    headline.update({k: language[k] for k in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider")})
    if "radgraph" in result:
        headline.update(
            {f"radgraph_{level}": result["radgraph"][level] for level in ("simple", "partial", "complete")}
        )
    console.print(
        _table(f"{result['n']} reports, labeler {clinical['labeler']}, {clinical['convention']}", headline)
    )
    for metric, reason in language["missing"].items():
        console.print(f"[yellow]{metric} missing:[/] {reason}")
    _write(result, out)


@app.command("images")
def images(
    generated: Path = typer.Option(..., "--generated", help="Folder (or manifest) of generated images."),
    reference: Path = typer.Option(..., "--reference", help="Folder (or manifest) of reference images."),
    classifier: Path | None = typer.Option(
        None, "--classifier", help="Finding classifier folder (llmcxr eval train-classifier)."
    ),
    protocol: str = typer.Option("llmcxr", help="llmcxr (classifier FID/KID, agreement) or chexgenbench."),
    rad_dino: Path | None = typer.Option(None, help="chexgenbench: local microsoft/rad-dino folder."),
    inception: Path | None = typer.Option(None, help="chexgenbench: FID Inception weights file."),
    biovil_t: Path | None = typer.Option(
        None, "--biovil-t", help="chexgenbench: BioViL-T folder (llmcxr data convert-biovil-t)."
    ),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="chexgenbench: JSONL/CSV of each generated image's id and report (alignment)."
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="JSONL/CSV of the source reports by image id (labels or report text): finding agreement.",
    ),
    classes: str | None = typer.Option(
        None,
        help="Comma-separated findings to score agreement on (default: all 14), or 'drawn' (a world's drawn ones).",
    ),
    uncertain: str = typer.Option("positive", help=UNCERTAIN_HELP),
    out: Path | None = typer.Option(None, "--out", help="Write the full result as JSON here."),
) -> None:
    """FID/KID in the classifier's features and finding agreement of generated images; --protocol
    chexgenbench: FD/KD in RAD-DINO features, PRDC, Inception FID, BioViL-T alignment where given."""
    if protocol == "chexgenbench":
        from llmcxr.cli.eval_protocols import protocol_report
        from llmcxr.evaluation.protocols import evaluate_images_chexgenbench

        result = evaluate_images_chexgenbench(generated, reference, rad_dino, inception, biovil_t, prompts)
        protocol_report("chexgenbench", result, out)
        return
    if protocol != "llmcxr" or classifier is None:
        raise typer.BadParameter("--protocol llmcxr needs --classifier; the other protocol is chexgenbench")
    from llmcxr.evaluation.files import evaluate_image_folders

    score_classes = [c.strip() for c in classes.split(",")] if classes else None
    result = evaluate_image_folders(
        generated, reference, classifier, labels, score_classes, convention=_convention(uncertain)
    )
    distribution = result["distribution"]
    rows = {k: distribution[k] for k in ("fid", "kid_mean", "kid_std", "n_generated", "n_reference")}
    network = distribution["feature_network"]
    rows["feature network"] = f"{network['name']} sha256 {network['weights_sha256'][:12]}"
    if "finding_agreement" in result:
        agreement = result["finding_agreement"]
        rows.update({k: agreement[k] for k in ("macro_auroc", "micro_f1", "macro_f1")})
        for name, reason in agreement["skipped"].items():
            console.print(f"[yellow]AUROC skipped for {name}:[/] {reason}")
    console.print(_table("generated images", rows))
    _write(result, out)


@app.command("vqa")
def vqa(
    pred: Path = typer.Option(..., "--pred", help="Answers: JSONL/CSV with id, question, answer."),
    ref: Path = typer.Option(
        ..., "--ref", help="Reference: id, question, answer, kind (or a qa list per id)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the full result as JSON here."),
) -> None:
    """VQA accuracy overall and by question kind."""
    from llmcxr.evaluation.files import evaluate_vqa_files

    result = evaluate_vqa_files(pred, ref)
    rows: dict[str, object] = {"overall": result["accuracy"], "n": result["n"]}
    rows.update({kind: v["accuracy"] for kind, v in result["by_kind"].items()})
    console.print(_table("VQA accuracy", rows))
    _write(result, out)


@app.command("baselines")
def baselines(
    world: Path = typer.Option(..., "--world", help="Synthetic world folder (llmcxr data synth)."),
    split: str = typer.Option("test", help="Split to score on (reports retrieved from the train split)."),
    classifier: Path | None = typer.Option(
        None, "--classifier", help="Also retrieve by the classifier's features."
    ),
    uncertain: str = typer.Option("positive", help=UNCERTAIN_HELP),
    meteor: bool = typer.Option(False, help="Score METEOR too (needs java; ~15 s per baseline)."),
    out: Path | None = typer.Option(None, "--out", help="Write the full result as JSON here."),
) -> None:
    """CXR -> report baselines: the most common training report, nearest-neighbour retrieval."""
    from llmcxr.evaluation.files import evaluate_report_baselines

    result = evaluate_report_baselines(
        world, split, classifier, convention=_convention(uncertain), meteor=meteor
    )
    table = Table(title=f"CXR -> report baselines, {result['n']} {split} images")
    columns = {
        "micro_f1_14": "miF1-14",
        "macro_f1_14": "maF1-14",
        "micro_f1_5": "miF1-5",
        "macro_f1_5": "maF1-5",
    }
    columns |= {"bleu_4": "BLEU-4", "rouge_l": "ROUGE-L", "cider": "CIDEr"}
    table.add_column("baseline")
    for header in columns.values():
        table.add_column(header, justify="right")
    for name, scores in result.items():
        if isinstance(scores, dict) and "clinical" in scores:
            values = {**scores["clinical"], **scores["language"]}
            table.add_row(name, *(f"{values[c]:.3f}" for c in columns))
    console.print(table)
    _write(result, out)


@app.command("preservation")
def preservation(
    vq: Path = typer.Option(..., "--vq", help="VQ-GAN folder (vq_config.json + vqgan.safetensors)."),
    world: Path = typer.Option(..., "--world", help="Synthetic world folder (llmcxr data synth)."),
    classifier: Path = typer.Option(
        ..., "--classifier", help="Finding classifier folder (llmcxr eval train-classifier)."
    ),
    split: str = typer.Option("test", help="World split to score."),
    classes: str | None = typer.Option(
        None, help="Comma-separated findings (default: those the renderer drew)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the full result as JSON here."),
) -> None:
    """Finding preservation of the image tokenizer: classifier AUROC on originals vs VQ round trips."""
    from llmcxr.evaluation.files import evaluate_finding_preservation

    score_classes = [c.strip() for c in classes.split(",")] if classes else None
    result = evaluate_finding_preservation(vq, world, classifier, split, score_classes)
    rows = {k: result[k] for k in ("n", "original_macro_auroc", "round_trip_macro_auroc", "auroc_drop")}
    console.print(_table(f"finding preservation of {vq}", rows))
    _write(result, out)


@app.command("train-classifier")
def train_classifier(
    out: Path = typer.Option(..., "--out", help="Folder to save the classifier in."),
    world: Path | None = typer.Option(None, "--world", help="Synthetic world folder (llmcxr data synth)."),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        help="Or your own CXRs: CSV/JSONL with image and report (or a labels column); optional split, patient_id.",
    ),
    size: int | None = typer.Option(
        None, help="Image side the classifier sees (default: the world's; 128 for a manifest)."
    ),
    steps: int = typer.Option(1000, help="Training steps."),
    batch_size: int = typer.Option(64, help="Images per step."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train the finding classifier used for finding agreement and FID/KID features."""
    from llmcxr.evaluation.files import train_classifier_on_manifest, train_classifier_on_world
    from llmcxr.metrics.finding_classifier import ClassifierTrainConfig

    if (world is None) == (manifest is None):
        raise typer.BadParameter("give one of --world (a synthetic world) or --manifest (your own CXRs)")
    train = ClassifierTrainConfig(steps=steps, batch_size=batch_size, seed=seed)
    if world is not None:
        summary = train_classifier_on_world(world, out, size, train, log=console.print)
    else:
        summary = train_classifier_on_manifest(manifest, out, size or 128, train, log=console.print)
    rows: dict[str, object] = {"n_train": summary["n_train"], "train_seconds": summary["train_seconds"]}
    if "eval_auroc" in summary:
        rows[f"{summary['eval_split']} macro AUROC"] = summary["eval_auroc"]["macro_auroc"]
    console.print(_table(f"finding classifier -> {out}", rows))


@app.command("run")
def run(
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model folder written by `llmcxr train` (default on a synthetic world: the shipped model, "
        "checkpoints/llmcxr-tiny; with --source, none: the baselines only).",
        show_default=False,
    ),
    data: Path = typer.Option(
        ...,
        "--data",
        help="Synthetic world folder; with --source: a manifest, MIMIC-CXR-JPG root or IU reports.",
    ),
    source: str = typer.Option(
        "synthetic",
        help="synthetic (a world), or real data: manifest, mimic, iu (reports scored by ReXrank).",
    ),
    iu_split: Path | None = typer.Option(None, help="iu: R2Gen's split file (annotation.json)."),
    images: Path | None = typer.Option(
        None, help="iu: the IU X-ray images folder (without it: reports only)."
    ),
    bertscore: Path | None = typer.Option(
        None, help="real data: local distilroberta-base folder (BERTScore)."
    ),
    chexbert: Path | None = typer.Option(
        None, help="real data: CheXbert .safetensors (SembScore, CheXbert F1)."
    ),
    bert_folder: Path | None = typer.Option(None, help="real data: bert-base-uncased folder for --chexbert."),
    radgraph: Path | None = typer.Option(None, help="real data: extracted RadGraph model folder."),
    rad_dino: Path | None = typer.Option(
        None, help="real data: local microsoft/rad-dino folder (FD/KD/PRDC; else the classifier's features)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for generated items, eval.json, eval.md and plots."),
    split: str = typer.Option("test", help="World split to generate for and score."),
    classifier: Path | None = typer.Option(
        None, "--classifier", help="Finding classifier folder (default: train one on the train split)."
    ),
    limit: int | None = typer.Option(None, help="Score the first N items of the split only."),
    guidance_scale: float | None = typer.Option(
        None, help="Classifier-free guidance for report -> CXR (default: the model folder's; 1 = none)."
    ),
    report_guidance_scale: float | None = typer.Option(
        None,
        help="Classifier-free guidance for CXR -> report (default: the model folder's; 1 = none; the model "
        "needs image dropout).",
    ),
    batch_size: int = typer.Option(16, help="Inputs per forward pass."),
    seed: int = typer.Option(0, help="Item i of the split samples with seed + i."),
    tasks: str = typer.Option("report,image,vqa", help="Comma-separated tasks to run."),
    text_sampling: str = typer.Option("greedy", help="Reports and answers: greedy or top-p."),
    report_sampling: str | None = typer.Option(
        None, help="Reports only (overrides --text-sampling): greedy or top-p."
    ),
    report_candidates: int = typer.Option(
        1, help="Each report the best of this many top-p drafts by the model's own log p(image | report)."
    ),
    image_sampling: str = typer.Option("top-p", help="Image tokens: top-p (LLM-CXR) or greedy."),
    image_candidates: int = typer.Option(
        1, help="Each image the best of this many top-p draws by the model's own log p(report | image)."
    ),
    max_report_tokens: int = typer.Option(160, help="Longest generated report in tokens."),
    max_answer_tokens: int = typer.Option(24, help="Longest generated VQA answer in tokens."),
    samples: int = typer.Option(8, help="Items shown in samples.png."),
    classifier_steps: int = typer.Option(1000, help="Steps of the classifier trained when none is given."),
    classifier_size: int = typer.Option(128, help="real data: image side of the classifier trained here."),
    uncertain: str = typer.Option("positive", help=UNCERTAIN_HELP),
    meteor: bool = typer.Option(False, help="Score METEOR too (needs java; ~15 s per system)."),
    device: str | None = typer.Option(None, help="torch device (default: cuda if present, else cpu)."),
    threads: int = typer.Option(1, help="torch CPU threads (0 = torch's default)."),
    restart: bool = typer.Option(False, "--restart", help="Discard what an earlier run in --out generated."),
) -> None:
    """End to end: generate for every task on a split, score beside the baselines, write eval.json/.md and plots.

    Resumable: rerun the same command after an interruption and it continues where it stopped.
    --source manifest|mimic|iu: real CXRs and reports, both directions beside their baselines, CXR -> report
    by the ReXrank protocol, report -> CXR by FD/KD/PRDC and finding agreement (``llmcxr.evaluation.real_data``)."""
    if source != "synthetic":
        from llmcxr.cli.eval_protocols import run_real
        from llmcxr.evaluation.real_data import RealEvalConfig
        from llmcxr.metrics.protocols import ReXrankWeights
        from llmcxr.metrics.radgraph import RadGraphModel

        weights = ReXrankWeights(
            bertscore=bertscore, chexbert=chexbert, chexbert_bert=bert_folder,
            radgraph=RadGraphModel(radgraph) if radgraph else None,
        )  # fmt: skip
        run_real(RealEvalConfig(
            data=data, out=out, source=source, model=model, split=split, iu_split=iu_split, images=images,
            limit=limit, tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()), batch_size=batch_size,
            max_report_tokens=max_report_tokens, guidance_scale=guidance_scale, image_sampling=image_sampling,
            report_guidance_scale=report_guidance_scale,
            seed=seed, classifier=classifier, classifier_steps=classifier_steps, classifier_size=classifier_size,
            rad_dino=rad_dino, device=device, threads=threads, restart=restart, weights=weights,
        ))  # fmt: skip
        return
    from llmcxr.evaluation.run import EvalRunConfig, run_evaluation
    from llmcxr.model.folder import model_or_shipped

    _convention(uncertain)
    config = EvalRunConfig(
        model=model_or_shipped(model),
        data=data,
        out=out,
        split=split,
        classifier=classifier,
        limit=limit,
        guidance_scale=guidance_scale,
        report_guidance_scale=report_guidance_scale,
        batch_size=batch_size,
        seed=seed,
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
        text_sampling=text_sampling,
        report_sampling=report_sampling,
        report_candidates=report_candidates,
        image_sampling=image_sampling,
        image_candidates=image_candidates,
        max_report_tokens=max_report_tokens,
        max_answer_tokens=max_answer_tokens,
        samples=samples,
        classifier_steps=classifier_steps,
        uncertain=uncertain,
        meteor=meteor,
        device=device,
        threads=threads,
        restart=restart,
    )
    result = run_evaluation(config)
    table = Table(title=f"eval run: {result['data']['n_items']} {split} items, model beside baselines")
    for column in ("task", "system", "metric", "value"):
        table.add_column(column, no_wrap=True, justify="right" if column == "value" else "left")
    if "cxr_to_report" in result:
        for name, scores in result["cxr_to_report"]["systems"].items():
            table.add_row("CXR->report", name, "micro-F1-14", f"{scores['clinical']['micro_f1_14']:.3f}")
    if "report_to_cxr" in result:
        for name, scores in result["report_to_cxr"]["systems"].items():
            auroc = scores["finding_agreement"]["macro_auroc"]
            fid = scores.get("distribution", {}).get("fid")
            value = ("-" if auroc is None else f"{auroc:.3f}") + ("" if fid is None else f" / {fid:.1f}")
            table.add_row("report->CXR", name, "AUROC / FID", value)
    if "vqa" in result:
        for name, scores in result["vqa"]["systems"].items():
            accuracy = scores["accuracy"]
            table.add_row("VQA", name, "accuracy", "-" if accuracy is None else f"{accuracy:.3f}")
    console.print(table)
    console.print(
        f"{result['timings']['this_run_s']['total']:.1f} s; wrote {out / 'eval.json'}, {out / 'eval.md'}"
    )
