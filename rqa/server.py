"""`rqa serve` (and `python app.py`): the FastAPI server with the Gradio UI at / and the
OpenAI-compatible API under /v1, run by uvicorn."""

from __future__ import annotations

import logging
import os
import sys

import gradio as gr
from fastapi import FastAPI

from rqa.api import add_openai_routes
from rqa.config import Settings
from rqa.errors import USER_ERRORS
from rqa.service import AppState
from rqa.web import build_app

log = logging.getLogger("rqa.server")


def create_server(app: AppState):
    """The FastAPI server: the OpenAI-compatible routes and the Gradio UI mounted at /."""
    demo = build_app(app)
    # Generation is bounded by the model (llama-server's slots, or the in-process model's lock), not by
    # Gradio's queue: up to 16 waiting users' handlers run at once, each shows its sources at once and
    # says that other users' answers are generating; past 16, Gradio's queue holds the rest.
    demo.queue(default_concurrency_limit=16)
    server = FastAPI(title="rqa")
    add_openai_routes(server, app)
    server = gr.mount_gradio_app(server, demo, path="/", max_file_size=f"{app.settings.max_upload_mb}mb", footer_links=["api"])
    # Gradio refuses a request's file that did not arrive through its upload route only once the
    # Blocks count as launched, which mount_gradio_app never marks. Without the mark it copies any
    # path a request names (/etc/..., a home folder) into its cache and hands it to the handler.
    # tests/test_http.py checks the refusal through the HTTP API.
    demo.has_launched = True
    return server


def serve(settings: Settings) -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app = AppState.start(settings)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    server = create_server(app)
    # Loopback unless GRADIO_SERVER_NAME says otherwise (Spaces set 0.0.0.0): the annotator tab and
    # the ratings export are not for the whole local network by default. No proxy_headers: uvicorn
    # would otherwise take a loopback peer's X-Forwarded-For at its word, which any local client can
    # forge; whom to trust is rqa's trusted_proxies setting alone.
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    log.info("rqa on http://%s:%d/ (OpenAI-compatible API under /v1)", host, port)
    # On SIGTERM, open connections (a client's keep-alive or event stream) get 5 s, not forever:
    # a restart must not hang on one idle client.
    uvicorn.run(server, host=host, port=port, proxy_headers=False, log_level="warning", timeout_graceful_shutdown=5)
    return 0
