"""`llmcxr serve`: a REST API (FastAPI) and a web app (Gradio) over one model worker.

    from llmcxr.serve import ServeConfig, build_app, serve
    serve(ServeConfig(model=Path("runs/tiny-cpu/run/model")))   # http://127.0.0.1:7860

Needs the optional extra: ``pip install 'llmcxr[serve]'``.
"""

from llmcxr.serve.config import ServeConfig
from llmcxr.serve.server import build_app, require_serve_extra, serve

__all__ = ["ServeConfig", "build_app", "require_serve_extra", "serve"]
