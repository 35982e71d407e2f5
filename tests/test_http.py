"""The app's HTTP surface as an attacker or a careless client uses it (docs/RELIABILITY.md).

A real uvicorn server in this process, with the scripted model over a small primer index, so that
each request goes through the same routes, Gradio queue and handlers as in production.
"""

import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

from rqa.config import PRIMER_DIR, Settings
from rqa.corpus import ingest_paths, open_index
from rqa.ratelimit import RateLimiter
from rqa.ratings import RatingsDB
from rqa.web import AppState, create_server
from tests.conftest import ScriptedModel, ScriptedPool, free_port


@contextmanager
def live_server(tmp_path, model=None, **settings):
    import uvicorn

    s = Settings.load(index_dir=tmp_path / "index", db_path=tmp_path / "ratings.sqlite", **settings)
    ingest_paths([PRIMER_DIR / "06-bm25.md"], s, progress=False)
    app = AppState(settings=s, index=open_index(s), models=ScriptedPool(model or ScriptedModel("BM25 ranks [1].")),
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


def gradio_call(url: str, api_name: str, data: list, timeout: float = 240, refused: bool = False):
    """Gradio's HTTP API as any client may call it: POST the inputs, then read the event stream.
    Returns the outputs; with `refused`, asserts the call was refused and returns the error's text."""
    r = httpx.post(f"{url}/gradio_api/call/{api_name}", json={"data": data}, timeout=30)
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
        refusal = gradio_call(url, "add_papers", [[file_data(secret)]], refused=True)
        assert "not uploaded by a user" in refusal and "zebra" not in refusal
        assert "notes" not in {p["paper"] for p in app.index.manifest["documents"].values()}
        reply = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "What is the vault combination zebra-quartz?"}]}).json()
        assert "zebra-quartz" not in json.dumps(reply["rqa"])

        # a symlink inside the upload folder that points out of it is refused too
        from rqa.web import upload_folder

        link = upload_folder() / f"rqa-test-{time.time_ns()}" / "notes.md"
        link.parent.mkdir(parents=True)
        link.symlink_to(secret)
        try:
            assert "not uploaded by a user" in gradio_call(url, "add_papers", [[file_data(link)]], refused=True)
        finally:
            link.unlink()
            link.parent.rmdir()

        stored = upload(url, PRIMER_DIR / "03-lora.md")
        report = gradio_call(url, "add_papers", [[file_data(stored)]])[0]
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


def test_upload_check_refuses_paths_outside_the_upload_folder(tmp_path):
    """The handlers' own check, behind Gradio's: a path outside the folder, a link out of it."""
    from rqa.library import uploaded_files

    root, outside = tmp_path / "uploads", tmp_path / "notes.md"
    (root / "abc").mkdir(parents=True)
    outside.write_text("private")
    (root / "abc" / "paper.md").write_text("a paper")
    (root / "abc" / "link.md").symlink_to(outside)
    assert uploaded_files([str(root / "abc" / "paper.md")], root) == [(root / "abc" / "paper.md").resolve()]
    for bad in (outside, root / "abc" / "link.md", root / "abc" / ".." / ".." / "notes.md", root / "abc" / "none.md"):
        with pytest.raises(ValueError, match="was not uploaded through this page"):
            uploaded_files([str(bad)], root)
