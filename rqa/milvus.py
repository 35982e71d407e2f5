"""The index on Milvus: a Milvus Lite file (`*.db`, embedded, no server) or a Milvus server or
cluster (`http://host:19530`), named by the `index_uri` setting. The same client calls serve both.

Milvus holds what the local index folder holds: each chunk with its metadata, its embedding and
its text, over which Milvus's own BM25 function builds the sparse vectors; the papers (the local
manifest's documents) and the index's embedder and chunk settings. rqa.search fuses the two result
lists exactly as it fuses the local index's, so the answer path cannot tell the two apart; only
what a search returns is fetched, so the app never holds the corpus in memory.

Three collections: rqa_chunks, rqa_documents (one row per paper content hash) and rqa_meta (the
embedder and chunk settings the index was built with).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np

from rqa.errors import IndexError_, StoreError
from rqa.index import PaperTerms, index_text
from rqa.text import tokenize
from rqa.types import Chunk

CHUNKS, DOCUMENTS, META = "rqa_chunks", "rqa_documents", "rqa_meta"
TEXT_MAX = 65_535  # Milvus's longest VARCHAR; a chunk is about 1,000 characters
LABEL_MAX = 1_000  # characters of a title or section heading kept
# BM25 reads rqa's own terms (rqa.text.tokenize: lower case, rqa's stop words, Porter stems), written
# space-separated, so that Milvus's standard tokenizer only splits them: with Milvus's own English
# filters instead (its stop list, Snowball stems) dev-100 recall@5 was 0.83 against the local 0.87.
ANALYZER = {"tokenizer": "standard"}
DENSE_INDEX = {"flat": ("FLAT", {}), "hnsw": ("HNSW", {"M": 32, "efConstruction": 200}), "ivf": ("IVF_FLAT", {"nlist": 1024})}
CHUNK_FIELDS = ["chunk_id", "doc", "paper", "title", "section", "page_start", "page_end", "char_start", "char_end",
                "arxiv_id", "text"]


def terms(text: str) -> str:
    return " ".join(tokenize(text))[:TEXT_MAX]


def is_milvus_server(location: str) -> bool:
    return str(location).startswith(("http://", "https://", "tcp://"))


def is_milvus_uri(location: str) -> bool:
    return str(location).endswith(".db") or is_milvus_server(location)


def connect(uri: str):
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri)
    except Exception as e:  # unreachable server, unwritable file, a file that is no Milvus Lite database
        raise IndexError_(f"cannot open the Milvus index {uri} ({type(e).__name__}: {str(e)[:160]})") from None


def create(client, dim: int, settings) -> None:
    """The three collections of a new index."""
    from pymilvus import DataType, Function, FunctionType

    schema = client.create_schema(auto_id=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    for name in ("chunk_id", "doc", "paper", "arxiv_id"):
        schema.add_field(name, DataType.VARCHAR, max_length=512)
    for name in ("title", "section"):
        schema.add_field(name, DataType.VARCHAR, max_length=4 * LABEL_MAX)  # bytes; a character takes up to 4
    for name in ("page_start", "page_end", "char_start", "char_end"):
        schema.add_field(name, DataType.INT64)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
    # what BM25 reads, as in the local index: title and section give a chunk the context its text
    # lacks; as terms (`terms`)
    schema.add_field("terms", DataType.VARCHAR, max_length=TEXT_MAX, enable_analyzer=True, analyzer_params=ANALYZER)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["terms"],
                                 output_field_names=["sparse"]))
    params = client.prepare_index_params()
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                     params={"bm25_k1": settings.bm25_k1, "bm25_b": settings.bm25_b})
    kind, extra = DENSE_INDEX[settings.ann]
    params.add_index("dense", index_type=kind, metric_type="IP", params=extra)
    params.add_index("doc", index_type="INVERTED")
    # Strong: a read right after a write sees it (a server's default, Bounded, may not)
    client.create_collection(CHUNKS, schema=schema, index_params=params, consistency_level="Strong")

    for name in (DOCUMENTS, META):
        schema = client.create_schema(auto_id=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("value", DataType.JSON)
        schema.add_field("pad", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        params = client.prepare_index_params()
        params.add_index("pad", index_type="FLAT", metric_type="L2")
        client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")


def exists(uri: str) -> bool:
    if uri.endswith(".db") and not Path(uri).exists():  # (Milvus Lite 3 keeps a folder of that name)
        return False
    with contextlib.closing(connect(uri)) as client:  # each client holds a connection until closed
        return client.has_collection(META)


@dataclass
class MilvusIndex:
    """The search side of rqa.index.Index over Milvus: `search_bm25`, `search_dense`, `chunks[i]`,
    `embeddings[rows]`, `manifest` and `embedder`. Row numbers are Milvus's chunk ids; `chunks`
    and `embeddings` hold what searches returned (a bounded cache), not the corpus."""

    path: str  # the URI
    client: object
    manifest: dict
    chunks: OrderedDict = field(default_factory=OrderedDict)
    _vectors: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _papers: OrderedDict = field(default_factory=OrderedDict)  # (doc, k1, b) -> PaperTerms, the latest PAPERS

    # chunks kept from earlier searches, the oldest dropped first: a search adds at most
    # 2 x fusion_depth, so a question's own hits are still there when rqa.search reads them
    CACHE = 20_000
    PAPERS = 256

    @classmethod
    def open(cls, uri: str) -> "MilvusIndex":
        client = connect(uri)
        if not client.has_collection(META):
            raise IndexError_(f"no rqa index at {uri}; build one with `rqa ingest PAPERS --index-uri {uri}`")
        for name in (CHUNKS, DOCUMENTS, META):
            client.load_collection(name)
        meta = client.query(META, filter='key == "index"', output_fields=["value"], consistency_level="Strong")
        if not meta:
            raise IndexError_(f"the rqa index at {uri} is incomplete (its first write did not finish); "
                              f"build it again with `rqa ingest PAPERS --index-uri {uri}`")
        meta = meta[0]["value"]
        rows = client.query_iterator(DOCUMENTS, filter='key != ""', output_fields=["key", "value"], batch_size=1000,
                                     consistency_level="Strong")
        documents = {}
        while batch := rows.next():
            documents.update((row["key"], row["value"]) for row in batch)
        rows.close()
        return cls(uri, client, {"format": "milvus", "embedder": meta["embedder"], "settings": meta["settings"],
                                 "ann": meta.get("ann", "flat"), "documents": documents})

    @property
    def embedder(self) -> str:
        return self.manifest["embedder"]["name"]

    @property
    def embeddings(self) -> "_Vectors":
        return _Vectors(self._vectors)

    def search_bm25(self, question: str, k: int) -> list[tuple[int, float]]:
        query = terms(question)
        if not query:
            return []
        found = self.client.search(CHUNKS, data=[query], anns_field="sparse", limit=k,
                                   output_fields=CHUNK_FIELDS + ["dense"], search_params={"metric_type": "BM25"})
        # Milvus Lite reports BM25 as a negative distance, a server as a positive score: the score is
        # its magnitude either way (BM25 is never negative), the order the same.
        return self._keep(found[0], abs)

    def search_dense(self, question: str, k: int) -> list[tuple[int, float]]:
        from rqa.embed import embed

        query = embed(self.embedder, [question], progress=False)[0]
        found = self.client.search(CHUNKS, data=[query.tolist()], anns_field="dense", limit=k,
                                   output_fields=CHUNK_FIELDS + ["dense"], search_params={"metric_type": "IP"})
        return self._keep(found[0], float)

    def paper_terms(self, doc: str, settings) -> PaperTerms:
        """BM25 over one paper's chunks, read from Milvus on first use and kept for the next searches
        once the paper is read whole (as many chunks as its document row lists). A paper that cannot
        be read (Milvus failing, a write half done) is scored as unknown this time, not cached."""
        from pymilvus.exceptions import MilvusException

        key = (doc, settings.bm25_k1, settings.bm25_b)
        with self._lock:
            if key in self._papers:
                self._papers.move_to_end(key)
                return self._papers[key]
        if not doc or any(ch not in "0123456789abcdef" for ch in doc):  # a content hash; nothing else goes
            return PaperTerms.build([], settings)                        # into a filter
        chunks, rows = [], None
        try:
            rows = self.client.query_iterator(CHUNKS, filter=f'doc == "{doc}"', output_fields=CHUNK_FIELDS,
                                              batch_size=1000)
            while (batch := rows.next()) and len(chunks) <= PaperTerms.MAX_CHUNKS:
                chunks += [Chunk(**{name: row.get(name) for name in CHUNK_FIELDS}) for row in batch]
        except MilvusException:
            return PaperTerms.build([], settings)
        finally:
            if rows is not None:
                rows.close()
        terms_ = PaperTerms.build(chunks if len(chunks) <= PaperTerms.MAX_CHUNKS else [], settings)
        if len(chunks) > PaperTerms.MAX_CHUNKS or len(chunks) == self.manifest.get("documents", {}).get(doc, {}).get("chunks"):
            with self._lock:
                self._papers[key] = terms_
                while len(self._papers) > self.PAPERS:
                    self._papers.popitem(last=False)
        return terms_

    def _keep(self, hits, score) -> list[tuple[int, float]]:
        with self._lock:
            for hit in hits:
                entity = hit["entity"]
                self.chunks[hit["id"]] = Chunk(**{name: entity.get(name) for name in CHUNK_FIELDS})
                self.chunks[hit["id"]].arxiv_id = entity.get("arxiv_id") or None
                self.chunks.move_to_end(hit["id"])
                self._vectors[hit["id"]] = np.asarray(entity["dense"], dtype=np.float32)
            while len(self.chunks) > self.CACHE:
                old, _ = self.chunks.popitem(last=False)
                self._vectors.pop(old, None)
        return [(hit["id"], score(hit["distance"])) for hit in hits]


class _Vectors:
    """`index.embeddings[rows]` for rows a search returned (the answer path reuses them)."""

    def __init__(self, vectors: dict):
        self.vectors = vectors

    def __getitem__(self, rows) -> np.ndarray:
        return np.stack([self.vectors[r] for r in rows])


# --- writing ------------------------------------------------------------------------------------

def write(uri: str, manifest: dict, new_chunks: list[Chunk], new_vectors: np.ndarray, removed: set[str],
          changed_docs: set[str], settings) -> None:
    """Apply one change: chunks of removed papers deleted, new chunks inserted, the documents
    table updated. Called under the collection's write lock."""
    from pymilvus.exceptions import MilvusException

    try:
        with contextlib.closing(connect(uri)) as client:
            _write(client, manifest, new_chunks, new_vectors, removed, changed_docs, settings)
    except MilvusException as e:
        raise StoreError(f"the Milvus index could not be written ({str(e)[:160]}); the papers it held are "
                         "unchanged or can be added again") from None


def _write(client, manifest, new_chunks, new_vectors, removed, changed_docs, settings) -> None:
    if not client.has_collection(META):
        create(client, int(manifest["embedder"]["dim"]), settings)
        client.insert(META, [{"key": "index", "pad": [0.0, 0.0], "value": {
            "embedder": manifest["embedder"], "settings": manifest["settings"], "ann": settings.ann}}])
    # A retried write must not add a paper's chunks twice: the incoming papers' rows go first too.
    for sha in set(removed) | {c.doc for c in new_chunks}:
        client.delete(CHUNKS, filter=f'doc == "{sha}"')  # a content hash: hex digits only
    for sha in removed:
        client.delete(DOCUMENTS, ids=[sha])
    for start in range(0, len(new_chunks), 1000):
        rows = []
        for c, v in zip(new_chunks[start:start + 1000], new_vectors[start:start + 1000]):
            row = {name: getattr(c, name) for name in CHUNK_FIELDS}
            row["arxiv_id"] = c.arxiv_id or ""
            row["title"], row["section"] = c.title[:LABEL_MAX], c.section[:LABEL_MAX]  # Milvus bounds every string
            row["terms"] = terms(index_text(c))
            row["dense"] = v.tolist()
            rows.append(row)
        client.insert(CHUNKS, rows)
    # delete, then insert: Milvus Lite has no upsert
    docs = manifest["documents"]
    if changed_docs:
        client.delete(DOCUMENTS, ids=sorted(changed_docs))
    updates = [{"key": sha, "value": docs[sha], "pad": [0.0, 0.0]} for sha in sorted(changed_docs) if sha in docs]
    if updates:
        client.insert(DOCUMENTS, updates)
    client.flush(CHUNKS)

