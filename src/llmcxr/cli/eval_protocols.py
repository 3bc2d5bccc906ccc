"""The public-protocol and real-data half of `llmcxr eval`: `eval run --source manifest|mimic|iu`
(``llmcxr.evaluation.real_data``), `eval rexrank-submission`, and the printing of ReXrank and
CheXGenBench results for `eval reports|images --protocol`. `cli/eval.py` holds the other verbs and
the helpers shared with this module."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from llmcxr.cli.eval import _table, _write, console


def rexrank(pred: Path, ref: Path | None, weights) -> dict:
    from llmcxr.evaluation.protocols import evaluate_reports_rexrank

    return evaluate_reports_rexrank(pred, ref, weights)


def protocol_report(name: str, result: dict, out: Path | None) -> None:
    from llmcxr.evaluation.protocols import protocol_rows

    values, not_run = protocol_rows(result)
    console.print(_table(f"{name} protocol", values))
    for metric, reason in not_run.items():
        console.print(f"[yellow]{metric} not run:[/] {reason}")
    _write(result, out)


def _number(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_real(config) -> None:  # config: llmcxr.evaluation.real_data.RealEvalConfig
    """`eval run --source manifest|mimic|iu`: run, then print each task's systems and what did not run."""
    from llmcxr.evaluation.real_data import run_real_evaluation

    result = run_real_evaluation(config, show_progress=True)
    title = (
        f"eval run ({config.source}): {result['n_test']} {config.split} studies, {result['n_train']} train"
    )
    if "cxr_to_report" in result:
        table = Table(title=f"{title}; CXR -> report")
        for column in ("system", "BLEU-2", "rules micro-F1-14 (u+)", "not run"):
            table.add_column(column)
        for name, scores in result["cxr_to_report"]["systems"].items():
            skipped = [m for m, entry in scores["metrics"].items() if entry.get("not_run")]
            f1 = scores["rule_labeler_f1"]["uncertain_positive"]["micro_f1_14"]
            bleu = scores["metrics"]["bleu2"]["value"]
            table.add_row(name, _number(bleu), _number(f1), ", ".join(skipped))
        console.print(table)
    if "report_to_cxr" in result:
        images = result["report_to_cxr"]
        table = Table(
            title=f"report -> CXR, {images['n']} studies, features: {images['feature_network']['name']}"
        )
        for column in ("system", "macro-AUROC", "FD", "KD", "precision", "recall"):
            table.add_column(column)
        for name, scores in images["systems"].items():
            distribution = scores.get("distribution", {})
            prdc = distribution.get("prdc", {})
            table.add_row(
                name,
                _number(scores["finding_agreement"]["macro_auroc"]),
                _number(distribution.get("fd", {}).get("value"), 2),
                _number(distribution.get("kd", {}).get("value"), 4),
                _number(prdc.get("precision")),
                _number(prdc.get("recall")),
            )
        console.print(table)
        console.print(f"labels: {images['labels']}")
    for name, reason in result["not_run"].items():
        console.print(f"[yellow]{name} not run:[/] {reason}")
    total = result["timings"]["this_run_s"]["total"]
    console.print(f"{total:.1f} s; wrote {Path(config.out) / 'eval.json'}")


def rexrank_submission(
    test: Path = typer.Option(..., "--test", help="ReXrank's test JSON (e.g. ReXRank_MIMICCXR_test.json)."),
    pred: Path = typer.Option(
        ..., "--pred", help="Generated reports: JSONL or CSV with a study id and a report."
    ),
    out: Path = typer.Option(..., "--out", help="The submission JSON to write."),
) -> None:
    """Write generated reports into ReXrank's prediction format (the test JSON + model_prediction)."""
    from llmcxr.datasets.rexrank import write_rexrank_predictions
    from llmcxr.evaluation.prediction_files import report_text, rows_by_id
    from llmcxr.tables import read_rows

    rows = rows_by_id(read_rows(pred), pred)
    write_rexrank_predictions(test, {study: report_text(row, pred) for study, row in rows.items()}, out)
    console.print(f"wrote {out}: {len(rows)} predictions")
