"""The real app, started as `python app.py`, driven through gradio_client and headless Chromium."""

import os
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from rqa.config import PRIMER_DIR, Settings
from rqa.collection import ingest_paths
from tests.conftest import ROOT, browser_page, needs_chromium, running_app

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    with running_app(tmp, RQA_ANNOTATORS="alice:tok-alice,bob:tok-bob", RQA_RATE_LIMIT_PER_MINUTE="5") as url:
        yield {"url": url + "/", "db": tmp / "ratings.sqlite", "log": tmp / "app.log", "tmp": tmp}


def up(url: str) -> bool:
    return urllib.request.urlopen(url, timeout=10).status == 200


@needs_chromium
def test_browser_ask_then_rate(app):
    from playwright.sync_api import expect

    with browser_page(app["url"]) as page:
        page.locator("#rqa-question textarea").fill("Why are dot products scaled by the square root of d_k in attention?")
        page.locator("#rqa-ask").click()
        sources = page.locator("#rqa-sources")
        expect(sources).to_contain_text("[1]", timeout=120_000)
        expect(sources).to_contain_text("Scaled dot-product")
        expect(page.locator("#rqa-checks")).to_contain_text("sentences supported", timeout=60_000)
        bot = page.locator("#rqa-chat .bot, #rqa-chat [data-testid='bot']").last
        assert bot.inner_text().strip()
        # test output stays out of the work tree; `TEST_SCREENSHOTS=docs` refreshes the docs' pictures on purpose
        shots = Path(os.environ.get("TEST_SCREENSHOTS", app["tmp"]))
        page.screenshot(path=str(shots / "screenshot-chat.png"), full_page=True)

        page.get_by_role("tab", name="Annotate").click()
        page.locator("#rqa-token input").fill("not-a-token")
        page.locator("#rqa-login").click()
        expect(page.locator("#rqa-annot-status")).to_contain_text("Unknown token")
        page.locator("#rqa-token input").fill("tok-alice")
        page.locator("#rqa-login").click()
        expect(page.locator("#rqa-annot-status")).to_contain_text("Logged in as alice")
        expect(page.locator("#rqa-item")).to_contain_text("Why are dot products scaled")
        page.locator("#rqa-depth").get_by_text("4", exact=True).click()
        page.locator("#rqa-correct").get_by_text("partly", exact=True).click()
        page.locator("#rqa-comment textarea").fill("cites the right source")
        page.locator("#rqa-submit").click()
        expect(page.locator("#rqa-annot-status")).to_contain_text("Saved rating")
        page.screenshot(path=str(shots / "screenshot-annotate.png"), full_page=True)
    rows = sqlite3.connect(app["db"]).execute(
        "SELECT r.annotator, r.depth, r.correctness, r.comment, i.question FROM ratings r JOIN items i ON i.id = r.item_id").fetchall()
    assert rows == [("alice", 4, "partly", "cites the right source",
                     "Why are dot products scaled by the square root of d_k in attention?")]


def test_votes_carry_the_client_and_count_once(app):
    from gradio_client import Client

    client = Client(app["url"], verbose=False)  # one session: its last answer is what it votes on
    client.predict("What is attention?", [], api_name="/ask")
    for _ in range(5):
        client.predict(api_name="/vote_up")
    assert "replaces" in client.predict(api_name="/vote_down")
    db = sqlite3.connect(app["db"])
    item = db.execute("SELECT MAX(id) FROM items").fetchone()[0]
    rows = db.execute("SELECT client, vote FROM feedback WHERE item_id = ?", (item,)).fetchall()
    assert rows == [("127.0.0.1", -1)]


def test_bad_input_and_rate_limit_keep_the_app_up(app):
    from gradio_client import Client

    client = Client(app["url"], verbose=False)

    def ask(question):
        chat, sources, checks, box = client.predict(question, [], api_name="/ask")  # State is not returned
        return chat[-1]["content"] if chat else "", checks

    reply, _ = ask("   ")
    assert "type a question" in str(reply)
    reply, _ = ask("attention " * 100_000)  # about 1 MB: refused as the API refuses it, not cut
    assert "at most 2,000 are answered" in str(reply)
    assert up(app["url"])
    # nine at once, so that all meet the limiter within one minute however slow the answers are:
    # six plain, three with a forged X-Forwarded-For each. Forged headers must not make new clients:
    # then at most five are admitted and at least four limited (a forged header that counted as a
    # new client would leave only one of the nine limited)
    from concurrent.futures import ThreadPoolExecutor

    def ask_alone(forged):
        headers = {"X-Forwarded-For": forged} if forged else None
        chat, *_ = Client(app["url"], verbose=False, headers=headers).predict("What is LoRA?", [], api_name="/ask")
        return str(chat[-1]["content"]) if chat else ""

    with ThreadPoolExecutor(9) as pool:
        replies = list(pool.map(ask_alone, [None] * 6 + [f"10.1.2.{n}" for n in range(3)]))
    limited = [r for r in replies if "Rate limit: 5 questions per minute" in r]
    assert len(limited) >= 4, replies
    assert "wait" in limited[0] and "seconds" in limited[0]
    assert up(app["url"])


@pytest.mark.parametrize("env, message", [
    ({"RQA_MODEL_PATH": "/nonexistent/model.gguf"}, "model file not found"),
    ({"RQA_EMBEDDER": "all-MiniLM-L12-v2"}, "built with embedder 'all-MiniLM-L6-v2'"),
])
def test_bad_model_or_index_fails_clearly_at_start(tmp_path, env, message):
    ingest_paths([PRIMER_DIR / "06-bm25.md"], Settings.load(index_dir=tmp_path / "index"), progress=False)
    out = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RQA_INDEX_DIR": str(tmp_path / "index"), **env})
    assert out.returncode == 1
    assert message in out.stderr and "Traceback" not in out.stderr
