"""Papers in the live index: upload, list, remove, examples, `app.py --papers`; and the browser flow."""

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from rqa import collection
from rqa.config import PRIMER_DIR, Settings
from rqa.collection import ingest_paths, open_index
from rqa.search import retrieve
from rqa.index import load_index
from tests.conftest import PAPERS, browser_page, needs_chromium, running_app


@pytest.fixture
def live(tmp_path):
    settings = Settings.load(index_dir=tmp_path / "index")
    ingest_paths([PRIMER_DIR / "06-bm25.md"], settings, progress=False)
    return settings, open_index(settings)


def test_add_list_and_remove_a_paper(live, tmp_path):
    settings, index = live
    upload = tmp_path / "gradio-tmp" / "1503.02531.pdf"
    upload.parent.mkdir()
    shutil.copy(PAPERS / "1503.02531.pdf", upload)
    report, index = collection.add_files([upload], index, settings, progress=False)
    (result,) = report.per_file
    assert result.status == "added" and result.title.startswith("Distilling the Knowledge") and result.chunks > 5
    assert result.pages == 9
    listed = {p.paper: p for p in collection.papers(index)}
    assert set(listed) == {"06-bm25", "1503.02531"}
    assert listed["1503.02531"].arxiv_url == "https://arxiv.org/abs/1503.02531"
    stored = Path(listed["1503.02531"].paths[0])
    assert stored.is_file() and collection.store_dir(settings) in stored.parents  # kept after the upload's temp file
    assert any(h.chunk.paper == "1503.02531" for h in retrieve(index, "soft targets high temperature distillation", settings))
    assert "Distilling the Knowledge" in collection.example_questions(index)[0]

    upload.unlink()  # the same paper again, from another temporary upload folder
    shutil.copy(PAPERS / "1503.02531.pdf", upload)
    report, index = collection.add_files([upload], index, settings, progress=False)
    assert report.per_file[0].status == "already indexed" and report.papers_added == 0

    sha = listed["1503.02531"].sha256
    index = collection.remove(sha, index, settings)
    assert {p.paper for p in collection.papers(index)} == {"06-bm25"}
    assert not any(h.chunk.paper == "1503.02531" for h in retrieve(index, "soft targets distillation", settings, k=10))
    assert not stored.exists()
    assert load_index(settings.index_dir).manifest["documents"].keys() == {p.sha256 for p in collection.papers(index)}
    with pytest.raises(ValueError, match="not in the index"):
        collection.remove(sha, index, settings)


def test_upload_limits(live, tmp_path):
    settings, index = live
    files = []
    for name in ("a.pdf", "b.docx", "c.md"):
        (tmp_path / name).write_bytes(b"x" * (3 << 19))  # 1.5 MB
        files.append(tmp_path / name)
    small = dataclasses.replace(settings, max_upload_mb=1)
    refused = dict(collection.check_uploads(files, index, small))
    assert "unsupported file type .docx" in refused[tmp_path / "b.docx"]
    assert "over the" in refused[tmp_path / "a.pdf"] and "over the" in refused[tmp_path / "c.md"]
    with pytest.raises(ValueError, match="at most 10 at a time"):
        collection.check_uploads(files * 4, index, small)
    with pytest.raises(ValueError, match="at most 2 are served"):
        collection.check_uploads(files[:2], index, dataclasses.replace(settings, max_papers=2))


def test_app_papers_flag_ingests_a_folder_once(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    shutil.copy(PRIMER_DIR / "03-lora.md", papers)
    shutil.copy(PRIMER_DIR / "12-adam.md", papers)
    from rqa.service import AppState

    settings = Settings.load(index_dir=tmp_path / "index", papers=str(papers), model="smollm2-135m-instruct")
    first = AppState.start(settings)
    assert {p.paper for p in collection.papers(first.index)} == {"03-lora", "12-adam"}
    embedded_before = load_index(settings.index_dir).embeddings.copy()
    second = AppState.start(settings)  # a restart: nothing new, nothing re-embedded
    assert len(second.index.chunks) == len(first.index.chunks)
    assert (load_index(settings.index_dir).embeddings == embedded_before).all()
    for app in (first, second):
        app.sympy.close()


@pytest.fixture(scope="module")
def default_app(tmp_path_factory):
    """The app with the default model over the primer, for the upload flow in a browser."""
    tmp = tmp_path_factory.mktemp("papers-app")
    with running_app(tmp, RQA_MODEL=Settings().model, RQA_MAX_NEW_TOKENS="120", RQA_RATE_LIMIT_PER_MINUTE="0") as url:
        yield {"url": url + "/", "tmp": tmp, "index": tmp / "index"}


@needs_chromium
def test_browser_upload_ask_and_remove(default_app):
    from playwright.sync_api import expect

    with browser_page(default_app["url"], height=1100) as page:
        page.locator("#rqa-papers").get_by_text("Papers (").click()
        page.locator("#rqa-upload input[type=file]").set_input_files(str(PAPERS / "1503.02531.pdf"))
        page.wait_for_timeout(1500)
        page.locator("#rqa-add").click()
        expect(page.locator("#rqa-ingest-report")).to_contain_text("added: Distilling the Knowledge", timeout=240_000)
        expect(page.locator("#rqa-paper-list")).to_contain_text("Distilling the Knowledge")
        expect(page.locator("#rqa-examples")).to_contain_text("Distilling the Knowledge")

        page.locator("#rqa-question textarea").fill(
            "In knowledge distillation, how are the soft targets produced from the cumbersome model?")
        page.locator("#rqa-ask").click()
        expect(page.locator("#rqa-sources")).to_contain_text("the model is reading them", timeout=60_000)
        expect(page.locator("#rqa-sources")).to_contain_text("Cited sources", timeout=240_000)
        cited = page.locator("#rqa-sources .rqa-source").first
        expect(cited).to_contain_text("Distilling the Knowledge")
        shots = Path(os.environ.get("TEST_SCREENSHOTS", default_app["tmp"]))
        page.screenshot(path=str(shots / "screenshot-upload.png"), full_page=True)

    # a page opened after the upload shows the index as it is now (it showed the startup's papers,
    # and refused to remove the new one: "not in the list of choices"), and removes from there
    with browser_page(default_app["url"], height=1100) as page:
        page.locator("#rqa-papers").get_by_text("Papers (").click()
        expect(page.locator("#rqa-paper-list")).to_contain_text("Distilling the Knowledge")
        expect(page.locator("#rqa-examples")).to_contain_text("Distilling the Knowledge")
        page.locator("#rqa-paper-choice input").click()
        page.get_by_role("option", name="Distilling the Knowledge", exact=False).first.click()
        page.locator("#rqa-remove").click()
        expect(page.locator("#rqa-ingest-report")).to_contain_text("Removed", timeout=120_000)
        expect(page.locator("#rqa-paper-list")).not_to_contain_text("Distilling the Knowledge")
    index = load_index(default_app["index"])
    assert "1503.02531" not in {c.paper for c in index.chunks}
    hits = retrieve(index, "soft targets distillation temperature", Settings.load(index_dir=default_app["index"]), k=10)
    assert hits and all(h.chunk.paper != "1503.02531" for h in hits)
