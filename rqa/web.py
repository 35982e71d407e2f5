"""The Gradio app: a chat tab (streamed, cited, checked answers) and an annotator tab."""

from __future__ import annotations

import html
import json
import logging
import math
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from rqa.answer import Answer, Citation, QuestionError, answer_stream
from rqa.config import Settings
from rqa.corpus import open_index
from rqa.equations import SympyWorker
from rqa.errors import USER_ERRORS
from rqa.index import STOPWORDS, Index
from rqa.llm import ModelPool
from rqa.ratelimit import RateLimiter
from rqa.ratings import RUBRIC, RatingError, RatingsDB, parse_annotators

log = logging.getLogger("rqa.web")
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
]


@dataclass
class AppState:
    """What the running app shares across sessions: loaded once at start."""

    settings: Settings
    index: Index
    models: ModelPool
    db: RatingsDB
    limiter: RateLimiter
    sympy: SympyWorker
    annotators: dict[str, str] = field(default_factory=dict)  # token -> name

    @classmethod
    def start(cls, settings: Settings) -> "AppState":
        models = ModelPool(settings)
        models.get("q4")  # load now: a missing or corrupt model fails at start, not at the first question
        return cls(settings=settings, index=open_index(settings), models=models, db=RatingsDB(settings.db_path),
                   limiter=RateLimiter(settings.rate_limit_per_minute),
                   sympy=SympyWorker(settings.sympy_timeout_s), annotators=parse_annotators(settings.annotators))


# --- rendering --------------------------------------------------------------------------------

def mark_terms(text: str, question: str) -> str:
    words = {w for w in re.findall(r"[A-Za-z0-9]{3,}", question.lower()) if w not in STOPWORDS}
    escaped = html.escape(text)
    if not words:
        return escaped
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")\w*", re.I)
    return pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", escaped)


def render_source(c: Citation, question: str) -> str:
    ch = c.hit.chunk
    link = f' · <a href="{c.arxiv_url}" target="_blank">arXiv:{ch.arxiv_id}</a>' if c.arxiv_url else ""
    return (f'<div class="rqa-source" id="source-{c.n}"><b>[{c.n}] {html.escape(ch.title)}</b><br>'
            f'<small>{html.escape(ch.section)} · p. {ch.pages} · {html.escape(ch.paper)}{link}</small>'
            f'<p>{mark_terms(ch.text, question)}</p></div>')


def render_sources(answer: Answer) -> str:
    parts = ["<h4>Cited sources</h4>"]
    parts += [render_source(c, answer.question) for c in answer.citations] or ["<p><i>The answer cites no source.</i></p>"]
    if answer.invalid_citations:
        parts.append(f'<p class="rqa-warning">⚠ Citations to sources that do not exist: '
                     f'{", ".join(f"[{n}]" for n in answer.invalid_citations)}</p>')
    if answer.uncited:
        parts.append("<details><summary>Retrieved but not cited</summary>")
        parts += [render_source(c, answer.question) for c in answer.uncited]
        parts.append("</details>")
    return "\n".join(parts)


def render_checks(answer: Answer) -> str:
    lines = [f"**Model:** `{answer.model}`"]
    lines += [f"ℹ️ {n}" for n in answer.notices]
    unsupported = [s for s in answer.support if not s.supported]
    lines.append(f"**Support:** {len(answer.support) - len(unsupported)}/{len(answer.support)} sentences supported "
                 "by the retrieved sources.")
    lines += [f"- ⚠ unsupported ({s.score:.2f}): {s.sentence}" for s in unsupported]
    if answer.equations:
        icon = {"matches source": "✅", "unverified": "❔", "malformed": "❌"}
        lines.append("**Equations:**")
        lines += [f"- {icon[e.status]} {e.status}: `{e.latex}` {('— ' + e.detail) if e.detail else ''}" for e in answer.equations]
    if answer.invalid_citations:
        lines.append("**Invalid citations:** " + ", ".join(f"[{n}]" for n in answer.invalid_citations))
    return "\n".join(lines)


# --- handlers ---------------------------------------------------------------------------------

def client_id(request: gr.Request | None) -> str:
    if request is None:
        return "local"
    forwarded = request.headers.get("x-forwarded-for", "") if request.headers else ""
    return forwarded.split(",")[0].strip() or (request.client.host if request.client else "") or request.session_hash or "local"


def make_respond(app: AppState):
    def respond(message: str, history: list, request: gr.Request):
        history = list(history or []) + [{"role": "user", "content": message or ""}]
        wait = app.limiter.check(client_id(request))
        if wait:
            limit = app.settings.rate_limit_per_minute
            history.append({"role": "assistant", "content": f"⏳ Rate limit: {limit} questions per minute. "
                            f"Please wait {math.ceil(wait)} seconds before asking again."})
            yield history, gr.update(), gr.update(), None, ""
            return
        partial = ""
        try:
            for piece in answer_stream(message or "", app.index, app.models, app.settings, app.sympy):
                if isinstance(piece, Answer):
                    item_id = app.db.add_item(piece.question, piece.text, piece.model,
                                              [c.to_json() for c in piece.citations])
                    history[-1:] = [history[-1], {"role": "assistant", "content": piece.text or "(empty answer)"}]
                    yield history, render_sources(piece), render_checks(piece), item_id, ""
                    return
                partial += piece
                yield history + [{"role": "assistant", "content": partial}], gr.update(), gr.update(), None, ""
        except QuestionError as e:
            history.append({"role": "assistant", "content": str(e)})
            yield history, gr.update(), gr.update(), None, ""
        except Exception as e:  # the app stays up: one failed question must not take it down
            log.exception("answer failed")
            reason = str(e) if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {e}"
            history.append({"role": "assistant", "content": f"⚠ Sorry, this question failed: {reason}"})
            yield history, gr.update(), gr.update(), None, ""

    return respond


def build_app(app: AppState) -> gr.Blocks:
    with gr.Blocks(title="rqa — research question answering") as demo:
        gr.Markdown("# rqa — answers from AI research papers\nAnswers are grounded in retrieved paper chunks "
                    "and cite them as [n]; unsupported sentences and equations are checked.")
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
                with gr.Column(scale=2):
                    sources = gr.HTML("<i>Sources appear here.</i>", elem_id="rqa-sources")
            respond = make_respond(app)
            for trigger, name in ((ask.click, "ask"), (question.submit, "ask_enter")):
                trigger(respond, [question, chatbot], [chatbot, sources, checks, last_item, question], api_name=name)

            def vote(item_id, value, request: gr.Request):
                if item_id is None:
                    return "Ask a question first."
                app.db.feedback(item_id, value, client_id(request))
                return "Thanks for the feedback."

            up.click(lambda i, r: vote(i, 1, r), [last_item], [feedback_note])
            down.click(lambda i, r: vote(i, -1, r), [last_item], [feedback_note])

        with gr.Tab("Annotate"):
            build_annotator_tab(app)
    return demo


def build_annotator_tab(app: AppState) -> None:
    annotator = gr.State("")
    item = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                token = gr.Textbox(label="Annotator token", type="password", elem_id="rqa-token")
                login = gr.Button("Log in", elem_id="rqa-login")
            status = gr.Markdown("Log in with your annotator token to rate answers.", elem_id="rqa-annot-status")
            shown = gr.Markdown("", elem_id="rqa-item", latex_delimiters=LATEX_DELIMITERS)
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

    def render_item(row: dict | None) -> str:
        if row is None:
            return "*Nothing left to rate. Thank you!*"
        srcs = json.loads(row["sources"] or "[]")
        src_md = "\n".join(f"> [{s.get('n')}] **{s.get('title')}**, {s.get('section')}, p. {s.get('pages')}: "
                           f"{s.get('text', '')[:300]}" for s in srcs)
        return (f"**Item {row['id']}** · model `{row['model']}` · from {row['origin']}\n\n**Question:** {row['question']}"
                f"\n\n**Answer:**\n\n{row['answer']}\n\n**Sources:**\n\n{src_md or '(none)'}")

    def render_stats() -> str:
        s = app.db.summary()
        fb = app.db.feedback_counts()
        lines = [f"**{s['ratings']} ratings.** Chat feedback: 👍 {fb['up']} · 👎 {fb['down']}",
                 "", "| model | ratings | mean depth | correct | partly | wrong |", "|---|---|---|---|---|---|"]
        lines += [f"| {m} | {v['n']} | {v['mean_depth']:.2f} | {v['correct']} | {v['partly']} | {v['wrong']} |"
                  for m, v in s["models"].items()]
        alpha = s["alpha"]
        lines.append(f"\nKrippendorff's alpha (ordinal, depth): {alpha if alpha is not None else 'n/a (needs two annotators on one item)'}")
        return "\n".join(lines)

    def do_login(tok: str):
        name = app.annotators.get((tok or "").strip())
        if not name:
            return "", None, "❌ Unknown token: chat users cannot rate.", "", ""
        row = app.db.next_item(name)
        return name, row["id"] if row else None, f"Logged in as **{name}**.", render_item(row), render_stats()

    def do_submit(name: str, item_id, d, corr, text):
        if not name:
            return item_id, "❌ Log in as an annotator first.", gr.update(), gr.update()
        if item_id is None:
            return None, "Nothing to rate.", gr.update(), render_stats()
        try:
            app.db.rate(int(item_id), name, int(d) if d else 0, corr or "", text or "")
        except (RatingError, ValueError) as e:
            return item_id, f"❌ {e}", gr.update(), gr.update()
        row = app.db.next_item(name)
        return (row["id"] if row else None, f"✅ Saved rating of item {item_id} as **{name}**.",
                render_item(row), render_stats())

    def do_import(name: str, file):
        if not name:
            return "❌ Log in as an annotator first.", gr.update()
        try:
            n = app.db.import_jsonl(Path(file).read_text(encoding="utf-8"))
        except (RatingError, UnicodeDecodeError) as e:
            return f"❌ Import failed: {e}", gr.update()
        return f"Imported {n} items.", render_stats()

    def do_export(name: str, fmt: str):
        if not name:
            return None
        out = Path(tempfile.mkdtemp()) / f"ratings.{fmt}"
        out.write_text(app.db.export(fmt), encoding="utf-8")
        return str(out)

    login.click(do_login, [token], [annotator, item, status, shown, stats])
    submit.click(do_submit, [annotator, item, depth, correctness, comment], [item, status, shown, stats])
    upload.upload(do_import, [annotator, upload], [status, stats])
    export_csv.click(lambda n: do_export(n, "csv"), [annotator], [download])
    export_jsonl.click(lambda n: do_export(n, "jsonl"), [annotator], [download])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.load()
    try:
        app = AppState.start(settings)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    demo = build_app(app)
    demo.queue(default_concurrency_limit=4).launch(server_name="0.0.0.0")  # port: GRADIO_SERVER_PORT
    return 0
