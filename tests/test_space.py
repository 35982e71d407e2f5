"""The Space's download side, against a local Hugging Face cache (never the network)."""

import importlib.util
import os
import shutil

import pytest

from rqa.config import PRIMER_DIR, Settings
from rqa.collection import ingest_paths, open_index
from rqa.llm import resolve_model
from tests.conftest import ROOT
from tests.test_llm import fake_hub_cache


@pytest.fixture(autouse=True)
def no_leaked_environment():
    """space.configure() writes RQA_* variables with os.environ.setdefault, behind monkeypatch's
    back (its delenv of an absent variable records nothing, and a later delenv restores the value
    configure wrote): put the environment back as it was, whatever a test did."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def test_space_downloads_model_and_index_from_the_hub_cache(tmp_path, monkeypatch):
    from rqa.models import offline_model_path

    cache = tmp_path / "hub"
    fake_hub_cache(monkeypatch, cache, offline_model_path("smollm2-135m-instruct"))  # someone/rqa-model
    ingest_paths([PRIMER_DIR / "03-lora.md"], Settings.load(index_dir=tmp_path / "built"), progress=False)
    snap = cache / "datasets--someone--rqa-index" / "snapshots" / ("c" * 40)
    shutil.copytree(tmp_path / "built", snap)
    (cache / "datasets--someone--rqa-index" / "refs").mkdir()
    (cache / "datasets--someone--rqa-index" / "refs" / "main").write_text("c" * 40)

    config = tmp_path / "rqa_space.json"
    config.write_text('{"model_repo": "someone/rqa-model", "index_repo": "someone/rqa-index"}')
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "space" / "app.py")
    space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(space)
    monkeypatch.delenv("RQA_HUB_REPO", raising=False)
    monkeypatch.delenv("RQA_HUB_INDEX_REPO", raising=False)
    space.configure(config)
    settings = Settings.load()
    assert settings.hub_repo == "someone/rqa-model" and settings.hub_index_repo == "someone/rqa-index"
    assert resolve_model(settings).source == "hub:someone/rqa-model"
    index = open_index(settings)
    assert index.path == snap and {c.paper for c in index.chunks} == {"03-lora"}
    monkeypatch.delenv("RQA_HUB_REPO")
    monkeypatch.delenv("RQA_HUB_INDEX_REPO")


def test_space_with_missing_repos_still_serves_with_a_notice(tmp_path, monkeypatch):
    from rqa.service import AppState
    from rqa.web import build_app
    from tests.test_llm import use_hf_cache

    use_hf_cache(monkeypatch, tmp_path / "empty-hub-cache")  # offline: neither repo can be had
    ingest_paths([PRIMER_DIR / "03-lora.md"], Settings.load(index_dir=tmp_path / "index"), progress=False)
    settings = Settings.load(hub_repo="someone/private-model", hub_index_repo="someone/private-index",
                             index_dir=tmp_path / "index", model="smollm2-135m-instruct", adapter="none")
    from rqa import models  # rqa ships a fine-tune for this base, and the user chose the stock base

    monkeypatch.setitem(models.ADAPTERS, "smollm2-135m-instruct", models.PackagedAdapter("x.gguf", "smollm2", 1, "0"))
    app = AppState.start(settings)
    try:
        assert app.models.files.source == "offline:smollm2-135m-instruct"
        assert [c.paper for c in app.index.chunks][:1] == ["03-lora"]
        assert any("someone/private-index could not be loaded" in n for n in app.notices)
        assert any("someone/private-model could not be reached" in n for n in app.notices)
        page = build_app(app).config
        assert "someone/private-model could not be reached" in str(page)  # shown on the page
        assert "without rqa's fine-tune (adapter setting: none)" in str(page) and "`smollm2-135m-instruct.gguf`, stock." in str(page)
    finally:
        app.sympy.close()


def test_space_config_names_the_file_for_lookup_questions(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "space" / "app.py")
    space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(space)
    for name in ("RQA_HUB_REPO", "RQA_HUB_INDEX_REPO", "RQA_HUB_Q4_FILE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "rqa_space.json"
    config.write_text('{"model_repo": "a/m", "index_repo": "a/i"}')
    monkeypatch.delenv("RQA_PAPERS_EDIT", raising=False)
    monkeypatch.delenv("RQA_PAPERS_KEY", raising=False)
    space.configure(config)
    assert Settings.load().hub_q4_file == "model-q4_0.gguf"
    assert Settings.load().papers_edit == "off"  # a public Space's papers: nobody may change them
    monkeypatch.setenv("RQA_PAPERS_EDIT", "key")  # the owner's variable, with the key as a secret
    monkeypatch.setenv("RQA_PAPERS_KEY", "the-owner's-secret")
    space.configure(config)
    assert Settings.load().papers_edit == "key"
    monkeypatch.delenv("RQA_PAPERS_KEY")
    monkeypatch.delenv("RQA_PAPERS_EDIT")
    monkeypatch.delenv("RQA_HUB_REPO")
    monkeypatch.delenv("RQA_HUB_INDEX_REPO")
    config.write_text('{"model_repo": "a/m", "index_repo": "a/i", "lookup_file": "model-q8_0.gguf"}')
    space.configure(config)
    assert Settings.load().hub_q4_file == "model-q8_0.gguf"
    monkeypatch.setenv("RQA_HUB_Q4_FILE", "mine.gguf")  # the owner's variable wins over the file
    space.configure(config)
    assert Settings.load().hub_q4_file == "mine.gguf"
    for name in ("RQA_HUB_REPO", "RQA_HUB_INDEX_REPO", "RQA_HUB_Q4_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_space_with_an_index_of_an_older_format_serves_the_local_one_with_a_notice(tmp_path, monkeypatch):
    """An index published in an older format must be republished; meanwhile the Space stays up."""
    import json

    from rqa.service import AppState
    from tests.test_llm import use_hf_cache

    cache = tmp_path / "hub"
    use_hf_cache(monkeypatch, cache)
    ingest_paths([PRIMER_DIR / "03-lora.md"], Settings.load(index_dir=tmp_path / "built"), progress=False)
    snap = cache / "datasets--someone--rqa-index" / "snapshots" / ("c" * 40)
    shutil.copytree(tmp_path / "built", snap)
    manifest = json.loads((snap / "manifest.json").read_text())
    (snap / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))
    (cache / "datasets--someone--rqa-index" / "refs").mkdir()
    (cache / "datasets--someone--rqa-index" / "refs" / "main").write_text("c" * 40)
    ingest_paths([PRIMER_DIR / "12-adam.md"], Settings.load(index_dir=tmp_path / "index"), progress=False)
    app = AppState.start(Settings.load(hub_index_repo="someone/rqa-index", index_dir=tmp_path / "index",
                                       model="smollm2-135m-instruct", expand_tokens=0))
    try:
        assert {c.paper for c in app.index.chunks} == {"12-adam"}
        assert any("someone/rqa-index could not be loaded (it has index format 2; republish it" in n
                   for n in app.notices)
        assert not any(str(tmp_path) in n for n in app.notices)  # no server paths on the page
    finally:
        app.sympy.close()


def test_the_staged_space_builds_its_image_as_make_install_builds_a_checkout(tmp_path):
    """A Docker Space: the same portable llama-cpp-python flags and llama-cpp-python version as the
    Makefile, and llama-server built by the same script, which is staged beside the Dockerfile."""
    import re

    from build.publish import stage_space

    space = stage_space(tmp_path, "someone/rqa-model", "someone/rqa-index")
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (space / "Dockerfile").read_text()
    assert (space / "build-llama-server.sh").read_bytes() == (ROOT / "scripts" / "build-llama-server.sh").read_bytes()
    assert "sdk: docker" in (space / "README.md").read_text() and "app_port: 7860" in (space / "README.md").read_text()
    version = re.search(r"^LLAMA_VERSION := (\S+)", makefile, re.M).group(1)
    portable = re.search(r"^LLAMA_CMAKE := (.+)$", makefile, re.M).group(1).strip()
    assert f'CMAKE_ARGS="{portable}"' in dockerfile
    assert f"llama-cpp-python=={version}" in dockerfile and f"llama-cpp-python=={version}" in \
        (space / "requirements.txt").read_text()
    assert f"bash build-llama-server.sh /tmp/sdist/llama_cpp_python-{version}.tar.gz" in dockerfile
    assert "RQA_LLAMA_SERVER=/home/user/llama-server/llama-server" in dockerfile


def test_uploads_to_a_published_index_are_served_after_a_restart_and_a_republish(tmp_path, monkeypatch):
    """Uploads go to a local copy of the published index: the copy, not the download, is served
    after a restart; when the index is republished, its new papers and the uploads both are."""
    import json

    from rqa.collection import Collection
    from rqa.errors import StoreError
    from tests.test_llm import use_hf_cache

    cache = tmp_path / "hub"
    use_hf_cache(monkeypatch, cache)
    repo = cache / "datasets--someone--rqa-index"

    def publish(commit: str, papers: list[str]) -> None:
        built = tmp_path / f"built-{commit}"
        ingest_paths([PRIMER_DIR / p for p in papers], Settings.load(index_dir=built), progress=False)
        shutil.copytree(built, repo / "snapshots" / (commit * 40))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit * 40)

    settings = Settings.load(hub_index_repo="someone/rqa-index", index_dir=tmp_path / "index")

    def served() -> set[str]:  # what a fresh start serves
        return {c.paper for c in Collection.open(settings).index.chunks}

    publish("a", ["03-lora.md"])
    collection = Collection.open(settings)
    upload = tmp_path / "mine" / "12-adam.md"
    upload.parent.mkdir()
    shutil.copy(PRIMER_DIR / "12-adam.md", upload)
    collection.add_uploads([upload], progress=False)
    assert {c.paper for c in collection.index.chunks} == {"03-lora", "12-adam"}
    assert served() == {"03-lora", "12-adam"}
    copied = (tmp_path / "index" / "manifest.json").stat().st_mtime_ns
    assert served() == {"03-lora", "12-adam"} and (tmp_path / "index" / "manifest.json").stat().st_mtime_ns == copied
    # a copy made by an rqa that did not name its origin: recognised by holding every published paper
    manifest = tmp_path / "index" / "manifest.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "copied_from"}))
    assert served() == {"03-lora", "12-adam"} and json.loads(manifest.read_text())["copied_from"]["repo"] == "someone/rqa-index"
    publish("b", ["03-lora.md", "06-bm25.md"])
    # stopped while the uploads are ingested again into the new copy (Ctrl-C, a failing embedder):
    # the copy served before is left whole, and the next start makes the new one
    from rqa import collection as collection_module

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(collection_module, "ingest_paths", stopped)
    with pytest.raises(KeyboardInterrupt):
        Collection.open(settings)
    monkeypatch.undo()
    use_hf_cache(monkeypatch, cache)
    assert served() == {"03-lora", "06-bm25", "12-adam"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".index", "index"))) == \
        [".index.lock", "index", "index-uploads"]
    # an index_dir holding an index of its own is neither served instead of the published one nor changed
    own = Settings.load(hub_index_repo="someone/rqa-index", index_dir=tmp_path / "own")
    ingest_paths([PRIMER_DIR / "08-hybrid-rrf.md"], own, progress=False)
    collection = Collection.open(own)
    assert {c.paper for c in collection.index.chunks} == {"03-lora", "06-bm25"}
    with pytest.raises(StoreError, match="^the index folder holds another index than the published one served"):
        collection.add_uploads([upload], progress=False)
    assert {c.paper for c in open_index(Settings.load(index_dir=tmp_path / "own")).chunks} == {"08-hybrid-rrf"}
    # republished in an older format: the copy with the uploads is served, with a notice
    publish("c", ["03-lora.md"])
    old = repo / "snapshots" / ("c" * 40) / "manifest.json"
    old.write_text(json.dumps({**json.loads(old.read_text()), "format_version": 2}))
    collection = Collection.open(settings)
    assert {c.paper for c in collection.index.chunks} == {"03-lora", "06-bm25", "12-adam"}
    assert any("could not be loaded (it has index format 2" in n for n in collection.notices)


def test_a_start_that_could_not_reach_the_published_index_does_not_block_uploads_later(tmp_path, monkeypatch):
    """Offline at its first start, the app built the primer in the default index folder and served
    it; at every later start the publication was served and each upload refused, the index folder
    holding "another index". The primer (and what was uploaded to it) is the copy's to replace."""
    from rqa.collection import Collection
    from tests.test_llm import use_hf_cache

    monkeypatch.chdir(tmp_path)  # the default index folder, .rqa/index, under tmp_path
    use_hf_cache(monkeypatch, tmp_path / "hub")
    settings = Settings.load(hub_index_repo="someone/rqa-index")
    offline = Collection.open(settings)
    assert any("could not be loaded" in n for n in offline.notices) and len(offline.papers()) > 10  # the primer
    upload = tmp_path / "mine" / "notes.md"
    upload.parent.mkdir()
    upload.write_text("# Widget notes\n\n## Method\n\n" + "The widget constant is 42, measured over 300 trials. " * 20)
    offline.add_uploads([upload], progress=False)
    ingest_paths([PRIMER_DIR / "03-lora.md"], Settings.load(index_dir=tmp_path / "built"), progress=False)
    repo = tmp_path / "hub" / "datasets--someone--rqa-index"
    shutil.copytree(tmp_path / "built", repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    online = Collection.open(settings)
    assert {p.paper for p in online.papers()} == {"03-lora"}
    online.add_uploads([PRIMER_DIR / "12-adam.md"], progress=False)
    assert {c.paper for c in Collection.open(settings).index.chunks} == {"03-lora", "notes", "12-adam"}
