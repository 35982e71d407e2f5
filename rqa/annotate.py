"""The annotator tab: experts log in with a token and rate answers' technical depth (1-5)."""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr

from rqa.errors import RatingError, StoreError
from rqa.ratings import RUBRIC
from rqa.render import ratings_table, render_item
from rqa.service import AppState, client_id, match_secret
from rqa.uploads import upload_folder, uploaded_files


EXPORT_KEEP_S = 60  # Gradio copies a returned file into its own cache as the handler returns


def export_file(text: str, fmt: str, folder: Path) -> Path:
    """The ratings export as a file for the download, in a folder of its own under `folder`. Gradio
    serves its own copy (swept with the uploads, upload_cache_s), so earlier exports' files, each a
    copy of every rating, are deleted here instead of staying for good."""
    for old in folder.iterdir():
        with contextlib.suppress(OSError):  # another export may be deleting it too
            if time.time() - old.stat().st_mtime > EXPORT_KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
    out = folder / uuid.uuid4().hex / f"ratings.{fmt}"
    out.parent.mkdir()
    out.write_text(text, encoding="utf-8")
    return out


def build_annotator_tab(app: AppState) -> None:
    # One function: the layout and the handlers that read and update its components share
    # them in one closure, read top to bottom as the tab appears; split, they would be passed around.
    annotator = gr.State("")
    item = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                token = gr.Textbox(label="Annotator token", type="password", elem_id="rqa-token")
                login = gr.Button("Log in", elem_id="rqa-login")
            status = gr.Markdown("Log in with your annotator token to rate answers.", elem_id="rqa-annot-status")
            item_view = gr.HTML("", elem_id="rqa-item")
            depth = gr.Radio([1, 2, 3, 4, 5], label="Technical depth", elem_id="rqa-depth")
            correctness = gr.Radio(["correct", "partly", "wrong"], label="Factual correctness", elem_id="rqa-correct")
            comment = gr.Textbox(label="Comment", lines=2, elem_id="rqa-comment")
            submit = gr.Button("Submit rating", variant="primary", elem_id="rqa-submit")
            with gr.Accordion("Import items and export ratings", open=False):
                upload = gr.File(label="Import JSONL of {question, answer, model}", file_types=[".jsonl"])
                with gr.Row():
                    export_csv = gr.Button("Export CSV")
                    export_jsonl = gr.Button("Export JSONL")
                download = gr.File(label="Download")
            stats = gr.Markdown("", elem_id="rqa-stats")
        with gr.Column(scale=2):
            gr.Markdown(RUBRIC)

    def render_stats() -> str:
        return ratings_table(app.db.summary(), app.db.feedback_counts())

    def do_login(tok: str, request: gr.Request):
        token, wait = match_secret(app, client_id(request, app.settings.trusted_proxies), tok, app.annotators)
        if wait:
            return "", None, f"**Too many failed logins:** try again in {math.ceil(wait)} seconds.", "", ""
        if token is None:
            return "", None, "**Unknown token:** chat users cannot rate.", "", ""
        name = app.annotators[token]
        row = app.db.next_item(name)
        return name, row["id"] if row else None, f"Logged in as **{name}**.", render_item(row), render_stats()

    def do_submit(name: str, item_id, d, corr, text):
        if not name:
            return item_id, "**Log in as an annotator first.**", gr.update(), gr.update()
        if item_id is None:
            return None, "Nothing to rate.", gr.update(), render_stats()
        try:
            app.db.rate(int(item_id), name, int(d) if d else 0, corr or "", text or "")
        except (RatingError, ValueError) as e:  # a tampered item id or depth fails int()
            return item_id, f"**Not saved:** {e}", gr.update(), gr.update()
        row = app.db.next_item(name)
        return (row["id"] if row else None, f"Saved rating of item {item_id} as **{name}**.",
                render_item(row), render_stats())

    def do_import(name: str, item_id, file):
        if not name:
            return "**Log in as an annotator first.**", gr.update(), item_id, gr.update()
        if file is None:
            return "Choose a JSONL file first.", gr.update(), item_id, gr.update()
        try:
            (path,) = uploaded_files([file if isinstance(file, str) else file.name], upload_folder())
            n = app.db.import_jsonl(path.read_text(encoding="utf-8"))
        except (RatingError, StoreError, UnicodeDecodeError, ValueError) as e:
            return f"**Import failed:** {e}", gr.update(), item_id, gr.update()
        if item_id is None and (row := app.db.next_item(name)):  # nothing was shown to rate: show the new items
            return f"Imported {n} items.", render_stats(), row["id"], render_item(row)
        return f"Imported {n} items.", render_stats(), item_id, gr.update()

    exports = Path(tempfile.mkdtemp(prefix="rqa-exports-"))

    def do_export(name: str, fmt: str):
        if not name:
            return None
        return str(export_file(app.db.export(fmt), fmt, exports))

    login.click(do_login, [token], [annotator, item, status, item_view, stats])
    submit.click(do_submit, [annotator, item, depth, correctness, comment], [item, status, item_view, stats])
    upload.upload(do_import, [annotator, item, upload], [status, stats, item, item_view])
    export_csv.click(lambda n: do_export(n, "csv"), [annotator], [download])
    export_jsonl.click(lambda n: do_export(n, "jsonl"), [annotator], [download])
