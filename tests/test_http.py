"""The app's HTTP surface as an attacker or a careless client uses it (docs/RELIABILITY.md).

A real uvicorn server in this process, with the scripted model over a small primer index, so that
each request goes through the same routes, Gradio queue and handlers as in production.
"""

import html
import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from rqa.config import PRIMER_DIR, Settings
from rqa.collection import Collection, ingest_paths, open_index
from rqa.ratelimit import RateLimiter
from rqa.ratings import RatingsDB
from rqa.service import AppState
from rqa.server import create_server
from rqa.types import Sampling
from tests.conftest import ScriptedModel, ScriptedPool, free_port


@contextmanager
def live_server(tmp_path, model=None, **settings):
    import uvicorn

    s = Settings.load(index_dir=tmp_path / "index", db_path=tmp_path / "ratings.sqlite", **settings)
    ingest_paths([PRIMER_DIR / "06-bm25.md"], s, progress=False)
    app = AppState(settings=s, collection=Collection(s, open_index(s)), models=ScriptedPool(model or ScriptedModel("BM25 ranks [1].")),
                   db=RatingsDB(s.db_path), limiter=RateLimiter(s.rate_limit_per_minute), sympy=None,
                   annotators={"tok-ann": "ann"})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_server(app), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/v1/models", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def gradio_call(url: str, api_name: str, data: list, timeout: float = 240, refused: bool = False,
                session: str | None = None):
    """Gradio's HTTP API as any client may call it: POST the inputs, then read the event stream.
    Returns the outputs; with `refused`, asserts the call was refused and returns the error's text.
    Calls naming one `session` share its state (a page's, such as who logged in)."""
    body = {"data": data, **({"session_hash": session} if session else {})}
    r = httpx.post(f"{url}/gradio_api/call/{api_name}", json=body, timeout=30)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    with httpx.stream("GET", f"{url}/gradio_api/call/{api_name}/{event_id}", timeout=timeout) as events:
        kind = None
        for line in events.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                assert kind == ("error" if refused else "complete"), line
                return line[5:] if refused else json.loads(line[5:])
    raise AssertionError("no result event")


def upload(url: str, path) -> str:
    """A file sent through Gradio's upload route; returns the server-side path it names."""
    with open(path, "rb") as f:
        r = httpx.post(f"{url}/gradio_api/upload", files=[("files", (path.name, f))], timeout=60)
    r.raise_for_status()
    return r.json()[0]


def file_data(path: str) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_papers_panel_reads_only_uploaded_files(tmp_path):
    """A request naming a server path (not an upload) is refused; the file's text reaches no one.
    The same request with a really uploaded file is ingested: the check refuses only what it must."""
    secret = tmp_path / "home" / "notes.md"
    secret.parent.mkdir()
    secret.write_text("# Private notes\n\n" + "The vault combination is zebra-quartz-1234. " * 20)
    with live_server(tmp_path) as (url, app):
        refusal = gradio_call(url, "add_papers", [[file_data(secret)], ""], refused=True)
        assert "not uploaded by a user" in refusal and "zebra" not in refusal
        assert "notes" not in {p["paper"] for p in app.index.manifest["documents"].values()}
        reply = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "What is the vault combination zebra-quartz?"}]}).json()
        assert "zebra-quartz" not in json.dumps(reply["rqa"])

        # a symlink inside the upload folder that points out of it is refused too
        from rqa.uploads import upload_folder

        link = upload_folder() / f"rqa-test-{time.time_ns()}" / "notes.md"
        link.parent.mkdir(parents=True)
        link.symlink_to(secret)
        try:
            assert "not uploaded by a user" in gradio_call(url, "add_papers", [[file_data(link)], ""], refused=True)
        finally:
            link.unlink()
            link.parent.rmdir()

        stored = upload(url, PRIMER_DIR / "03-lora.md")
        report = gradio_call(url, "add_papers", [[file_data(stored)], ""])[0]
        assert "added" in report and "03-lora" in {d["paper"] for d in app.index.manifest["documents"].values()}


def test_ratings_import_reads_only_uploaded_files(tmp_path):
    """The annotator's JSONL import took any server path as well."""
    planted = tmp_path / "items.jsonl"
    planted.write_text(json.dumps({"question": "q?", "answer": "a.", "model": "m"}) + "\n")
    with live_server(tmp_path) as (url, app):
        assert "not uploaded by a user" in gradio_call(url, "do_import", [file_data(planted)], refused=True)
        assert app.db.summary()["ratings"] == 0 and app.db.next_item("ann") is None
        # the handler itself is reached with an upload, and (with no annotator logged in) refuses too
        status = gradio_call(url, "do_import", [file_data(upload(url, planted))])[0]
        assert "Log in as an annotator first" in status


def test_an_annotator_rates_items_imported_after_login(tmp_path):
    """The probe's repro: items imported after logging in with nothing to rate were not shown, and
    a rating was refused ("Nothing to rate.") until the annotator logged in again."""
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"question": "What is BM25?", "answer": "A ranking function [1].", "model": "m"}) + "\n")
    with live_server(tmp_path) as (url, app):
        # outputs as the page gets them; a state's value is not sent (None)
        assert gradio_call(url, "do_login", ["tok-ann"], session="s1")[2] == "Logged in as **ann**."
        status, _, _, shown = gradio_call(url, "do_import", [file_data(upload(url, items))], session="s1")
        assert status == "Imported 1 items." and "What is BM25?" in shown
        assert gradio_call(url, "do_submit", [4, "correct", ""], session="s1")[1].startswith("Saved rating of item")
        assert app.db.summary()["ratings"] == 1


def test_upload_check_refuses_paths_outside_the_upload_folder(tmp_path):
    """The handlers' own check, behind Gradio's: a path outside the folder, a link out of it."""
    from rqa.uploads import uploaded_files

    root, outside = tmp_path / "uploads", tmp_path / "notes.md"
    (root / "abc").mkdir(parents=True)
    outside.write_text("private")
    (root / "abc" / "paper.md").write_text("a paper")
    (root / "abc" / "link.md").symlink_to(outside)
    assert uploaded_files([str(root / "abc" / "paper.md")], root) == [(root / "abc" / "paper.md").resolve()]
    for bad in (outside, root / "abc" / "link.md", root / "abc" / ".." / ".." / "notes.md", tmp_path / "none.md"):
        with pytest.raises(ValueError, match="was not uploaded through this page"):
            uploaded_files([str(bad)], root)
    # inside the folder but gone: swept before it was added, so asked for again
    with pytest.raises(ValueError, match="no longer on the server"):
        uploaded_files([str(root / "abc" / "none.md")], root)


def test_an_upload_swept_while_it_waited_is_asked_for_again(tmp_path):
    """An upload that waited for another to be indexed until the upload folder's sweep took it was
    reported as the server failing to write its papers store: it is asked for again, and nothing
    is stored."""
    from rqa.collection import check_uploads
    from rqa.uploads import store_dir

    s = Settings.load(index_dir=tmp_path / "index")
    ingest_paths([PRIMER_DIR / "06-bm25.md"], s, progress=False)
    collection = Collection(s, open_index(s))
    here, gone = tmp_path / "uploads" / "a" / "03-lora.md", tmp_path / "uploads" / "b" / "paper.md"
    here.parent.mkdir(parents=True)
    here.write_bytes((PRIMER_DIR / "03-lora.md").read_bytes())
    for call in (lambda: check_uploads([gone], collection.index, s), lambda: collection.add_uploads([here, gone])):
        with pytest.raises(ValueError, match="^paper.md is no longer on the server"):
            call()
    assert not store_dir(s).exists() and len(collection.index.manifest["documents"]) == 1


class SlowModel:
    """Like rqa.llm.Model: one generation at a time behind a lock, a word every `delay` seconds;
    records what each call asked for."""

    name = "slow.gguf"
    adapter_name = None

    def __init__(self, words: int = 60, delay: float = 0.1):
        self.words, self.delay, self.lock, self.calls = words, delay, threading.Lock(), []

    @property
    def busy(self):
        return self.lock.locked()

    def stream(self, messages, max_tokens, sampling, cancel=None):
        self.calls.append({"max_tokens": max_tokens, "sampling": sampling})
        with self.lock:
            for i in range(min(self.words, max_tokens)):
                time.sleep(self.delay)
                yield f"word{i} "
        return "length" if self.words >= max_tokens else "stop"  # one word a token

    def complete(self, messages, prefix, max_tokens, stop):
        return None

    def count_tokens(self, messages):
        return None


def ask(url, content="What is BM25?", timeout=30, **more):
    return httpx.post(url + "/v1/chat/completions", timeout=timeout,
                      json={"messages": [{"role": "user", "content": content}], **more})


def test_disconnected_stream_frees_the_model(tmp_path):
    """The probe's repro: a streamed request whose client goes after a few chunks kept the model's
    lock until the garbage collector ran; the next request got no answer."""
    model = SlowModel(words=400, delay=0.05)
    with live_server(tmp_path, model=model, rate_limit_per_minute=0, expand_tokens=0) as (url, _):
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                          json={"messages": [{"role": "user", "content": "What is BM25?"}], "stream": True}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
        assert any("word" in line for line in got)
        time.sleep(0.5)
        t = time.perf_counter()
        model.words = 3
        reply = ask(url, timeout=15)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"].startswith("word0")
        assert time.perf_counter() - t < 10


def test_a_plain_request_whose_client_disconnects_frees_the_model(tmp_path):
    """The probe's repro: a request without `stream` whose client gave up (`curl -m3`) went on
    generating to the token limit, holding the model and one of the API's places."""
    model = SlowModel(words=400, delay=0.05)  # 20 s to the end
    with live_server(tmp_path, model=model, rate_limit_per_minute=0, expand_tokens=0) as (url, _):
        with pytest.raises(httpx.ReadTimeout):
            ask(url, timeout=1.5)
        t = time.perf_counter()
        while model.busy and time.perf_counter() - t < 10:
            time.sleep(0.1)
        assert not model.busy and time.perf_counter() - t < 5
        model.words = 3
        reply = ask(url, timeout=15)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"].startswith("word0")


class FakeLlama:
    """llama_cpp.Llama as rqa.llm.Model drives it: a word every `delay` seconds; records each prompt."""

    def __init__(self, words: int, delay: float):
        self.words, self.delay, self.prompts = words, delay, []

    def reset(self):
        pass

    def create_completion(self, prompt, max_tokens, stream=False, **kwargs):
        self.prompts.append(prompt)
        for i in range(min(self.words, max_tokens)):
            time.sleep(self.delay)
            yield {"choices": [{"text": f"word{i} ", "finish_reason": None}]}

    def tokenize(self, data, special=False):
        return data.split()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_gone_while_its_question_waits_for_the_model_leaves_the_queue(tmp_path, stream):
    """A client that left before its first token kept its places, in the model's queue and among
    the API's, until that token: the model then read its prompt for no one, and a new question was
    refused meanwhile. Now its question leaves the queue as soon as the client is found gone."""
    from pathlib import Path

    from rqa.llm import Model, chat_format

    llama = FakeLlama(words=60, delay=0.05)  # 3 s an answer
    model = Model(Path("fake.gguf"), llama, chat_format({}))
    with live_server(tmp_path, model=model, rate_limit_per_minute=0, expand_tokens=0,
                     api_max_in_flight=2) as (url, _):
        first = threading.Thread(target=ask, args=(url, "What is BM25, first?"))
        first.start()
        while not llama.prompts:
            time.sleep(0.02)
        if stream:  # reads the opening chunk (sent before any token), then leaves
            with httpx.stream("POST", url + "/v1/chat/completions", timeout=30, json={
                    "messages": [{"role": "user", "content": "Who leaves?"}], "stream": True}) as r:
                next(r.iter_lines())
        else:
            with pytest.raises(httpx.ReadTimeout):
                ask(url, "Who leaves?", timeout=1.0)
        time.sleep(0.5)
        assert first.is_alive()  # the model is still answering the first question
        third = ask(url, "What is BM25, third?", timeout=30)  # its place is the leaver's
        first.join()
        assert third.status_code == 200, third.text
        assert len(llama.prompts) == 2 and not any("Who leaves?" in p for p in llama.prompts)


@pytest.mark.parametrize("raw, reason", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}", "not valid JSON"),
])
def test_pathological_json_gets_a_400(tmp_path, raw, reason):
    with live_server(tmp_path) as (url, _):
        r = httpx.post(url + "/v1/chat/completions", content=raw, timeout=30)
        assert r.status_code == 400 and reason in r.json()["error"]["message"]


def test_rejected_questions_are_not_charged_to_the_rate_limit(tmp_path):
    with live_server(tmp_path, rate_limit_per_minute=2) as (url, _):
        for _ in range(5):
            r = ask(url, content="   \n\t ")
            assert r.status_code == 400 and "Please type a question" in r.json()["error"]["message"]
        assert ask(url).status_code == 200 and ask(url).status_code == 200
        assert ask(url).status_code == 429


def test_oversized_body_is_refused_on_its_content_length(tmp_path):
    """A 400 MB body was read whole before its 413: refused now on the header, before any body byte."""
    import socket

    with live_server(tmp_path) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 400000000\r\n\r\n{")
            reply = b""
            while b"request body over" not in reply and (data := sock.recv(4096)):
                reply += data
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 413") and "request body over" in reply
        # a body without a length is cut off at the limit as it arrives
        chunks = (b"x" * 65536 for _ in range(64))  # 4 MB, no Content-Length
        r = httpx.post(url + "/v1/chat/completions", content=chunks, timeout=30)
        assert r.status_code == 413


def test_a_question_does_not_block_the_server(tmp_path):
    """Expansion, search and a first embedder load ran on the event loop: every other request waited."""
    class SlowExpander(ScriptedModel):
        def stream(self, messages, max_tokens, sampling):
            time.sleep(4)
            yield "a guess"

    with live_server(tmp_path, rate_limit_per_minute=0, expand_tokens=32) as (url, app):
        app.models.expander_model = SlowExpander("")
        asked = threading.Thread(target=ask, args=(url,))
        asked.start()
        time.sleep(0.5)
        t = time.perf_counter()
        assert httpx.get(url + "/v1/models", timeout=30).status_code == 200
        assert time.perf_counter() - t < 2
        asked.join()


def test_questions_past_the_bound_get_503(tmp_path):
    model = SlowModel(words=40, delay=0.1)
    with live_server(tmp_path, model=model, rate_limit_per_minute=0, api_max_in_flight=1, expand_tokens=0) as (url, _):
        first = threading.Thread(target=ask, args=(url,))
        first.start()
        time.sleep(1)
        r = ask(url)
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        assert r.json()["error"]["code"] == "overloaded"
        first.join()
        assert ask(url).status_code == 200  # the slot is free again


@pytest.mark.parametrize("more, message, param", [
    ({"n": 3}, "'n' must be 1", "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, "'tools' is not supported",
     "tools"),
    ({"response_format": {"type": "json_object"}}, "'response_format' is not supported", "response_format"),
    ({"max_tokens": 10**9}, "'max_tokens' must be an integer from 1 to", "max_tokens"),
    ({"max_tokens": -5}, "'max_tokens' must be an integer from 1 to", "max_tokens"),
    ({"max_tokens": 5000, "max_completion_tokens": 5}, "'max_tokens' must be an integer from 1 to", "max_tokens"),
    ({"temperature": -3}, "'temperature' must be a number from 0 to 2", "temperature"),
    ({"stream": "yes"}, "'stream' must be a boolean", "stream"),
    ({"top_p": 1.5}, "'top_p' must be a number from 0 to 1", "top_p"),
    ({"seed": 2**64}, "'seed' must be an integer (64-bit)", "seed"),
    ({"seed": "7"}, "'seed' must be an integer (64-bit)", "seed"),
    ({"presence_penalty": 3}, "'presence_penalty' must be a number from -2 to 2", "presence_penalty"),
    ({"frequency_penalty": True}, "'frequency_penalty' must be a number from -2 to 2", "frequency_penalty"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "'stop' must be a string or an array of up to 4 strings", "stop"),
    ({"stop": ""}, "'stop' must be a string or an array of up to 4 strings", "stop"),
    ({"stop": [1]}, "'stop' must be a string or an array of up to 4 strings", "stop"),
    ({"logit_bias": {"1734": 5}}, "'logit_bias' is not supported", "logit_bias"),
    ({"stream_options": {"include_usage": True}}, "'stream_options' is allowed only with 'stream': true",
     "stream_options"),
])
def test_unsupported_openai_parameters_are_refused_naming_the_field(tmp_path, more, message, param):
    with live_server(tmp_path, rate_limit_per_minute=0) as (url, _):
        r = ask(url, **more)
        assert r.status_code == 400 and message in r.json()["error"]["message"]
        assert r.json()["error"]["param"] == param  # was "messages" whatever the field


def test_the_openai_default_response_format_is_accepted(tmp_path):
    with live_server(tmp_path, rate_limit_per_minute=0) as (url, _):
        assert ask(url, response_format={"type": "text"}).status_code == 200
        assert ask(url, modalities=["text"]).status_code == 200  # OpenAI's default too
        assert ask(url, modalities=["text", "audio"]).json()["error"]["param"] == "modalities"


def test_other_v1_addresses_get_openai_error_objects_and_the_model_can_be_retrieved(tmp_path):
    """Gradio, mounted at "/", answered them with a bare {"detail": "Not Found"}: the OpenAI client's
    models.retrieve failed, and a GET of the chat route was a 404 instead of a 405."""
    import openai

    with live_server(tmp_path, rate_limit_per_minute=0) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        assert client.models.retrieve("rqa").id == "rqa"
        with pytest.raises(openai.NotFoundError, match="The model 'gpt-4' does not exist"):
            client.models.retrieve("gpt-4")
        r = httpx.get(url + "/v1/chat/completions", timeout=30)
        assert r.status_code == 405 and r.headers["allow"] == "POST" and "use POST" in r.json()["error"]["message"]
        for method, path in (("POST", "/v1/completions"), ("GET", "/v1/embeddings"), ("DELETE", "/v1/models")):
            r = httpx.request(method, url + path, timeout=30)
            assert r.status_code in (404, 405) and set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert httpx.post(url + "/v1/completions", timeout=30).json()["error"]["code"] == "unknown_url"


def test_a_lone_surrogate_in_stop_is_a_400_naming_stop(tmp_path):
    """JSON's "\\ud800" parses to a string no UTF-8 encoder takes: the request to the model failed (a 500)."""
    body = b'{"messages": [{"role": "user", "content": "What is BM25?"}], "stop": ["end", "\\ud800"]}'
    with live_server(tmp_path, rate_limit_per_minute=0) as (url, _):
        r = httpx.post(url + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"},
                       timeout=30)
        assert r.status_code == 400 and "'stop' holds a lone surrogate" in r.json()["error"]["message"]
        assert r.json()["error"]["param"] == "stop"


def test_max_tokens_and_sampling_are_honoured_and_any_bearer_case_is_accepted(tmp_path):
    """OpenAI's top_p, seed, penalties and stop were accepted and ignored: the model drew its tokens
    as if they had not been sent. Each now reaches the model (the real models' side: test_llm)."""
    model = SlowModel(words=50, delay=0)
    with live_server(tmp_path, model=model, rate_limit_per_minute=0, expand_tokens=0, api_keys="k1") as (url, _):
        r = httpx.post(url + "/v1/chat/completions", timeout=30, headers={"Authorization": "bearer k1"},
                       json={"messages": [{"role": "user", "content": "What is BM25?"}], "max_tokens": 3,
                             "temperature": 0.7, "top_p": 0.9, "seed": 7, "presence_penalty": 0.5,
                             "frequency_penalty": -0.5, "stop": ["word9", "word9", "END"], "user": "u1"})
        assert r.status_code == 200, r.text
        assert model.calls[-1] == {"max_tokens": 3, "sampling": Sampling(0.7, 0.9, 7, 0.5, -0.5, ("word9", "END"))}
        cut = httpx.post(url + "/v1/chat/completions", timeout=30, headers={"Authorization": "Bearer k1"},
                         json={"messages": [{"role": "user", "content": "What is BM25?"}], "max_tokens": 5,
                               "stop": "word2", "seed": -1})
        # the scripted model ignores stops (the engines' side: test_llama_server); nothing written after
        # the model's text (quotes, sources named) may bring one back either
        assert cut.json()["choices"][0]["message"]["content"].strip() == "word0 word1"
        assert model.calls[-1]["sampling"].seed == 2**32 - 2  # OpenAI's 64-bit seeds, folded into llama.cpp's
        assert r.json()["choices"][0]["message"]["content"].split()[:3] == ["word0", "word1", "word2"]
        assert "word3" not in r.json()["choices"][0]["message"]["content"]
        assert r.json()["choices"][0]["finish_reason"] == "length"  # cut by max_tokens, as OpenAI says it
        model.words = 2
        r = httpx.post(url + "/v1/chat/completions", timeout=30, headers={"Authorization": "Bearer k1"},
                       json={"messages": [{"role": "user", "content": "What is BM25?"}], "max_tokens": 3})
        assert r.json()["choices"][0]["finish_reason"] == "stop"
        assert model.calls[-1]["sampling"] == Sampling()  # nothing asked: the app's greedy answer
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=30, headers={"Authorization": "Bearer k1"},
                          json={"messages": [{"role": "user", "content": "What is BM25?"}], "max_tokens": 2,
                                "stream": True, "stream_options": {"include_usage": True}}) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        # OpenAI's include_usage: "usage": null on every chunk, then one with no choices and the counts
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert all(e["usage"] is None for e in events[:-1])
        assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 2
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=30, headers={"Authorization": "Bearer k1"},
                          json={"messages": [{"role": "user", "content": "What is BM25?"}], "max_tokens": 2,
                                "stream": True}) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        assert events[-1]["choices"][0]["finish_reason"] == "length" and "usage" not in events[-1]
        # streamed, the answer reads as the plain response does: "word0 word1", not "word0 word1 "
        streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        assert streamed == "word0 word1" == r.json()["choices"][0]["message"]["content"]
        assert httpx.get(url + "/v1/models", headers={"Authorization": "BEARER k1"}).status_code == 200
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Basic k1"}).status_code == 401


def test_annotator_view_renders_planted_markdown_as_text():
    from rqa.render import render_item

    row = {"id": 7, "model": "m", "origin": "chat", "question": "Why? ![t](http://evil.example/x.png) [click](http://evil.example)",
           "answer": "<img src=http://evil.example/y.png> **bold**",
           "sources": json.dumps([{"n": 1, "title": "<script>alert(1)</script>", "section": "s", "pages": "1",
                                   "text": "[phish](http://evil.example)"}])}
    shown = render_item(row)
    assert "<img" not in shown and "<a " not in shown and "<script" not in shown
    assert "![t](http://evil.example/x.png)" in shown and "&lt;img src=http://evil.example/y.png&gt;" in shown


def test_the_ratings_summary_shows_imported_model_names_as_written(tmp_path):
    """Model names come from imported files; the summary is Markdown: a planted image was fetched by
    every annotator's browser, a "|" broke the table."""
    import markdown_it

    from rqa.ratings import RatingsDB
    from rqa.render import ratings_table

    db = RatingsDB(tmp_path / "r.sqlite")
    planted = ["![x](https://evil.example/p.png)", "a|b <img src=x> www.evil.example **bold**", "qwen2.5-coder\u202e"]
    for name in planted:
        db.rate(db.add_item("q?", "a.", name), "ann", 3, "correct")
    table = ratings_table(db.summary(), db.feedback_counts())
    shown = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(table)
    assert "<img" not in shown and "<a " not in shown and "<strong>bold" not in shown and "\u202e" not in shown
    assert shown.count("<tr>") == 1 + len(planted)  # the header and one row a model, each of six cells
    assert all(row.count("<td>") == 6 for row in shown.split("<tr>")[2:])
    assert "qwen2.5-coder\\u202e" in html.unescape(shown)


def test_failed_annotator_logins_are_throttled(tmp_path):
    """100 wrong tokens took 6.5 s: after 5 failures a minute, a client waits, even with the right token."""
    with live_server(tmp_path) as (url, _):
        for _ in range(5):
            assert "Unknown token" in gradio_call(url, "do_login", ["guess"])[2]
        assert "Too many failed logins" in gradio_call(url, "do_login", ["guess"])[2]
        assert "Too many failed logins" in gradio_call(url, "do_login", ["tok-ann"])[2]


def test_bidi_controls_in_file_names_are_shown_escaped(tmp_path):
    """'report\\u202efdp.md' would show as 'reportdm.pdf' in the papers list."""
    name = "report\u202efdp.exe.md"
    (tmp_path / "up").mkdir()
    path = tmp_path / "up" / name
    path.write_text("# Bidi\n\n" + "BM25 is a ranking function used by search engines. " * 10)
    with live_server(tmp_path) as (url, _):
        report, table = gradio_call(url, "add_papers", [[file_data(upload(url, path))], ""])[:2]
        assert "added" in report and "\u202e" not in report and "report\\u202efdp.exe.md" in report
        assert "\u202e" not in json.dumps(table, ensure_ascii=False) and "\\\\u202e" in json.dumps(table)


def test_a_waiting_upload_is_told_another_is_being_indexed(tmp_path):
    """A second upload waited silently for minutes behind the first: now it hears why at once
    (a notice on the page while it waits, and a line in its report)."""
    with live_server(tmp_path) as (url, app):
        stored = upload(url, PRIMER_DIR / "03-lora.md")
        app.collection.lock.acquire()  # another upload is being indexed
        threading.Timer(3, app.collection.lock.release).start()
        report = gradio_call(url, "add_papers", [[file_data(stored)], ""], timeout=120)[0]
        assert report.startswith("Another upload was being indexed; yours waited for it.")
        assert "added" in report and "03-lora" in {d["paper"] for d in app.index.manifest["documents"].values()}


def test_a_client_gone_before_the_first_chunk_frees_its_slot(tmp_path):
    """A stream whose client left during the search never started its body, so the slot it held
    was never given back: after api_max_in_flight such clients, every question got 503."""
    class SlowExpander(ScriptedModel):
        def stream(self, messages, max_tokens, sampling):
            time.sleep(2)
            yield "a guess"

    import gc

    with live_server(tmp_path, rate_limit_per_minute=0, api_max_in_flight=1, expand_tokens=32) as (url, app):
        app.models.expander_model = SlowExpander("")
        gc.disable()  # nothing may depend on the garbage collector happening to run
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", timeout=0.5,
                       json={"messages": [{"role": "user", "content": "What is BM25?"}], "stream": True})
        time.sleep(3)  # the search ends; the stream starts and sees its client gone
        app.models.expander_model = ScriptedModel("")
        try:
            assert ask(url).status_code == 200
        finally:
            gc.enable()


def test_streamed_links_are_removed_as_they_stream(tmp_path):
    model = ScriptedModel("See http://evil.example/phish for it, and [this](HTTPS://evil.example/x) [1].")
    with live_server(tmp_path, model=model, rate_limit_per_minute=0) as (url, _):
        text = ""
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                          json={"messages": [{"role": "user", "content": "What is BM25?"}], "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and '"choices"' in line:
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        assert "evil.example/" not in text and "http" not in text.lower()
        assert text.startswith("See (link to evil.example removed) for it")


def test_a_paper_added_since_startup_is_removed_through_the_http_api(tmp_path):
    """The probe's repro: `remove_paper` refused a paper added after startup ("not in the list of
    choices": a client of the HTTP API never loads the page that refreshes them) and echoed any
    value sent with the whole list. A file named twice in one request was reported twice."""
    with live_server(tmp_path) as (url, app):
        stored = upload(url, PRIMER_DIR / "03-lora.md")
        report = gradio_call(url, "add_papers", [[file_data(stored), file_data(stored)], ""])[0]
        assert report.count("03-lora") == 1 and "added" in report
        sha = next(k for k, d in app.index.manifest["documents"].items() if d["paper"] == "03-lora")
        report = gradio_call(url, "remove_paper", [sha, ""])[0]
        assert report.startswith("Removed") and sha not in app.index.manifest["documents"]
        report = gradio_call(url, "remove_paper", ["x" * 10_000, ""])[0]
        assert report == "**Not removed:** that paper is not in the index (removed already?)"
        report = gradio_call(url, "remove_paper", [{"a": 1}, ""])[0]  # any JSON: was "unhashable type: 'dict'"
        assert report == "**Not removed:** that paper is not in the index (removed already?)"


def test_the_papers_can_be_guarded_by_a_key_or_closed(tmp_path):
    """Anyone who could load the page (or call its HTTP API) could remove every paper of a public
    server. With papers_edit=key only the key adds or removes; with off there is nothing to call."""
    with live_server(tmp_path / "key", papers_edit="key", papers_key="long-random-key") as (url, app):
        props = {c["props"].get("elem_id"): c["props"] for c in httpx.get(url + "/config", timeout=30).json()["components"]}
        assert props["rqa-papers-key"]["visible"] is True and props["rqa-papers-key"]["type"] == "password"
        before = dict(app.index.manifest["documents"])
        stored = upload(url, PRIMER_DIR / "03-lora.md")
        for given in ("", "long-random-ke"):
            report = gradio_call(url, "add_papers", [[file_data(stored)], given])[0]
            assert report.startswith("**Not added:** the key to add or remove papers is wrong")
            sha = next(iter(before))
            report = gradio_call(url, "remove_paper", [sha, given])[0]
            assert report.startswith("**Not removed:** the key to add or remove papers is wrong")
            assert app.index.manifest["documents"] == before
        report = gradio_call(url, "add_papers", [[file_data(stored)], "long-random-key"])[0]
        assert "added" in report and "03-lora" in {d["paper"] for d in app.index.manifest["documents"].values()}
        report = gradio_call(url, "remove_paper", [sha, " long-random-key\n"])[0]  # pasted with blanks
        assert report.startswith("Removed") and sha not in app.index.manifest["documents"]
        # wrong keys are throttled per client, as annotator logins are: 5 a minute, then even the key waits
        gradio_call(url, "remove_paper", [sha, "guess"])
        report = gradio_call(url, "remove_paper", [sha, "long-random-key"])[0]
        assert report.startswith("**Not removed:** too many wrong keys; try again in")
    with live_server(tmp_path / "off", papers_edit="off") as (url, app):
        config = httpx.get(url + "/config", timeout=30).json()
        ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert "rqa-paper-list" in ids and not ids & {"rqa-upload", "rqa-add", "rqa-remove", "rqa-papers-key"}
        assert not {d.get("api_name") for d in config["dependencies"]} & {"add_papers", "remove_paper"}
        assert httpx.post(f"{url}/gradio_api/call/remove_paper", json={"data": ["x", ""]}, timeout=30).status_code >= 400
    with pytest.raises(Exception, match="papers_edit='key' needs papers_key"):
        Settings.load(papers_edit="key")
    with pytest.raises(Exception, match="papers_key is set but papers_edit is 'open'"):
        Settings.load(papers_key="a key that would guard nothing")


def test_a_question_too_long_in_tokens_gets_a_400(tmp_path):
    """Within the character bound but past the model's context in tokens: 400 with OpenAI's code,
    not a 500, and not charged to the rate limit (only questions asked are); a question that fits
    is answered."""
    with live_server(tmp_path, n_ctx=1024, max_new_tokens=256, rate_limit_per_minute=2) as (url, _):
        for _ in range(3):
            r = ask(url, "a " * 990)  # the scripted model counts a word a token
            assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
            assert r.json()["error"]["message"].startswith("The question is too long for the model")
        assert ask(url).status_code == 200 and ask(url).status_code == 200
        assert ask(url).status_code == 429


def test_uploads_do_not_stay_in_gradio_upload_folder(tmp_path):
    """Gradio's copy of every upload stayed in its upload folder for good, added or not: now each is
    deleted once older than `upload_cache_s`, and all at shutdown."""
    from pathlib import Path

    with live_server(tmp_path / "a", upload_cache_s=1) as (url, app):
        swept = Path(upload(url, PRIMER_DIR / "03-lora.md"))
        assert swept.is_file()
        for _ in range(100):
            if not swept.exists():
                break
            time.sleep(0.1)
        assert not swept.exists()
        # added after it was swept: asked for again, not taken for a path that never was an upload
        report = gradio_call(url, "add_papers", [[file_data(swept)], ""])[0]
        assert report.startswith("**Not added:** 03-lora.md is no longer on the server") and "choose it again" in report
    with live_server(tmp_path / "b") as (url, app):
        kept = Path(upload(url, PRIMER_DIR / "03-lora.md"))
        time.sleep(2)
        assert kept.is_file()  # the default keeps it an hour
        report = gradio_call(url, "add_papers", [[file_data(kept)], ""])[0]
        assert "added" in report
    assert not kept.exists()  # gone at shutdown
