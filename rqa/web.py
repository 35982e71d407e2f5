"""The Gradio app: a chat tab (streamed, cited, checked answers) and an annotator tab."""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from rqa.answer import Answer, Citation, QuestionError, answer_stream, clean_question, remove_links
from rqa.config import Settings
from rqa import library
from rqa.corpus import ingest_paths, open_index
from rqa.equations import SympyWorker
from rqa.errors import USER_ERRORS, ModelError
from rqa.index import STOPWORDS, Index, IndexError_, load_index
from rqa.ingest import SUFFIXES
from rqa.llm import ModelPool
from rqa.models import ADAPTERS
from rqa.ratelimit import RateLimiter
from rqa.ratings import RUBRIC, RatingError, RatingsDB, parse_annotators

log = logging.getLogger("rqa.web")
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
]

LOGIN_FAILURES_PER_MINUTE = 5
MAX_UPLOAD = "20mb"  # larger uploads are refused by the server before any handler reads them


@dataclass
class AppState:
    """What the running app shares across sessions: loaded once at start. `index` is replaced
    (one attribute assignment) when papers are added or removed; each question reads it once."""

    settings: Settings
    index: Index
    models: ModelPool
    db: RatingsDB
    limiter: RateLimiter
    sympy: SympyWorker | None
    annotators: dict[str, str] = field(default_factory=dict)  # token -> name
    # failed annotator logins per client: past 5 a minute, tokens cannot be guessed at full speed
    login_failures: RateLimiter = field(default_factory=lambda: RateLimiter(LOGIN_FAILURES_PER_MINUTE))
    notices: list[str] = field(default_factory=list)  # shown at the top of the page
    write_lock: threading.Lock = field(default_factory=threading.Lock)  # one index writer at a time

    @classmethod
    def start(cls, settings: Settings) -> "AppState":
        notices = []
        if settings.papers and not settings.hub_index_repo:
            report_papers(ingest_paths([settings.papers], settings))  # creates index_dir if need be
        try:
            index = open_index(settings)  # a corrupt index fails first, before minutes of model loading
        except Exception as e:  # a Hub index repo that is missing, private, unreachable or of an older format
            if not settings.hub_index_repo:
                raise
            version = re.search(r"has format (\S+),", str(e)) if isinstance(e, IndexError_) else None
            reason = f"it has index format {version.group(1)}; republish it with `build publish`" if version \
                else type(e).__name__  # never the server's paths
            notices.append(f"The index repo {settings.hub_index_repo} could not be loaded ({reason}); "
                           "serving the local index instead.")
            index = open_index(dataclasses.replace(settings, hub_index_repo=""))
        if settings.papers and settings.hub_index_repo:
            library.writable_index(index, settings)  # a copy of the served index in index_dir
            report_papers(ingest_paths([settings.papers], settings))
            index = load_index(settings.index_dir, settings.embedder)
        models = ModelPool(settings)
        if settings.hub_repo and not models.files.source.startswith("hub:"):
            notices.append(f"The model repo {settings.hub_repo} could not be reached; serving the offline model "
                           f"{models.files.q4.name} instead.")
        models.get("q4")  # load now: a missing or corrupt model fails at start, not at the first question
        if settings.adapter.lower() == "none" and models.files.source == f"offline:{settings.model}" \
                and settings.model in ADAPTERS:
            notices.append(f"Serving the stock {settings.model} without rqa's fine-tune (adapter setting: none).")
        if settings.expand_tokens:
            try:
                models.expander()
            except ModelError as e:  # the app still answers, from the question alone
                notices.append(f"Query expansion is off ({e}): the search uses the question alone.")
                settings = dataclasses.replace(settings, expand_tokens=0)
        return cls(settings=settings, index=index, models=models, db=RatingsDB(settings.db_path),
                   limiter=RateLimiter(settings.rate_limit_per_minute),
                   sympy=SympyWorker(settings.sympy_timeout_s), annotators=parse_annotators(settings.annotators),
                   notices=notices)


def model_line(files) -> str:
    line = f"Model: `{files.q4.name}`" + (f" (reasoning questions: `{files.q8.name}`)" if files.q8 else "")
    return line + (f", fine-tuned by rqa: adapter `{files.adapter.name}`." if files.adapter else ", stock.")


def report_papers(report) -> None:
    log.info("papers at start: %d added (%d chunks), %d skipped", report.papers_added, report.chunks_added,
             len(report.skipped))


# --- rendering --------------------------------------------------------------------------------
# Plain text marks instead of emoji: they render in every browser font, emoji often as boxes.

def mark_text(text: str, highlights: list[str], question: str) -> str:
    """The chunk's text, escaped, with the sentences that support the answer highlighted; before
    an answer exists, the question's words are."""
    escaped = html.escape(text)
    if highlights:
        for sentence in sorted(highlights, key=len, reverse=True):
            escaped = escaped.replace(html.escape(sentence), f'<mark class="rqa-support">{html.escape(sentence)}</mark>', 1)
        return escaped
    words = {w for w in re.findall(r"[A-Za-z0-9]{3,}", question.lower()) if w not in STOPWORDS}
    if not words:
        return escaped
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\w*", re.I)
    return pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", escaped)


def render_source(c: Citation, question: str) -> str:
    ch = c.hit.chunk
    link = f' · <a href="{c.arxiv_url}" target="_blank">arXiv:{ch.arxiv_id}</a>' if c.arxiv_url else ""
    origin = ' · <i>cited by rqa (the model did not cite it)</i>' if c.origin == "attributed" else ""
    return (f'<div class="rqa-source" id="source-{c.n}"><b>[{c.n}] {html.escape(ch.title)}</b><br>'
            f'<small>{html.escape(ch.section)} · p. {ch.pages} · {html.escape(ch.paper)}{link}{origin}</small>'
            f'<p>{mark_text(ch.text, c.highlights, question)}</p></div>')


def render_retrieved(question: str, hits) -> str:
    """The sources as soon as retrieval ends, before the model has written anything."""
    parts = ["<h4>Sources (the model is reading them)</h4>"]
    parts += [render_source(Citation(n, h), question) for n, h in enumerate(hits, start=1)] or \
        ["<p><i>No source matched the question.</i></p>"]
    return "\n".join(parts)


def render_sources(answer: Answer) -> str:
    parts = ["<h4>Cited sources</h4>"]
    parts += [render_source(c, answer.question) for c in answer.citations] or ["<p><i>The answer cites no source.</i></p>"]
    if answer.invalid_citations:
        parts.append(f'<p class="rqa-warning"><b>Warning:</b> citations to sources that do not exist: '
                     f'{", ".join(f"[{n}]" for n in answer.invalid_citations)}</p>')
    if answer.uncited:
        parts.append("<details><summary>Retrieved but not cited</summary>")
        parts += [render_source(c, answer.question) for c in answer.uncited]
        parts.append("</details>")
    return "\n".join(parts)


STATUS_MARK = {"matches source": "✓", "unverified": "?", "malformed": "✗"}


def render_checks(answer: Answer) -> str:
    lines = [f"**Model:** `{answer.model}`"]
    lines += [f"**Note:** {n}" for n in answer.notices]
    if answer.expansion:
        guess = remove_links(answer.expansion, [])[0]
        lines.append(f"**Searched with** the question and the passage the model expected to find (a guess that "
                     f"steers the search, not an answer): *{guess}*")
    attributed = [c.n for c in answer.citations if c.origin == "attributed"]
    if attributed:
        lines.append("**Citations added by rqa** (the support check found these sources hold sentences the model "
                     "left uncited or cited elsewhere): " + ", ".join(f"[{n}]" for n in attributed))
    if answer.support:
        unsupported = [s for s in answer.support if not s.supported]
        lines.append(f"**Support:** {len(answer.support) - len(unsupported)}/{len(answer.support)} sentences supported "
                     "by the retrieved sources.")
        lines += [f"- unsupported ({s.score:.2f}{', incomplete sentence' if not s.complete else ''}): {s.sentence}"
                  for s in unsupported]
    else:
        lines.append("**Support:** no complete sentence to check.")
    if answer.numbers:
        unsourced = [n for n in answer.numbers if not n.found]
        lines.append(f"**Numbers:** {len(answer.numbers) - len(unsourced)}/{len(answer.numbers)} found in the sources "
                     "their sentence cites.")
        lines += [f"- ✗ not in {', '.join(f'[{i}]' for i in n.sources) or 'any cited source'}: **{n.number}** "
                  f"in “{n.sentence}”" for n in unsourced]
    if answer.equations:
        lines.append("**Equations:**")
        lines += [f"- {STATUS_MARK[e.status]} {e.status}: `{e.latex}` {('— ' + e.detail) if e.detail else ''}"
                  for e in answer.equations]
    if answer.invalid_citations:
        lines.append("**Invalid citations:** " + ", ".join(f"[{n}]" for n in answer.invalid_citations))
    return "\n".join(lines)


# --- handlers ---------------------------------------------------------------------------------

def client_id(request: gr.Request | None, trusted_proxies: str = "") -> str:
    """Who is asking, as far as this server can tell: the connection's own address, unless it is
    a trusted reverse proxy; then the address that proxy put at the end of X-Forwarded-For (a
    client can only prepend forged entries, never replace what its proxy appends)."""
    if request is None:
        return "local"
    host = request.client.host if request.client else ""
    trusted = {p.strip() for p in trusted_proxies.split(",") if p.strip()}
    if host and (host in trusted or "*" in trusted):
        chain = [a.strip() for a in (request.headers.get("x-forwarded-for") or "").split(",") if a.strip()]
        for addr in reversed(chain):
            if addr not in trusted:
                return addr
    return host or "local"


def make_respond(app: AppState):
    def respond(message: str, history: list, request: gr.Request):
        history = list(history or []) + [{"role": "user", "content": message or ""}]

        def say(text: str, sources=gr.update(), checks=gr.update(), item=None):
            return history + [{"role": "assistant", "content": text}], sources, checks, item, ""

        try:
            clean_question(message or "", app.settings.max_question_chars)
        except QuestionError as e:  # before the rate limit: only questions asked are counted
            yield say(str(e))
            return
        wait = app.limiter.check(client_id(request, app.settings.trusted_proxies))
        if wait:
            limit = app.settings.rate_limit_per_minute
            yield say(f"Rate limit: {limit} questions per minute. Please wait {math.ceil(wait)} seconds "
                      "before asking again.")
            return
        try:
            yield say("*Searching the papers...*")
            stream = answer_stream(message or "", app.index, app.models, app.settings, app.sympy)
            sources = render_retrieved(stream.question, stream.hits)
            waiting = "*Generating an answer for another user; yours starts when it is done...*" \
                if stream.model.busy else "*Reading the sources...*"
            yield say(waiting, sources, "")
            partial = ""
            for piece in stream:
                partial += piece
                yield say(remove_links(partial, stream.hits)[0], gr.update(), gr.update())
            answer = stream.answer
            item_id = app.db.add_item(answer.question, answer.text, answer.model,
                                      [c.to_json() for c in answer.citations])
            yield say(answer.text or "(empty answer)", render_sources(answer), render_checks(answer), item_id)
        except QuestionError as e:
            yield say(str(e))
        except Exception as e:  # the app stays up: one failed question must not take it down
            log.exception("answer failed")
            reason = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
            yield say(f"Sorry, this question failed: {reason}")

    return respond


def build_app(app: AppState) -> gr.Blocks:
    with gr.Blocks(title="rqa — research question answering") as demo:
        gr.Markdown("# rqa — answers from AI research papers\nAnswers are grounded in retrieved paper chunks "
                    "and cite them as [n]; unsupported sentences and equations are checked. "
                    + model_line(app.models.files))
        for notice in app.notices:
            gr.Markdown(f"**Notice:** {notice}", elem_classes=["rqa-notice"])
        last_item = gr.State(None)
        with gr.Tab("Ask"):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Answer", latex_delimiters=LATEX_DELIMITERS, height=460,
                                         elem_id="rqa-chat")
                    question = gr.Textbox(label="Question", placeholder="e.g. Why are dot products scaled in attention?",
                                          elem_id="rqa-question", lines=2, max_lines=8)
                    with gr.Row():
                        ask = gr.Button("Ask", variant="primary", elem_id="rqa-ask")
                        up = gr.Button("Helpful", elem_id="rqa-up")
                        down = gr.Button("Not helpful", elem_id="rqa-down")
                    feedback_note = gr.Markdown("")
                    checks = gr.Markdown("", elem_id="rqa-checks", latex_delimiters=LATEX_DELIMITERS)
                    examples = gr.Dataset(components=[question], samples=[[q] for q in library.example_questions(app.index)],
                                          label="Example questions", elem_id="rqa-examples")
                with gr.Column(scale=2):
                    sources = gr.HTML("<i>Sources appear here.</i>", elem_id="rqa-sources")
            examples.click(lambda sample: sample[0], [examples], [question])
            build_papers_panel(app, examples)
            respond = make_respond(app)
            for trigger, name in ((ask.click, "ask"), (question.submit, "ask_enter")):
                trigger(respond, [question, chatbot], [chatbot, sources, checks, last_item, question], api_name=name)

            def vote(item_id, value: int, request: gr.Request | None) -> str:
                if item_id is None:
                    return "Ask a question first."
                try:
                    app.db.feedback(int(item_id), value, client_id(request, app.settings.trusted_proxies))
                except (RatingError, ValueError) as e:
                    return f"Vote not saved: {e}"
                return "Thanks for the feedback (one vote per answer; a new vote replaces the old one)."

            def vote_up(item_id, request: gr.Request):
                return vote(item_id, 1, request)

            def vote_down(item_id, request: gr.Request):
                return vote(item_id, -1, request)

            up.click(vote_up, [last_item], [feedback_note], api_name="vote_up")
            down.click(vote_down, [last_item], [feedback_note], api_name="vote_down")

        with gr.Tab("Annotate"):
            build_annotator_tab(app)
    return demo


def upload_folder() -> Path:
    """Where Gradio's upload route writes (GRADIO_TEMP_DIR, else the system temp folder's gradio/)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


# Bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE...) make "report\u202Efdp.exe" show as
# "reportexe.pdf": in names that users chose, they are shown as escapes.
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069\u061c]")


def shown(name: str) -> str:
    return _BIDI.sub(lambda m: f"\\u{ord(m.group(0)):04x}", name)


def papers_table(index: Index) -> list[list]:
    return [[shown(p.title), p.arxiv_url or "", p.pages, p.chunks, ", ".join(shown(Path(x).name) for x in p.paths)]
            for p in library.papers(index)]


def paper_choices(index: Index) -> list[tuple[str, str]]:
    return [(shown(f"{p.title} ({p.paper})"), p.sha256) for p in library.papers(index)]


def build_papers_panel(app: AppState, examples: gr.Dataset) -> None:
    with gr.Accordion(f"Papers ({len(app.index.manifest['documents'])} in the index)", open=False,
                      elem_id="rqa-papers") as panel:
        files = gr.File(label=f"Add papers: PDF, .md, .txt or .tex (at most {library.MAX_FILES_PER_UPLOAD} files, "
                              f"{library.MAX_FILE_BYTES // 2**20} MB each)", file_count="multiple",
                        file_types=sorted(SUFFIXES), elem_id="rqa-upload")
        add = gr.Button("Add to the index", elem_id="rqa-add")
        report = gr.Markdown("", elem_id="rqa-ingest-report")
        table = gr.Dataframe(papers_table(app.index), headers=["title", "arXiv", "pages", "chunks", "files"],
                             interactive=False, wrap=True, elem_id="rqa-paper-list")
        with gr.Row():
            chosen = gr.Dropdown(paper_choices(app.index), label="Paper", elem_id="rqa-paper-choice")
            remove = gr.Button("Remove from the index", variant="stop", elem_id="rqa-remove")

    def refreshed(message: str):
        index = app.index
        return (message, papers_table(index), gr.update(choices=paper_choices(index), value=None),
                gr.update(samples=[[q] for q in library.example_questions(index)]),
                gr.update(label=f"Papers ({len(index.manifest['documents'])} in the index)"))

    def do_add(uploaded, progress=gr.Progress(track_tqdm=True)):
        names = [f if isinstance(f, str) else f.name for f in (uploaded or [])]
        if not names:
            return refreshed("Choose one or more files first.")
        try:
            paths = library.uploaded_files(names, upload_folder())
            refused = library.check_uploads(paths, app.index)
        except ValueError as e:
            return refreshed(f"**Not added:** {e}")
        lines = [f"- **{shown(p.name)}**: skipped, {why}" for p, why in refused]
        ok = [p for p in paths if p not in {r for r, _ in refused}]
        if ok:
            if not app.write_lock.acquire(blocking=False):
                waiting = "Another upload is being indexed; yours starts as soon as it is done."
                gr.Info(waiting)
                progress(0, desc=waiting)
                app.write_lock.acquire()
                lines.insert(0, "Another upload was being indexed; yours waited for it.\n")
            try:
                progress(0, desc="ingesting")
                result, app.index = library.add_files(ok, app.index, app.settings)
            except USER_ERRORS as e:
                return refreshed(f"**Not added:** {e}")
            finally:
                app.write_lock.release()
            for f in result.per_file:
                name = shown(Path(f.path).name)
                lines.append(f"- **{name}**: skipped, {f.reason}" if f.status == "skipped" else
                             f"- **{name}**: {f.status}: {shown(f.title)} ({f.pages} pages, {f.chunks} chunks)")
        return refreshed("\n".join(lines))

    def do_remove(sha):
        if not sha:
            return refreshed("Choose a paper to remove.")
        title = next((p.title for p in library.papers(app.index) if p.sha256 == sha), sha[:12])
        try:
            with app.write_lock:
                app.index = library.remove(sha, app.index, app.settings)
        except (ValueError, *USER_ERRORS) as e:
            return refreshed(f"**Not removed:** {e}")
        return refreshed(f"Removed **{shown(title)}** from the index.")

    outputs = [report, table, chosen, examples, panel]
    add.click(do_add, [files], outputs, api_name="add_papers")
    remove.click(do_remove, [chosen], outputs, api_name="remove_paper")


def render_item(row: dict | None) -> str:
    """The item as escaped text: question, answer and sources come from anonymous chat users
    and from uploaded papers, so nothing of theirs is rendered as Markdown or HTML (a planted
    image would be fetched by the annotator's browser, a planted link offered inside the rating view)."""
    if row is None:
        return "<p><i>Nothing left to rate. Thank you!</i></p>"
    e = html.escape
    srcs = json.loads(row["sources"] or "[]")
    src = "".join(f"<li>[{e(str(s.get('n')))}] <b>{e(str(s.get('title')))}</b>, {e(str(s.get('section')))}, "
                  f"p. {e(str(s.get('pages')))}: {e(str(s.get('text', ''))[:300])}</li>" for s in srcs)
    text = 'style="white-space: pre-wrap"'
    return (f"<p><b>Item {row['id']}</b> · model <code>{e(row['model'])}</code> · from {e(row['origin'])}</p>"
            f"<p><b>Question:</b></p><p {text}>{e(row['question'])}</p>"
            f"<p><b>Answer:</b></p><p {text}>{e(row['answer'])}</p>"
            f"<p><b>Sources:</b></p>" + (f"<ul>{src}</ul>" if src else "<p>(none)</p>"))


def build_annotator_tab(app: AppState) -> None:
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
        s = app.db.summary()
        fb = app.db.feedback_counts()
        lines = [f"**{s['ratings']} ratings.** Chat feedback: helpful {fb['up']} · not helpful {fb['down']}",
                 "", "| model | ratings | mean depth | correct | partly | wrong |", "|---|---|---|---|---|---|"]
        lines += [f"| {m} | {v['n']} | {v['mean_depth']:.2f} | {v['correct']} | {v['partly']} | {v['wrong']} |"
                  for m, v in s["models"].items()]
        alpha = s["alpha"]
        lines.append(f"\nKrippendorff's alpha (ordinal, depth): {alpha if alpha is not None else 'n/a (needs two annotators on one item)'}")
        return "\n".join(lines)

    def do_login(tok: str, request: gr.Request):
        client = client_id(request, app.settings.trusted_proxies)
        if wait := app.login_failures.wait(client):
            return "", None, f"**Too many failed logins:** try again in {math.ceil(wait)} seconds.", "", ""
        name = app.annotators.get((tok or "").strip())
        if not name:
            app.login_failures.record(client)
            return "", None, "**Unknown token:** chat users cannot rate.", "", ""
        row = app.db.next_item(name)
        return name, row["id"] if row else None, f"Logged in as **{name}**.", render_item(row), render_stats()

    def do_submit(name: str, item_id, d, corr, text):
        if not name:
            return item_id, "**Log in as an annotator first.**", gr.update(), gr.update()
        if item_id is None:
            return None, "Nothing to rate.", gr.update(), render_stats()
        try:
            app.db.rate(int(item_id), name, int(d) if d else 0, corr or "", text or "")
        except (RatingError, ValueError) as e:
            return item_id, f"**Not saved:** {e}", gr.update(), gr.update()
        row = app.db.next_item(name)
        return (row["id"] if row else None, f"Saved rating of item {item_id} as **{name}**.",
                render_item(row), render_stats())

    def do_import(name: str, file):
        if not name:
            return "**Log in as an annotator first.**", gr.update()
        if file is None:
            return "Choose a JSONL file first.", gr.update()
        try:
            (path,) = library.uploaded_files([file if isinstance(file, str) else file.name], upload_folder())
            n = app.db.import_jsonl(path.read_text(encoding="utf-8"))
        except (RatingError, UnicodeDecodeError, ValueError) as e:
            return f"**Import failed:** {e}", gr.update()
        return f"Imported {n} items.", render_stats()

    def do_export(name: str, fmt: str):
        if not name:
            return None
        out = Path(tempfile.mkdtemp()) / f"ratings.{fmt}"
        out.write_text(app.db.export(fmt), encoding="utf-8")
        return str(out)

    login.click(do_login, [token], [annotator, item, status, item_view, stats])
    submit.click(do_submit, [annotator, item, depth, correctness, comment], [item, status, item_view, stats])
    upload.upload(do_import, [annotator, upload], [status, stats])
    export_csv.click(lambda n: do_export(n, "csv"), [annotator], [download])
    export_jsonl.click(lambda n: do_export(n, "jsonl"), [annotator], [download])


def create_server(app: AppState):
    """The FastAPI server: the OpenAI-compatible routes and the Gradio UI mounted at /."""
    from fastapi import FastAPI

    from rqa.api import add_openai_routes

    demo = build_app(app)
    # Generation is serialised on the model's lock, not by Gradio's queue: every waiting user's
    # handler runs, shows its sources at once and says that another user's answer is generating.
    demo.queue(default_concurrency_limit=16)
    server = FastAPI(title="rqa")
    add_openai_routes(server, app)
    server = gr.mount_gradio_app(server, demo, path="/", max_file_size=MAX_UPLOAD, footer_links=["api"])
    # Gradio refuses a request's file that did not arrive through its upload route only once the
    # Blocks count as launched, which mount_gradio_app never marks. Without the mark it copies any
    # path a request names (/etc/..., a home folder) into its cache and hands it to the handler.
    # tests/test_http.py checks the refusal through the HTTP API.
    demo.has_launched = True
    return server


def main(argv: list[str] | None = None) -> int:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="app.py", description="The rqa web app and its OpenAI-compatible API.")
    parser.add_argument("--papers", help="a folder of papers to ingest at start (papers already indexed are skipped)")
    parser.add_argument("--index", dest="index_dir", help="index directory (default .rqa/index)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.load(**{k: v for k, v in vars(args).items() if v is not None})
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
