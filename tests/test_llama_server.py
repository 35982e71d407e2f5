"""Generation on llama.cpp's own server, built at install (`make install`), with the small test
model: parallel slots, cancellation on disconnect, a crash restarted, and the app's API on it."""

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from rqa.config import Settings
from rqa.errors import Cancelled, ModelError
from rqa.llama_server import find_binary
from rqa.llm import ModelPool
from rqa.remote import RemoteModel
from rqa.types import GREEDY, Sampling
from tests.conftest import ROOT

TEST_MODEL = "smollm2-135m-instruct"
LONG = [{"role": "user", "content": "Count from 1 to 500, one number per line, and say nothing else."}]
SHORT = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def pool():
    assert find_binary(), "llama-server is not built: `make install` builds it into .venv/llama-server"
    pool = ModelPool(Settings.load(model=TEST_MODEL, slots=2, n_ctx=1024), engine="server")
    yield pool
    pool.close()


def first_piece(stream, out: dict, key: str, done: dict):
    """Consume a stream, recording when its first piece and its end arrive."""
    for piece in stream:
        out.setdefault(key, time.monotonic())
    done[key] = time.monotonic()


def slot_busy(model: RemoteModel) -> list[bool]:
    return [s["is_processing"] for s in httpx.get(model.base + "/slots", timeout=5).json()]


def test_the_server_serves_the_model_with_its_own_turn_format(pool):
    model = pool.get()
    assert isinstance(model, RemoteModel) and model.name == "smollm2-135m-instruct.gguf" and model.slots == 2
    text = "".join(model.stream(SHORT, 16, GREEDY))
    assert text.strip() and "<|im_" not in text  # the chat turn ended at its own stop token
    assert pool.expander() is model  # expansion and answers share the server


def ended(stream) -> str | None:
    """Why a model's stream ended: its generator's return value."""
    while True:
        try:
            next(stream)
        except StopIteration as end:
            return end.value


def test_the_prompt_is_counted_and_the_stop_named_as_the_model_reads_and_writes(pool):
    """The API's usage.prompt_tokens (it was always 0) and finish_reason (always "stop"): llama-
    server's own count of the prompt it read, and the in-process model's, agree with /tokenize's (a
    chat-completions server cannot say); both say whether the token limit or the model ended it."""
    from rqa.llm import load_model

    model = pool.get()
    body = {**model.request(SHORT, 1, GREEDY)[1], "stream": False, "cache_prompt": False}
    read = httpx.post(model.base + "/v1/completions", json=body, timeout=60).json()["usage"]["prompt_tokens"]
    assert model.count_tokens(SHORT) == read > 5
    local = load_model(pool.files.q4, Settings.load(model=TEST_MODEL, n_ctx=512))
    assert local.count_tokens(SHORT) == read
    assert dataclasses.replace(model, render=None).count_tokens(SHORT) is None
    for m in (model, local):
        assert ended(m.stream(LONG, 3, GREEDY)) == "length" and ended(m.stream(SHORT, 64, GREEDY)) == "stop"


def test_stop_strings_and_the_sampler_reach_both_engines(pool):
    """The API's stop, top_p and seed reached neither engine (accepted, then ignored). A stop string
    ends the answer where the model writes it, left out; a seed makes a sampled answer repeatable."""
    from rqa.llm import load_model

    local = load_model(pool.files.q4, Settings.load(model=TEST_MODEL, n_ctx=512))
    for m in (pool.get(), local):
        text = "".join(m.stream(LONG, 24, GREEDY))
        stop = text.split()[3]  # the model's fourth word (a number: "1\n2\n3\n4...")
        cut = m.stream(LONG, 24, Sampling(stop=("never written", stop)))
        assert "".join(cut) == text[:text.index(stop)] and ended(m.stream(LONG, 24, Sampling(stop=(stop,)))) == "stop"
        hot = Sampling(temperature=1.5, top_p=0.95, seed=7)
        drawn = ["".join(m.stream(SHORT, 24, s)) for s in (hot, hot, dataclasses.replace(hot, seed=8))]
        assert drawn[0] == drawn[1] != drawn[2], (m, drawn)


def test_a_chat_completions_server_is_sent_only_the_sampling_asked_for():
    """Behind llm_url another server renders the chat: it gets OpenAI's fields, and only those that
    differ from its defaults (some servers refuse top_p beside temperature)."""
    remote = RemoteModel("http://127.0.0.1:9", "m")
    assert remote.request(SHORT, 8, GREEDY) == ("/v1/chat/completions", {
        "max_tokens": 8, "stream": True, "temperature": 0.0, "model": "m", "messages": SHORT})
    body = remote.request(SHORT, 8, Sampling(0.5, 0.9, 3, 0.1, -0.2, ("x", "y")))[1]
    assert {k: body[k] for k in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "stop")} \
        == {"temperature": 0.5, "top_p": 0.9, "seed": 3, "presence_penalty": 0.1, "frequency_penalty": -0.2,
            "stop": ["x", "y"]}


def test_the_model_continues_its_own_turn_from_a_prefix(pool):
    """How the answer path asks which source a sentence came from: the turn is continued, not begun
    again; cut where a word begins, greedy decoding writes what it wrote the first time."""
    model = pool.get()
    text = "".join(model.stream(SHORT, 24, GREEDY))
    cut = text.index(" ", text.index(" ") + 1)  # after its second word
    continued = model.complete(SHORT, text[:cut], 2, [])
    assert continued.strip() and text[cut:].startswith(continued)
    assert RemoteModel("http://127.0.0.1:9", "m").complete(SHORT, "Hi", 2, []) is None  # the server renders: no turn to continue
    with pytest.raises(ModelError, match="^the model server"):  # past the slot's context: refused in one line
        model.complete(SHORT, "word " * 3000, 2, [])


class RecordingServer(BaseHTTPRequestHandler):
    """A llama-server stand-in for /v1/completions: records each request's body; streams ten pieces."""

    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RecordingServer.bodies.append(body)
        self.send_response(200)
        if not body.get("stream"):
            reply = json.dumps({"choices": [{"text": "1"}]}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for i in range(10):
                self.wfile.write(f"data: {json.dumps({'choices': [{'text': f'w{i} '}]})}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_rqa_names_the_slot_that_holds_a_prompt_and_waits_while_every_slot_is_taken(monkeypatch):
    """The answer path cuts a stream that repeats a sentence, then asks for its turn to be continued
    (rqa.answer.name_sources). llama-server is still cancelling the cut stream when that request
    arrives and, left to choose, gives it another slot, which reads the whole prompt again (13.6 s
    instead of 0.1 s measured with the 1.5B). rqa names the slot holding the answer instead; while
    every slot is taken a request waits for one, as in the server's queue."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RecordingServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    RecordingServer.bodies = []
    url = f"http://127.0.0.1:{httpd.server_port}"  # a server rqa started: it names slots (and has a url)
    model = RemoteModel(url, "m", slots=2, server=types.SimpleNamespace(url=url), trust_env=False,
                        render=lambda messages: "<turn>" + messages[-1]["content"] + "</turn>")
    ask = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    held = []
    try:
        first, second = model.stream(ask("first question"), 64, GREEDY), model.stream(ask("second question"), 64, GREEDY)
        next(first), next(second)  # both generating: one slot each
        first.close(), second.close()  # cut short
        assert model.complete(ask("second question"), "w0", 3, ["]"]) == "1"
        assert model.complete(ask("first question"), "w0", 3, ["]"]) == "1"
        slot = [b["id_slot"] for b in RecordingServer.bodies]
        assert slot[0] != slot[1] and slot[2:] == [slot[1], slot[0]]  # each continuation on its own answer's slot

        held = [model.stream(ask("third"), 64, GREEDY), model.stream(ask("fourth"), 64, GREEDY)]
        for stream in held:
            next(stream)
        assert model.busy
        late, fifth = [], model.stream(ask("fifth"), 64, GREEDY)
        held.append(fifth)
        waiting = threading.Thread(target=lambda: late.append(next(fifth)), daemon=True)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and len(RecordingServer.bodies) == 6  # not sent while both slots are taken
        held[1].close()
        waiting.join(10)  # "fifth" now generates on the slot "fourth" left
        assert late == ["w0 "] and RecordingServer.bodies[-1]["id_slot"] == RecordingServer.bodies[5]["id_slot"]
        # a question whose asker has gone leaves the wait at once, and is never sent
        cancel, gone = threading.Event(), []
        sixth = model.stream(ask("sixth"), 64, GREEDY, cancel)
        waiting = threading.Thread(target=lambda: gone.append(pytest.raises(Cancelled, next, sixth)), daemon=True)
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive()
        cancel.set()
        waiting.join(1)
        assert not waiting.is_alive() and gone and len(RecordingServer.bodies) == 7
        # a wait that outlasts the read timeout is one line
        monkeypatch.setattr("rqa.remote.READ_TIMEOUT_S", 0.3)
        with pytest.raises(ModelError, match="^every slot of the model server stayed busy for 0 s"):
            next(model.stream(ask("sixth"), 64, GREEDY))  # both slots held: "third" and the waiting "fifth"
        # a server rqa did not start chooses for itself
        other = RemoteModel(model.base, "m", slots=2, trust_env=False, render=lambda messages: "<turn>")
        "".join(other.stream(ask("any"), 64, GREEDY))
        assert "id_slot" not in RecordingServer.bodies[-1]
    finally:
        for stream in held:
            with contextlib.suppress(ValueError):  # one still waiting in its thread, when a check failed
                stream.close()
        httpd.shutdown()
        httpd.server_close()


def test_two_questions_stream_at_once(pool):
    model = pool.get()
    first, done = {}, {}
    threads = [threading.Thread(target=first_piece, args=(model.stream(LONG, 200, GREEDY), first, key, done))
               for key in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(done) == {"a", "b"}
    # both had their first piece before either had finished: generated side by side, not queued
    assert max(first.values()) < min(done.values())


def test_a_closed_stream_frees_its_slot_at_once(pool):
    model = pool.get()
    stream = model.stream(LONG, 2000, GREEDY)
    next(stream)
    assert any(slot_busy(model))
    stream.close()  # what the app does when its client disconnects
    deadline = time.monotonic() + 5
    while any(slot_busy(model)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(slot_busy(model)), "the cancelled generation still holds its slot"
    assert not model.busy and "".join(model.stream(SHORT, 8, GREEDY)).strip()


def test_a_server_killed_mid_answer_gives_one_line_and_comes_back(pool):
    model = pool.get()
    stream = model.stream(LONG, 2000, GREEDY)
    next(stream)
    os.kill(model.server.pid, signal.SIGKILL)
    with pytest.raises(ModelError, match="stopped answering .*exited with code -9.*restarted.*ask again"):
        for _ in stream:
            pass
    assert model.server.wait_ready(120) and model.server.crashes == 1
    assert "".join(model.stream(SHORT, 8, GREEDY)).strip()


def test_a_restart_takes_a_new_port_when_another_process_took_the_old_one(pool):
    """Once the child is gone its port is anyone's: a restart bound to it again would fail for ever."""
    import socket

    model = pool.get()
    server, old_port, crashes = model.server, model.server.port, model.server.crashes
    os.kill(server.pid, signal.SIGKILL)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:  # the port is free once the kernel has closed the dead child's socket
            try:
                squatter.bind(("127.0.0.1", old_port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the killed server's port never came free"
                time.sleep(0.01)
        squatter.listen()
        deadline = time.monotonic() + 30
        while server.crashes == crashes:  # counted once the supervisor has seen the child die
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert server.wait_ready(60) and server.crashes == crashes + 1 and server.port != old_port
        assert model.base == server.url and "".join(model.stream(SHORT, 8, GREEDY)).strip()


def test_a_missing_binary_falls_back_in_process_with_a_notice(tmp_path):
    pool = ModelPool(Settings.load(model=TEST_MODEL, llama_server=str(tmp_path / "nothing")), engine="server")
    model = pool.get()
    assert not isinstance(model, RemoteModel) and "not built" in pool.notices[0]


def test_the_app_answers_two_api_streams_at_once_and_again_after_a_client_drops_one(tmp_path):
    from tests.conftest import running_app

    question = {"model": "rqa", "stream": True, "messages": [{"role": "user", "content": "What does LoRA train?"}]}
    with running_app(tmp_path, RQA_RATE_LIMIT_PER_MINUTE="0", RQA_SLOTS="2", RQA_MAX_NEW_TOKENS="120",
                     RQA_EXPAND_TOKENS="0") as url:

        def ask(key, first, done):
            with httpx.stream("POST", url + "/v1/chat/completions", json=question, timeout=120) as r:
                for line in r.iter_lines():
                    if '"content": "' in line and '"content": ""' not in line:
                        first.setdefault(key, time.monotonic())
            done[key] = time.monotonic()

        def both_at_once() -> bool:
            first, done = {}, {}
            threads = [threading.Thread(target=ask, args=(key, first, done)) for key in ("a", "b")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
            return set(first) == {"a", "b"} and max(first.values()) < min(done.values())

        assert both_at_once()
        # a client that goes after its first words; then two questions are again answered at once
        with httpx.stream("POST", url + "/v1/chat/completions", json=question, timeout=120) as r:
            next(line for line in r.iter_lines() if '"content": "' in line and '"content": ""' not in line)
        assert both_at_once()
        assert "Traceback" not in (tmp_path / "app.log").read_text()


STUBBORN_SERVER = """
import signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as llama-server whose shutdown hangs after a SIGTERM
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Health).serve_forever()
"""


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_server_dies_with_an_app_killed_before_its_exit_handlers_run(tmp_path):
    """A SIGTERM ends Python without its exit handlers, and llama-server's own shutdown after a
    SIGTERM sometimes hangs: the child gets SIGKILL when the app dies, so no orphan keeps the model's
    memory and port (the stand-in ignores SIGTERM; two real orphans were found before the change)."""
    stand_in = tmp_path / "llama-server"
    stand_in.write_text(f"#!{sys.executable}\n{STUBBORN_SERVER}")
    stand_in.chmod(0o755)
    app = subprocess.Popen([sys.executable, "-c", "import time; from pathlib import Path; "
                            "from rqa.llama_server import LlamaServer; "
                            f"print(LlamaServer(Path({str(stand_in)!r}), Path('m.gguf')).start().pid, flush=True); "
                            "time.sleep(600)"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(app.stdout.readline())
    assert not gone(child)
    app.terminate()
    app.wait(10)
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not gone(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("llama-server outlived the app that started it")


def test_a_server_that_cannot_start_falls_back_in_process_with_a_notice(tmp_path):
    broken = tmp_path / "llama-server"
    broken.write_text("#!/bin/sh\necho 'no CPU backend found' >&2\nexit 1\n")
    broken.chmod(0o755)
    pool = ModelPool(Settings.load(model=TEST_MODEL, llama_server=str(broken)), engine="server")
    model = pool.get()
    assert not isinstance(model, RemoteModel) and "could not start" in pool.notices[0]
    assert "".join(model.stream(SHORT, 8, GREEDY)).strip()


def test_llm_url_sends_answers_to_an_openai_compatible_server_and_an_unreachable_one_is_named(pool):
    served = pool.get()  # the child started above stands in for any OpenAI-compatible server
    remote = ModelPool(Settings.load(llm_url=served.base + "/v1", llm_model="any", slots=2))
    model = remote.get()
    assert model.render is None and remote.expander() is model and not remote.notices
    assert "".join(model.stream(SHORT, 16, GREEDY)).strip()  # through /v1/chat/completions

    gone = ModelPool(Settings.load(llm_url="http://127.0.0.1:9/v1"))
    model = gone.get()
    assert "does not answer" in gone.notices[0]
    with pytest.raises(ModelError, match="stopped answering .*ConnectError from http://127.0.0.1:9"):
        list(model.stream(SHORT, 8, GREEDY))


def test_an_adapter_goes_to_llama_server_with_its_scale_and_a_path_it_cannot_read_is_refused(tmp_path):
    from rqa.errors import ServerError
    from rqa.llama_server import LlamaServer

    lora = tmp_path / "lora.gguf"
    args = LlamaServer(tmp_path / "llama-server", tmp_path / "m.gguf", lora, adapter_scale=0.5).args
    assert args[args.index("--lora-scaled") + 1] == f"{lora}:0.5"
    # llama-server splits FNAME:SCALE on ':' and a list on ','; the pool then generates in-process
    with pytest.raises(ServerError, match=r"^llama-server cannot read a scaled adapter whose path holds"):
        LlamaServer(tmp_path / "llama-server", tmp_path / "m.gguf", tmp_path / "a:b" / "lora.gguf")


class ProxyServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible proxy's stream: keep-alives between the pieces, then one event of `tail`."""

    tail = b""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("Adam ", "keeps "):
            self.wfile.write(b"data:\n\n")  # a keep-alive
            self.wfile.write(f"data: {json.dumps({'choices': [{'delta': {'content': piece}}]})}\n\n".encode())
        self.wfile.write(self.tail + b"\n\ndata: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("tail, error", [
    (b"", None),
    (b"data: {not json", "the model server sent an event rqa cannot read: {not json"),
    (b'data: {"choices": ["text"]}', "the model server sent an event rqa cannot read"),
    (b"data: [1, 2]", "the model server sent an event rqa cannot read: [1, 2]"),
])
def test_a_proxys_keep_alives_are_skipped_and_an_event_it_garbles_is_one_model_error(tail, error):
    """An empty `data:` keep-alive was a JSONDecodeError, a garbled event an AttributeError: the API
    answered 500 and the CLI printed a traceback. Keep-alives are skipped; a garbled event is a
    ModelError, the one line every model failure gives."""
    ProxyServer.tail = tail
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ProxyServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        model = RemoteModel(f"http://127.0.0.1:{httpd.server_port}", "m", trust_env=False)
        stream = model.stream([{"role": "user", "content": "What does Adam keep?"}], 16, GREEDY)
        if error is None:
            assert "".join(stream) == "Adam keeps "
        else:
            with pytest.raises(ModelError, match=error.replace("[", r"\[").replace("{", r"\{")):
                list(stream)
    finally:
        httpd.shutdown()
