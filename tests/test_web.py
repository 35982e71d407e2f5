"""The chat handler in-process with a scripted model: event order, rendering, failures (milliseconds)."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from rqa.config import Settings
from rqa.collection import Collection, open_index
from rqa.ratelimit import RateLimiter
from rqa.ratings import RatingsDB
from rqa.service import AppState
from rqa.web import make_respond
from rqa.render import render_checks
from tests.conftest import ScriptedModel, ScriptedPool


@pytest.fixture
def make_app(shared_index, tmp_path):
    def make(reply, rate_limit=0, **changes):
        model, settings = ScriptedModel(reply), dataclasses.replace(shared_index, **changes)
        return AppState(settings=settings, collection=Collection(settings, open_index(settings)), models=ScriptedPool(model),
                        db=RatingsDB(tmp_path / "r.sqlite"), limiter=RateLimiter(rate_limit), sympy=None), model
    return make


REQUEST = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"), headers={})


def test_sources_appear_before_the_first_token(make_app):
    app, _ = make_app("Adam keeps exponential moving averages of the gradient and its square [1]. "
                      "It corrects their initialisation bias.")
    events = list(make_respond(app)("How does Adam correct the bias of its moment estimates?", [], REQUEST))
    assert events[0][0][-1]["content"] == "*Searching the papers...*"  # at once, before expansion and search
    first_chat, first_sources, *_ = events[1]
    assert first_chat[-1]["content"] == "*Reading the sources...*"
    assert "[1]" in first_sources and "the model is reading them" in first_sources  # before any token
    texts = [e[0][-1]["content"] for e in events[2:-1]]
    assert texts[0] == "Adam " and texts[-1].startswith("Adam keeps exponential")  # then streamed
    chat, sources, checks, item_id, box = events[-1]
    assert item_id is not None and box == ""
    assert "Cited sources" in sources and 'class="rqa-support"' in sources  # supporting sentence highlighted
    assert "sentences supported" in checks


def test_queued_user_is_told_another_answer_is_generating(make_app):
    app, model = make_app("An answer [1].", expand_tokens=32)
    model.busy = True
    events = make_respond(app)("What is BM25?", [], REQUEST)
    assert next(events)[0][-1]["content"] == "*Searching the papers...*"  # the expansion model is free
    assert "other users" in next(events)[0][-1]["content"]

    app.models.expander_model = ScriptedModel("BM25 scores term frequency and inverse document frequency.")
    app.models.expander_model.busy = True  # under load: no queue of guesses, the question alone at once
    model.busy = False
    events = list(make_respond(app)("What is BM25?", [], REQUEST))
    assert "[1]" in events[1][1] and app.models.expander_model.prompts == []
    assert "the question alone" in events[-1][2] and "Searched with" not in events[-1][2]


def test_the_passage_the_search_used_is_shown_with_the_checks(make_app):
    app, model = make_app("Adam divides each moment estimate by one minus beta to the power t [1].", expand_tokens=32)
    guess = "Adam corrects the bias by dividing the moving averages by 1 - beta^t."
    app.models.expander_model = ScriptedModel(guess)
    checks = list(make_respond(app)("How does Adam correct its bias?", [], REQUEST))[-1][2]
    assert "Searched with" in checks and guess in checks


def test_a_failing_model_keeps_the_handler_up(make_app):
    def boom(messages):
        raise RuntimeError("llama_decode returned -3")

    app, _ = make_app(boom)
    events = list(make_respond(app)("What is BM25?", [], REQUEST))
    # one line, without the exception's own words: they may name the server's paths
    assert events[-1][0][-1]["content"] == "Sorry, this question failed: the server hit an internal error (its log says why)."


def test_a_failing_upload_or_removal_gives_one_line_and_keeps_the_papers(make_app, monkeypatch, tmp_path):
    import rqa.web
    from rqa.web import build_app

    app, _ = make_app("An answer [1].")
    before = app.collection.papers()

    def boom(*args, **kwargs):
        raise RuntimeError("embedder failed reading /srv/secret/model")

    monkeypatch.setattr(app.collection, "add_uploads", boom)
    monkeypatch.setattr(app.collection, "remove", boom)
    monkeypatch.setattr(rqa.web, "uploaded_files", lambda names, folder: [Path(n) for n in names])
    monkeypatch.setattr(rqa.web, "check_uploads", lambda paths, index, settings: [])
    handlers = {f.api_name: f.fn for f in build_app(app).fns.values()}
    added = handlers["add_papers"]([str(tmp_path / "paper.md")], "", REQUEST, progress=lambda *a, **k: None)
    removed = handlers["remove_paper"](before[0].sha256, "", REQUEST)
    for report, what in ((added[0], "added"), (removed[0], "removed")):
        assert report == f"**Not {what}:** the server hit an internal error (its log says why)."
    assert app.collection.papers() == before


def test_attributed_citations_are_shown_as_such(make_app):
    app, _ = make_app("LoRA freezes the pretrained model weights and injects trainable rank decomposition matrices "
                      "into each layer of the Transformer architecture.")
    *_, last = make_respond(app)("How does LoRA adapt a model?", [], REQUEST)
    chat, sources, checks, *_ = last
    body, *quotes = chat[-1]["content"].split('\n\n> "')
    assert body.endswith("].")  # the model wrote no number; rqa appended one
    assert quotes  # and the cited source's sentence is quoted under the answer
    assert "cited by rqa" in sources and "Citations added by rqa" in checks


def test_sources_the_model_named_after_its_answer_are_shown_as_such(make_app):
    app, model = make_app("LoRA freezes the pretrained model weights and injects trainable rank decomposition "
                          "matrices into each layer of the Transformer architecture.")
    model.names = "1"
    *_, last = make_respond(app)("How does LoRA adapt a model?", [], REQUEST)
    chat, sources, *_ = last
    assert chat[-1]["content"].startswith("LoRA freezes") and "architecture [1]" in chat[-1]["content"]
    assert "named by the model when asked after its answer" in sources and len(model.completions) == 1


def test_checks_never_call_an_empty_answer_supported():
    from rqa.answer import finish

    answer = finish("q", "", [], "m.gguf", Settings(), None, [], {})
    assert "no complete sentence to check" in render_checks(answer)


def test_the_page_names_the_base_and_its_adapter():
    from pathlib import Path

    from rqa.llm import ModelFiles
    from rqa.render import model_line

    assert model_line(ModelFiles(Path("/m/base.gguf"), None, "offline:b", Path("/a/rqa-lora.gguf"))) == \
        "Model: `base.gguf`, fine-tuned by rqa: adapter `rqa-lora.gguf`."
    assert model_line(ModelFiles(Path("/m/base.gguf"), None, "offline:b", Path("/a/rqa-lora.gguf"), 0.5)) == \
        "Model: `base.gguf`, fine-tuned by rqa: adapter `rqa-lora.gguf` at scale 0.5."
    assert model_line(ModelFiles(Path("/m/q4.gguf"), Path("/m/q8.gguf"), "path")) == \
        "Model: `q4.gguf` (reasoning questions: `q8.gguf`), stock."


def test_question_words_are_highlighted_without_breaking_the_texts_entities():
    from rqa.render import mark_text

    text = 'Q & A: the "amp" unit <b> quotes 3 > 2'
    marked = mark_text(text, [], "What do the amp and quot units quote?")
    assert marked == ('Q &amp; A: the &quot;<mark>amp</mark>&quot; unit &lt;b&gt; <mark>quotes</mark> 3 &gt; 2')


def test_a_question_too_long_for_the_model_is_not_charged_to_the_rate_limit(make_app):
    app, _ = make_app("An answer [1].", rate_limit=1, n_ctx=1024, max_new_tokens=256)
    for _ in range(2):
        *_, last = make_respond(app)("a " * 990, [], REQUEST)  # the scripted model counts a word a token
        assert last[0][-1]["content"].startswith("The question is too long for the model")
    *_, last = make_respond(app)("What is BM25?", [], REQUEST)
    assert last[0][-1]["content"].startswith("An answer [1].")
    *_, last = make_respond(app)("What is BM25?", [], REQUEST)
    assert last[0][-1]["content"].startswith("Rate limit:")
