import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.common import DEV, PAPERS, ROOT  # noqa: F401 (the tests import them from here)

# A few real papers keep the suite fast: Transformer, Adam, LoRA.
FEW_PAPERS = ["1706.03762.pdf", "1412.6980.pdf", "2106.09685.pdf"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def dev_questions(papers=None) -> list[dict]:
    rows = [json.loads(line) for line in DEV.read_text().splitlines() if line.strip()]
    return [r for r in rows if papers is None or r["paper"] in papers]


@pytest.fixture(scope="session")
def shared_index(tmp_path_factory):
    """Primer plus three real papers, built once through the real ingestion path."""
    from rqa.config import PRIMER_DIR, Settings
    from rqa.collection import ingest_paths

    settings = Settings.load(index_dir=tmp_path_factory.mktemp("idx") / "index")
    report = ingest_paths([PRIMER_DIR] + [PAPERS / p for p in FEW_PAPERS], settings, progress=False)
    assert not report.skipped
    return settings


class ScriptedModel:
    """A stand-in for rqa.llm.Model that 'writes' a scripted reply word by word, so the answer path,
    CLI and web handlers are tested in milliseconds. `reply` is a string or a function of the
    messages (to answer from the prompt it was given)."""

    name = "scripted.gguf"
    adapter_name = None
    busy = False

    def __init__(self, reply, names=None):
        self.reply = reply
        self.names = names  # what complete() writes after "[": a string, a function of the prefix, or None
        self.prompts: list[list[dict]] = []
        self.completions: list[str] = []  # the prefixes complete() was asked to continue

    def stream(self, messages, max_tokens, sampling, cancel=None):
        import re

        self.prompts.append(messages)
        text = self.reply(messages) if callable(self.reply) else self.reply
        yield from re.findall(r"\S+\s*|\s+", text)
        return "stop"  # it writes its whole reply, whatever the limit

    def complete(self, messages, prefix, max_tokens, stop):
        self.completions.append(prefix)
        return self.names(prefix) if callable(self.names) else self.names

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)  # a word a token


class ScriptedPool:
    """ModelPool's interface over one ScriptedModel."""

    def __init__(self, model: ScriptedModel, expander: ScriptedModel | None = None):
        from rqa.llm import ModelFiles

        self.model = model
        self.expander_model = expander or ScriptedModel("")  # an empty expansion: the question alone
        self.files = ModelFiles(Path(model.name), None, "scripted")

    def get(self, which="q4"):
        return self.model

    def expander(self):
        return self.expander_model

    def for_question(self, question):
        return self.model


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")


@contextmanager
def browser_page(url: str, height: int = 1000):
    """A page of headless Debian Chromium (driven by Playwright) opened at url."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(tmp: Path, **env: str):
    """`python app.py` on a free loopback port over the primer (index in tmp/index, ratings in
    tmp/ratings.sqlite, log in tmp/app.log); yields the base URL once it answers. `env` adds or
    overrides variables (the fast test model unless RQA_MODEL says otherwise)."""
    import subprocess
    import sys
    import time
    import urllib.request

    from rqa.config import PRIMER_DIR, Settings
    from rqa.collection import ingest_paths

    ingest_paths([PRIMER_DIR], Settings.load(index_dir=tmp / "index"), progress=False)
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "RQA_INDEX_DIR": str(tmp / "index"),
           "RQA_DB_PATH": str(tmp / "ratings.sqlite"), "RQA_MAX_NEW_TOKENS": "40", "GRADIO_ANALYTICS_ENABLED": "False",
           "RQA_MODEL": "smollm2-135m-instruct", **env}
    log = open(tmp / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(480):
            if proc.poll() is not None:
                raise RuntimeError("app exited:\n" + (tmp / "app.log").read_text())
            try:
                urllib.request.urlopen(url + "/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("app did not start:\n" + (tmp / "app.log").read_text())
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# The longest files first. `make test` hands each file whole to one of two workers (pytest-xdist's
# --dist loadfile) in collection order (--no-loadscope-reorder; xdist's default orders files by their
# number of tests): the tiny pipeline's file, a third of one worker's time, was handed out late and
# ran for minutes after the other worker had finished. Measured with --durations=0, docs/BENCHMARKS.md.
LONGEST_FILES = ("test_build.py", "test_faults.py", "test_embedder.py", "test_llama_server.py", "test_http.py",
                 "test_papers.py", "test_index.py", "test_app.py", "test_api.py", "test_answer.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept
