"""/docs: the REST API's reference as one self-contained HTML page, made from the OpenAPI schema.

FastAPI's own /docs page loads Swagger UI's script and styles from a CDN (jsdelivr): on an offline
machine it stays blank, and online it runs third-party code next to the API (issue 24). This page
has no script at all; the machine-readable schema stays at /openapi.json.
"""

from __future__ import annotations

import html
from typing import Any

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "code{background:#f3f3f3;padding:0 .2rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
    "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "h2{margin-top:2rem;border-top:1px solid #ddd;padding-top:1rem}"
)


def _schema(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow one ``$ref`` into components/schemas."""
    ref = node.get("$ref")
    if ref:
        return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return node


def _type(spec: dict[str, Any], node: dict[str, Any]) -> str:
    node = _schema(spec, node)
    if "anyOf" in node:
        return " | ".join(_type(spec, option) for option in node["anyOf"])
    if node.get("format") == "binary":
        return "file"
    kind = node.get("type", "object")
    return f"list of {_type(spec, node['items'])}" if kind == "array" and "items" in node else kind


def _fields(spec: dict[str, Any], schema: dict[str, Any]) -> str:
    schema = _schema(spec, schema)
    required = set(schema.get("required", ()))
    rows = []
    for name, node in schema.get("properties", {}).items():
        resolved = _schema(spec, node)
        text = node.get("description") or resolved.get("description", "")
        default = f" (default {node['default']!r})" if "default" in node else ""
        rows.append(
            f"<tr><td><code>{html.escape(name)}</code>{' *' if name in required else ''}</td>"
            f"<td>{html.escape(_type(spec, node))}</td><td>{html.escape(text + default)}</td></tr>"
        )
    if not rows:
        return ""
    return "<table><tr><th>field</th><th>type</th><th>meaning</th></tr>" + "".join(rows) + "</table>"


def _operation(spec: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> str:
    parts = [f"<h2><code>{method.upper()} {html.escape(path)}</code></h2>"]
    parts.append(f"<p>{html.escape(op.get('summary', ''))}</p>")
    for media, body in op.get("requestBody", {}).get("content", {}).items():
        parts.append(f"<p>Request body: <code>{html.escape(media)}</code></p>")
        parts.append(_fields(spec, body.get("schema", {})))
    replies = []
    for status, reply in op.get("responses", {}).items():
        media = ", ".join(reply.get("content", {})) or "-"
        replies.append(
            f"<tr><td>{html.escape(status)}</td><td>{html.escape(media)}</td>"
            f"<td>{html.escape(reply.get('description', ''))}</td></tr>"
        )
    parts.append("<table><tr><th>status</th><th>type</th><th>when</th></tr>" + "".join(replies) + "</table>")
    ok = op.get("responses", {}).get("200", {}).get("content", {}).get("application/json")
    if ok and ok.get("schema"):
        parts.append("<p>Reply fields:</p>" + _fields(spec, ok["schema"]))
    return "".join(parts)


def render_api_docs(spec: dict[str, Any]) -> str:
    """The OpenAPI ``spec`` (``app.openapi()``) as an HTML page with no script and no remote resource."""
    info = spec.get("info", {})
    body = [
        f"<h1>{html.escape(info.get('title', 'API'))} {html.escape(info.get('version', ''))}: REST API</h1>",
        f"<p>{html.escape(info.get('description', ''))}</p>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>.</p>',
    ]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            body.append(_operation(spec, path, method, op))
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>API docs</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
