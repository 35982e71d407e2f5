"""The index on Milvus Lite (an embedded Milvus in one file): ingest real papers, search them as the
app does, remove one, and the papers panel's view of it."""

import pytest

from rqa.collection import Collection, ingest_paths, open_index, papers, remove_documents
from rqa.config import Settings
from rqa.errors import IndexError_
from rqa.milvus import MilvusIndex
from rqa.search import retrieve
from tests.conftest import PAPERS

TRANSFORMER, ADAM = PAPERS / "1706.03762.pdf", PAPERS / "1412.6980.pdf"


@pytest.fixture(scope="module")
def milvus_settings(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("milvus") / "index.db")
    settings = Settings.load(index_uri=uri, index_dir=tmp_path_factory.mktemp("unused") / "index")
    report = ingest_paths([TRANSFORMER, ADAM], settings, progress=False)
    assert report.papers_added == 2 and not report.skipped
    return settings


def test_two_real_papers_searched_removed_and_searched_again(milvus_settings, shared_index):
    settings = milvus_settings
    index = open_index(settings)
    assert isinstance(index, MilvusIndex) and len(index.manifest["documents"]) == 2
    assert not (settings.index_dir).exists()  # nothing was written to the local folder

    question = "What optimizer and learning rate schedule were used to train the Transformer?"
    hits = retrieve(index, question, settings)
    assert len(hits) == settings.k and hits[0].chunk.paper == "1706.03762"
    assert all(h.chunk.text and h.chunk.title for h in hits)
    # the chunk that answers it (Adam with warmup, section 5.3) is found, as the local index finds it
    assert "warmup" in hits[0].chunk.text.lower()
    local_index = open_index(shared_index)
    local = retrieve(local_index, question, shared_index)
    assert "warmup" in local[0].chunk.text.lower()
    # the within-paper score reads each paper's chunks from Milvus: the ones the local index holds
    sha = hits[0].chunk.doc
    terms = index.paper_terms(sha, settings)
    assert set(terms.rows) == {c.chunk_id for c in local_index.chunks if c.doc == sha}
    assert max(terms.scores("warmup steps", list(terms.rows))) > 0  # their text came with them
    assert index.paper_terms('" or doc != "', settings).rows == {}  # only a content hash reaches a filter

    adam = [h for h in retrieve(index, "bias correction of the first and second moment estimates", settings)]
    assert adam[0].chunk.paper == "1412.6980"
    sha = adam[0].chunk.doc
    assert {p.paper for p in papers(index)} == {"1706.03762", "1412.6980"}
    assert next(p for p in papers(index) if p.sha256 == sha).arxiv_url == "https://arxiv.org/abs/1412.6980"

    assert remove_documents(settings.index_uri, {sha}, settings) == 1
    index = open_index(settings)
    assert list(index.manifest["documents"]) != [sha] and len(index.manifest["documents"]) == 1
    after = retrieve(index, "bias correction of the first and second moment estimates", settings, k=10)
    assert after and all(h.chunk.paper == "1706.03762" for h in after)
    # ingesting the removed paper again brings it back, once
    assert ingest_paths([ADAM], settings, progress=False).papers_added == 1
    assert ingest_paths([ADAM], settings, progress=False).papers_added == 0
    assert retrieve(open_index(settings), "bias correction of the first and second moment estimates",
                    settings)[0].chunk.paper == "1412.6980"


def test_the_app_collection_writes_milvus_and_a_missing_index_is_one_line(milvus_settings, tmp_path):
    collection = Collection.open(milvus_settings)
    assert len(collection.papers()) == 2
    with pytest.raises(IndexError_, match="no rqa index at .*rqa ingest"):
        open_index(Settings.load(index_uri=str(tmp_path / "missing.db")))


def test_a_retried_write_adds_a_papers_chunks_once(milvus_settings):
    from rqa import milvus

    index = open_index(milvus_settings)
    sha, doc = next(iter(index.manifest["documents"].items()))
    count = lambda: len(index.client.query(milvus.CHUNKS, filter=f'doc == "{sha}"', output_fields=["id"],  # noqa: E731
                                           consistency_level="Strong"))
    before = count()
    hits = [h for h in retrieve(index, doc["title"], milvus_settings, k=50) if h.chunk.doc == sha]
    chunks = [h.chunk for h in hits]
    vectors = index.embeddings[[h.row for h in hits]]
    # a write of the paper's chunks that had gone in before (an interrupted write, retried): the
    # paper then holds exactly these chunks, not these beside its earlier ones
    milvus.write(milvus_settings.index_uri, index.manifest, chunks, vectors, set(), {sha}, milvus_settings)
    assert before >= len(chunks) > 0 and count() == len(chunks)
    assert len(open_index(milvus_settings).manifest["documents"]) == len(index.manifest["documents"])


def test_the_clients_of_a_look_or_a_write_are_closed(monkeypatch):
    """Each upload opened a client to see whether the index exists and another to write it, and
    closed neither: every one kept its reference on the connection for the server's lifetime."""
    import numpy as np

    from rqa import milvus

    opened = []

    class Client:
        closed = False

        def has_collection(self, name):
            return True

        def close(self):
            self.closed = True

    monkeypatch.setattr(milvus, "connect", lambda uri: opened.append(Client()) or opened[-1])
    monkeypatch.setattr(milvus, "_write", lambda client, *args: None)
    assert milvus.exists("http://milvus.example:19530")
    milvus.write("http://milvus.example:19530", {}, [], np.zeros((0, 2)), set(), set(), Settings())
    assert len(opened) == 2 and all(c.closed for c in opened)
