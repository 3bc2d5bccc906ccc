"""The demo's page: a self-contained HTML file (base64 PNGs, escaped text) and its JSON summary."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from PIL import Image

VIEW_SCALE = 4  # 64 px -> 256 px on the page, nearest neighbour so the model's pixels stay visible


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
    sections.append(("CXR &rarr; report", "report", rows))
    rows = [
        f'<div class="row"><div class="text">{text_block("Report", e["report"])}</div>'
        f"{figure(e['generated'], 'generated CXR (guidance {:g})'.format(e['guidance_scale']))}"
        f"{figure(e['reference'], 'reference ' + e['image_id'])}</div>"
        for e in results["image"]
    ]
    sections.append(("Report &rarr; CXR", "image", rows))
    rows = [
        f'<div class="row">{figure(e["image"], "CXR " + e["image_id"])}<div class="text">'
        f"{text_block('Question', e['question'])}{text_block('Answer', e['generated'])}"
        f"{text_block('Reference answer', e['reference'])}</div></div>"
        for e in results["vqa"]
    ]
    sections.append(("Visual question answering", "vqa", rows))
    rows = [
        f'<div class="row"><div class="text">{text_block("Instruction", e["instruction"])}'
        f"{text_block('Response', e['generated'])}</div></div>"
        for e in results["chat"]
    ]
    sections.append(("Text instruction", "chat", rows))
    models = results.get("models", {})
    body = "".join(
        f"<section><h2>{title}</h2><p><i>model: {html.escape(models.get(task, ''))}</i></p>{''.join(rows)}</section>"
        for title, task, rows in sections
    )
    smol = summary.get("smol")
    if smol:
        said = smol.get("skipped") or (
            f"{smol['model']} (SmolLM2-135M-Instruct with a LoRA adapter) answers: {', '.join(smol['tasks'])}. "
            f"Why: {smol['why']}"
        )
        body = f"<p class='note'>{html.escape(said)}</p>{body}"
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
