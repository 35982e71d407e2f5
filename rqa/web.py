"""The Gradio UI: the chat tab (streamed, cited, checked answers), the papers panel, and the
annotator tab (rqa.annotate). rqa.server mounts it beside the API."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import gradio as gr

from rqa.annotate import build_annotator_tab
from rqa.answer import answer_stream, remove_links
from rqa.collection import check_uploads, example_questions, papers
from rqa.conversation import content_text
from rqa.errors import QuestionError, RatingError, StoreError, UserError
from rqa.index import Index
from rqa.ingest import SUFFIXES
from rqa.render import model_line, render_checks, render_retrieved, render_sources, shown
from rqa.service import AppState, Refused, admit, client_id, match_secret
from rqa.uploads import upload_folder, uploaded_files

log = logging.getLogger("rqa.web")
# what a user is told of a failure that is not theirs to fix: its message may hold the server's paths
INTERNAL = "the server hit an internal error (its log says why)."
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
]


def asked_before(history: list | None) -> list[str]:
    """The user's earlier questions in this chat, oldest first: what a follow-up may lean on. Gradio
    hands a message's content over as a list of parts."""
    asked = [content_text(m.get("content")) for m in history or [] if isinstance(m, dict) and m.get("role") == "user"]
    return [q for q in asked if q and q.strip()]


def make_respond(app: AppState):
    def respond(message: str, history: list, request: gr.Request):
        earlier = asked_before(history)
        history = list(history or []) + [{"role": "user", "content": message or ""}]

        def say(text: str, sources=gr.update(), checks=gr.update(), item=None):
            return history + [{"role": "assistant", "content": text}], sources, checks, item, ""

        client = client_id(request, app.settings.trusted_proxies)
        try:
            question = admit(app, message or "", client)
        except Refused as e:
            yield say(str(e))
            return
        try:
            yield say("*Searching the papers...*")
            try:
                stream = answer_stream(question, app.index, app.models, app.settings, app.sympy, earlier=earlier)
            except QuestionError:
                app.limiter.forget(client)  # refused after all: not counted
                raise
            sources = render_retrieved(stream.question, stream.hits)
            waiting = "*Generating answers for other users; yours starts when one is done...*" \
                if stream.model.busy and stream.hits else "*Reading the sources...*"
            yield say(waiting, sources, "")
            partial = ""
            for piece in stream:
                partial += piece
                yield say(remove_links(partial, stream.hits)[0], gr.update(), gr.update())
            answer = stream.answer
            # the model's answer is what is rated (and what preference data learns from), not the quotes;
            # without papers there is none (the app's own line says the index is empty)
            item_id = app.db.add_item(stream.asked, answer.body, answer.model,
                                      [c.to_json() for c in answer.citations]) if stream.hits else None
            yield say(answer.text or "(empty answer)", render_sources(answer), render_checks(answer), item_id)
        except QuestionError as e:
            yield say(str(e))
        except Exception as e:  # the app stays up: one failed question must not take it down
            log.exception("answer failed")
            # the user's to fix: its one line; anything else may hold the server's paths, as the API says
            yield say(f"Sorry, this question failed: {e if isinstance(e, UserError) else INTERNAL}")

    return respond


def build_app(app: AppState) -> gr.Blocks:
    keep = app.settings.upload_cache_s
    with gr.Blocks(title="rqa — research question answering", delete_cache=(keep, keep) if keep else None) as demo:
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
                    examples = gr.Dataset(components=[question], samples=[[q] for q in example_questions(app.index)],
                                          label="Example questions", elem_id="rqa-examples")
                with gr.Column(scale=2):
                    sources = gr.HTML("<i>Sources appear here.</i>", elem_id="rqa-sources")
            examples.click(lambda sample: sample[0], [examples], [question])
            build_papers_panel(app, examples, demo)
            respond = make_respond(app)
            for trigger, name in ((ask.click, "ask"), (question.submit, "ask_enter")):
                trigger(respond, [question, chatbot], [chatbot, sources, checks, last_item, question], api_name=name)

            def vote(item_id, value: int, request: gr.Request | None) -> str:
                if item_id is None:
                    return "Ask a question first."
                try:
                    app.db.feedback(int(item_id), value, client_id(request, app.settings.trusted_proxies))
                except (RatingError, ValueError) as e:  # a tampered item id fails int()
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


def papers_table(index: Index) -> list[list]:
    return [[shown(p.title), p.arxiv_url or "", p.pages, p.chunks, ", ".join(shown(Path(x).name) for x in p.paths)]
            for p in papers(index)]


def paper_choices(index: Index) -> list[tuple[str, str]]:
    return [(shown(f"{p.title} ({p.paper})"), p.sha256) for p in papers(index)]


WRONG_KEY = "**Not {what}:** the key to add or remove papers is wrong (ask whoever runs this server)."


def build_papers_panel(app: AppState, examples: gr.Dataset, page: gr.Blocks) -> None:
    # One function, for the reason build_annotator_tab gives: components and handlers share a closure.
    # papers_edit "off" builds no upload, no removal and no handler for either: nothing to call.
    edit = app.settings.papers_edit
    with gr.Accordion(f"Papers ({len(app.index.manifest['documents'])} in the index)", open=False,
                      elem_id="rqa-papers") as panel:
        if edit != "off":
            files = gr.File(label=f"Add papers: PDF, .md, .txt or .tex (at most {app.settings.max_files_per_upload} "
                                  f"files, {app.settings.max_upload_mb} MB each)", file_count="multiple",
                            file_types=sorted(SUFFIXES), elem_id="rqa-upload")
            key = gr.Textbox(label="Key to add or remove papers", type="password", visible=edit == "key",
                             elem_id="rqa-papers-key")
            add = gr.Button("Add to the index", elem_id="rqa-add")
        report = gr.Markdown("" if edit != "off" else "The papers of this server cannot be changed here.",
                             elem_id="rqa-ingest-report")
        table = gr.Dataframe(papers_table(app.index), headers=["title", "arXiv", "pages", "chunks", "files"],
                             interactive=False, wrap=True, elem_id="rqa-paper-list")
        if edit != "off":
            with gr.Row():
                # Any value is taken (the handler refuses a paper not in the index in one line): a client
                # of the HTTP API holds the choices of the page it never loaded, without the papers added since.
                chosen = gr.Dropdown(paper_choices(app.index), label="Paper", elem_id="rqa-paper-choice",
                                     allow_custom_value=True)
                remove = gr.Button("Remove from the index", variant="stop", elem_id="rqa-remove")

    def refreshed(message: str | None):
        index = app.index
        shown_now = (gr.update() if message is None else message, papers_table(index),
                     gr.update(samples=[[q] for q in example_questions(index)]),
                     gr.update(label=f"Papers ({len(index.manifest['documents'])} in the index)"))
        return shown_now if edit == "off" else (*shown_now, gr.update(choices=paper_choices(index), value=None))

    if edit == "off":
        page.load(lambda: refreshed(None), None, [report, table, examples, panel], api_visibility="private",
                  queue=False)
        return

    def key_refusal(given: str | None, request: gr.Request, what: str) -> str | None:
        """Why `given` does not open the panel, or None. Compared in constant time (a secret), and
        wrong keys are throttled per client as annotator logins are."""
        if edit == "open":
            return None
        matched, wait = match_secret(app, client_id(request, app.settings.trusted_proxies), given,
                                     [app.settings.papers_key.strip()])
        if wait:
            return f"**Not {what}:** too many wrong keys; try again in {math.ceil(wait)} seconds."
        return None if matched is not None else WRONG_KEY.format(what=what)

    def do_add(uploaded, given, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        names = [f if isinstance(f, str) else f.name for f in (uploaded or [])]
        if not names:
            return refreshed("Choose one or more files first.")
        if why := key_refusal(given, request, "added"):
            return refreshed(why)
        try:
            paths = uploaded_files(names, upload_folder())
            refused = check_uploads(paths, app.index, app.settings)
        except StoreError as e:
            return refreshed(f"**Not added:** {e}")
        lines = [f"- **{shown(p.name)}**: skipped, {why}" for p, why in refused]
        ok = [p for p in paths if p not in {r for r, _ in refused}]
        if ok:
            def on_wait():
                waiting = "Another upload is being indexed; yours starts as soon as it is done."
                gr.Info(waiting)
                progress(0, desc=waiting)
                lines.insert(0, "Another upload was being indexed; yours waited for it.\n")

            try:
                progress(0, desc="ingesting")
                result = app.collection.add_uploads(ok, on_wait)
            except UserError as e:
                return refreshed(f"**Not added:** {e}")
            except Exception:  # an embedder or Milvus failure: one line, the papers served as before
                log.exception("upload failed")
                return refreshed(f"**Not added:** {INTERNAL}")
            for f in result.per_file:
                name = shown(Path(f.path).name)
                lines.append(f"- **{name}**: skipped, {f.reason}" if f.status == "skipped" else
                             f"- **{name}**: {f.status}: {shown(f.title)} ({f.pages} pages, {f.chunks} chunks)")
        return refreshed("\n".join(lines))

    def do_remove(sha, given, request: gr.Request):
        if not sha:
            return refreshed("Choose a paper to remove.")
        if not isinstance(sha, str):  # Gradio's HTTP API passes any JSON value
            return refreshed("**Not removed:** that paper is not in the index (removed already?)")
        if why := key_refusal(given, request, "removed"):
            return refreshed(why)
        try:
            paper = app.collection.remove(sha)
        except UserError as e:
            return refreshed(f"**Not removed:** {e}")
        except Exception:
            log.exception("removal failed")
            return refreshed(f"**Not removed:** {INTERNAL}")
        return refreshed(f"Removed **{shown(paper.title if paper else sha[:12])}** from the index.")

    outputs = [report, table, examples, panel, chosen]
    # The components above hold the index as it was when the app started: a page opened after an
    # upload or removal must show the index as it is now, and offer its papers for removal.
    page.load(lambda: refreshed(""), None, outputs, api_visibility="private", queue=False)
    add.click(do_add, [files, key], outputs, api_name="add_papers")
    remove.click(do_remove, [chosen, key], outputs, api_name="remove_paper")
