"""The hybrid index: BM25 (bm25s) + FAISS over normalised sentence embeddings (fused in rqa.search).

On disk an index is a directory:
    manifest.json    format version, embedder (name, dimension, weights fingerprint), chunk settings, documents:
                     {content sha256: {paper, title, pages, chunks, paths}}
    chunks.jsonl     one Chunk per line, in index order
    embeddings.npy   float32 [n, dim], kept so that adding papers embeds only the new ones
    dense.faiss      FAISS index over the embeddings (flat, HNSW or IVF)
    bm25/            bm25s data
    embedder/        a copy of the embedder when it is a local folder (a tuned one): the index
                     carries what it must be queried with, to the Hub and back
A paper is identified by the sha256 of its content, its paths kept as metadata: two files with the
same name never collide, the same content is stored once, and an updated file replaces exactly its
own chunks. Writes go to a sibling temporary directory that replaces the old one by rename, so a
build killed half-way leaves the previous index loadable; leftovers are removed at the next write.
Loading verifies that the files agree with each other and names the one that does not.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nltk.stem.porter import PorterStemmer

from rqa.embed import DEFAULT_EMBEDDER, dimension, embed, fingerprint, is_local_model
from rqa.types import Chunk

FORMAT_VERSION = 3
STOPWORDS = set("""a an and are as at be been but by can could did do does for from had has have how i if in
into is it its may might more most no not of on or our so such than that the their them then there these they
this those to was we were what when where which while who why will with would you your""".split())


class IndexError_(Exception):
    """An index that cannot be used; the message says why and what to do."""


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _STEMMER.stem(word)


_STEMMER = PorterStemmer()


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words, stop words dropped, Porter-stemmed ("heads" matches "head")."""
    return [_stem(t) for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOPWORDS]


def index_text(chunk: Chunk) -> str:
    """What both retrievers see: title and section give a chunk the context its text lacks."""
    return f"{chunk.title}. {chunk.section}.\n{chunk.text}"


@dataclass
class Index:
    path: Path
    manifest: dict
    chunks: list[Chunk]
    embeddings: np.ndarray
    dense: object  # faiss.Index
    bm25: object  # bm25s.BM25

    @property
    def embedder(self) -> str:
        """The embedder queries must use: the index's bundled copy, or the named one."""
        if self.manifest["embedder"].get("bundled"):
            return str(self.path / "embedder")
        return self.manifest["embedder"]["name"]

    # --- search --------------------------------------------------------------------------

    def search_bm25(self, question: str, k: int) -> list[tuple[int, float]]:
        tokens = [t for t in tokenize(question) if t in self.bm25.vocab_dict]
        if not tokens or not self.chunks:
            return []
        scores = self.bm25.get_scores(tokens)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def search_dense(self, question: str, k: int) -> list[tuple[int, float]]:
        if not self.chunks:
            return []
        scores, ids = self.dense.search(embed(self.embedder, [question]), min(k, len(self.chunks)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    @classmethod
    def from_chunks(cls, chunks: list[Chunk], embedder: str, ann: str = "flat",
                    embeddings: np.ndarray | None = None, settings: dict | None = None) -> "Index":
        """An in-memory index over chunks (embedded here unless their vectors are given): what the
        pipeline and benchmarks search, built exactly as an index on disk is."""
        if embeddings is None:
            embeddings = embed(embedder, [index_text(c) for c in chunks]) if chunks \
                else np.zeros((0, dimension(embedder)), dtype=np.float32)
        manifest = {"format_version": FORMAT_VERSION, "embedder": {"name": embedder, "dim": embeddings.shape[1]},
                    "documents": {}, "settings": dict(settings or {}), "chunks": len(chunks), "ann": ann}
        return cls(path=Path("."), manifest=manifest, chunks=chunks, embeddings=embeddings,
                   dense=build_faiss(embeddings, ann), bm25=build_bm25(chunks))


# --- build / load ----------------------------------------------------------------------------

# The settings an index is built with; extending it with other values would mix two chunkings.
CHUNK_SETTINGS = ("chunk_size", "overlap", "method_chunk_factor")


def build_faiss(embeddings: np.ndarray, ann: str = "flat"):
    import faiss

    n, dim = embeddings.shape
    if ann == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    elif ann == "ivf" and n >= 1000:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
        index.nprobe = max(8, nlist // 16)
    else:  # exact search; also IVF on corpora too small to train clusters
        index = faiss.IndexFlatIP(dim)
    if n:
        index.add(embeddings)
    return index


def build_bm25(chunks: list[Chunk], text=index_text, k1: float = 1.5, b: float = 0.75):
    import bm25s

    # Okapi BM25 with Robertson's idf: the scoring rank_bm25's BM25Okapi uses (the test reference).
    # k1 and b stay at the usual 1.5/0.75: lower k1 (Anserini's passage values 0.82/0.68) found two
    # paraphrased dev answers and lost a third (docs/BENCHMARKS.md), no gain worth a tuned constant.
    bm25 = bm25s.BM25(k1=k1, b=b, method="robertson")
    bm25.index([tokenize(text(c)) for c in chunks] or [["_"]], show_progress=False)
    return bm25


def write_index(path: Path, manifest: dict, chunks: list[Chunk], embeddings: np.ndarray, ann: str,
                embedder_dir: Path | None = None) -> None:
    """Write every file into a temporary sibling, then swap it in by rename (embedder_dir: a
    local embedder folder to bundle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f"{path.name}.tmp-*"):  # from a write that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = path.with_name(f"{path.name}.tmp-{int(time.time() * 1000)}")
    tmp.mkdir()
    try:
        import faiss

        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
        np.save(tmp / "embeddings.npy", embeddings)
        faiss.write_index(build_faiss(embeddings, ann), str(tmp / "dense.faiss"))
        build_bm25(chunks).save(str(tmp / "bm25"), show_progress=False)
        if embedder_dir is not None:
            shutil.copytree(embedder_dir, tmp / "embedder", ignore=shutil.ignore_patterns("checkpoints"))
        manifest = {**manifest, "format_version": FORMAT_VERSION, "chunks": len(chunks), "ann": ann}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _located(path: Path) -> Path:
    if not (path / "manifest.json").exists() and (path.with_name(path.name + ".old") / "manifest.json").exists():
        return path.with_name(path.name + ".old")  # a swap was interrupted between its two renames
    return path


def index_exists(path: Path) -> bool:
    return (_located(Path(path)) / "manifest.json").exists()


def load_index(path: Path, embedder: str | None = None) -> Index:
    """Load and verify an index; `embedder`, when given, must be the one it was built with.
    Every inconsistency is one IndexError_ line naming the file and how to rebuild."""
    import bm25s
    import faiss

    path = _located(Path(path))
    if not (path / "manifest.json").exists():
        raise IndexError_(f"no index at {path}: build one with `python -m rqa ingest PATHS --index {path}`")

    def corrupt(file: str, what: str) -> IndexError_:
        return IndexError_(f"index {path} is corrupt: {file} {what}. Rebuild it: delete {path} and run "
                           f"`python -m rqa ingest PAPERS --index {path}`")

    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise corrupt("manifest.json", f"is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise corrupt("manifest.json", "is not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        # Format 3 keeps sub- and superscripts in the chunk text (d_k, 10^{6}); older text lost them,
        # and only the papers can give them back, so an older index is rebuilt rather than migrated.
        raise IndexError_(f"index {path} has format {manifest.get('format_version')}, this rqa reads "
                          f"{FORMAT_VERSION}: delete it and rebuild it with `python -m rqa ingest PAPERS --index {path}`")
    for key in ("embedder", "documents", "settings", "chunks"):
        if key not in manifest:
            raise corrupt("manifest.json", f"has no {key!r} field")
    if not isinstance(manifest["embedder"], dict) or not {"name", "dim"} <= set(manifest["embedder"]):
        raise corrupt("manifest.json", "has no embedder name and dimension")
    built_with = manifest["embedder"]["name"]
    same = (fingerprint(embedder) == manifest["embedder"]["fingerprint"]) if embedder and "fingerprint" in manifest["embedder"] \
        else embedder == built_with
    if embedder and not same:
        raise IndexError_(f"index {path} was built with embedder {built_with!r} "
                          f"(dim {manifest['embedder']['dim']}), not {embedder!r}: query it with the same "
                          f"embedder or rebuild it with --embedder {embedder}")
    n, dim = manifest["chunks"], manifest["embedder"]["dim"]
    chunks = []
    try:
        with open(path / "chunks.jsonl", encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                chunks.append(Chunk(**json.loads(line)))
    except FileNotFoundError:
        raise corrupt("chunks.jsonl", "is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise corrupt("chunks.jsonl", f"line {line_no} is not a chunk ({e})") from None
    if len(chunks) != n:
        raise corrupt("chunks.jsonl", f"has {len(chunks)} chunks, the manifest says {n}")
    try:
        embeddings = np.load(path / "embeddings.npy", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise corrupt("embeddings.npy", f"cannot be read ({e})") from None
    if embeddings.shape != (n, dim):
        raise corrupt("embeddings.npy", f"has shape {embeddings.shape}, expected ({n}, {dim})")
    try:
        # flat and IVF map from disk, so a process holds only the pages its queries touch (an index
        # is replaced by renaming a new directory in, so a mapped file never changes under us)
        dense = faiss.read_index(str(path / "dense.faiss"), 0 if manifest.get("ann") == "hnsw" else faiss.IO_FLAG_MMAP)
    except RuntimeError as e:
        raise corrupt("dense.faiss", f"cannot be read ({str(e).strip().splitlines()[-1]})") from None
    if dense.ntotal != n or dense.d != dim:
        raise corrupt("dense.faiss", f"holds {dense.ntotal} vectors of dim {dense.d}, expected {n} of {dim}")
    try:
        bm25 = bm25s.BM25.load(str(path / "bm25"), mmap=True, show_progress=False, verbosity=0)
        bm25_docs = int(bm25.scores["num_docs"])
    except Exception as e:
        raise corrupt("bm25/", f"cannot be read ({type(e).__name__}: {e})") from None
    if bm25_docs != max(n, 1):
        raise corrupt("bm25/", f"indexes {bm25_docs} chunks, expected {n}")
    return Index(path=path, manifest=manifest, chunks=chunks, embeddings=np.asarray(embeddings),
                 dense=dense, bm25=bm25)


@dataclass
class Incoming:
    """One file to add: where it was read from, its content hash, its chunks and metadata."""

    path: str
    sha256: str
    chunks: list[Chunk]
    paper: str
    title: str
    pages: int


@dataclass
class ExtendResult:
    added_paths: list[str] = field(default_factory=list)  # files whose chunks were embedded and added
    same_content: list[str] = field(default_factory=list)  # files whose content was stored already
    chunks_added: int = 0
    removed: int = 0  # documents no path points at any more (an updated file's old content)


def check_chunk_settings(manifest: dict, chunk_settings: dict, path: Path) -> None:
    """An index is searched and extended only with the chunk settings it was built with (the
    embedder is checked by load_index): mixing two chunkings would go unnoticed otherwise."""
    built = {k: manifest["settings"].get(k) for k in CHUNK_SETTINGS}
    asked = {k: chunk_settings.get(k) for k in CHUNK_SETTINGS}
    differ = [k for k in CHUNK_SETTINGS if built[k] is not None and asked[k] is not None and built[k] != asked[k]]
    if differ:
        raise IndexError_(f"index {path} was built with " + ", ".join(f"{k}={built[k]}" for k in differ)
                          + "; the settings ask for " + ", ".join(f"{k}={asked[k]}" for k in differ)
                          + ": use the index's settings (" + ", ".join(f"--{k.replace('_', '-')} {built[k]}" for k in differ)
                          + ") or ingest into a new --index")


def without_documents(chunks: list[Chunk], vectors: np.ndarray, shas: set[str]) -> tuple[list[Chunk], np.ndarray]:
    keep = [i for i, c in enumerate(chunks) if c.doc not in shas]
    return [chunks[i] for i in keep], vectors[keep]


@contextlib.contextmanager
def write_lock(path: Path):
    """One writer per index folder across processes (two apps, or the app and `rqa ingest`): a lock
    file beside the folder (the folder itself is swapped by rename). Writers re-read the index from
    disk once they hold it, so nobody's papers are lost."""
    import portalocker

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        portalocker.lock(f, portalocker.LOCK_EX)
        try:
            yield
        finally:
            portalocker.unlock(f)


def build_or_extend(path: Path, incoming: list[Incoming], embedder: str, ann: str = "flat",
                    chunk_settings: dict | None = None, progress: bool = True) -> ExtendResult:
    """Add files to the index at path (created if missing). A path whose content is unchanged is
    skipped; content already stored under another path gains that path; a path whose content
    changed moves to the new content, and old content that no path points at any more is removed."""
    with write_lock(path):
        return _build_or_extend(Path(path), incoming, embedder, ann, chunk_settings, progress)


def _build_or_extend(path: Path, incoming: list[Incoming], embedder: str, ann: str,
                     chunk_settings: dict | None, progress: bool) -> ExtendResult:
    chunk_settings = chunk_settings or {}
    if index_exists(path):
        old = load_index(path, embedder)
        check_chunk_settings(old.manifest, chunk_settings, path)
        manifest, chunks, vectors = old.manifest, old.chunks, old.embeddings
        embedder = old.embedder
        bundle = Path(embedder) if manifest["embedder"].get("bundled") else None
    else:
        embedder = embedder or DEFAULT_EMBEDDER
        bundle = Path(embedder) if is_local_model(embedder) else None
        manifest = {"embedder": {"name": embedder, "dim": dimension(embedder), "fingerprint": fingerprint(embedder),
                                 "bundled": bundle is not None}, "documents": {}, "settings": dict(chunk_settings)}
        chunks, vectors = [], np.zeros((0, dimension(embedder)), dtype=np.float32)
    docs: dict[str, dict] = manifest["documents"]
    result = ExtendResult()
    new_chunks: list[Chunk] = []
    for item in incoming:
        owner = next((sha for sha, d in docs.items() if item.path in d["paths"]), None)
        if owner == item.sha256:
            continue
        if owner:
            docs[owner]["paths"].remove(item.path)
        if item.sha256 in docs:
            docs[item.sha256]["paths"].append(item.path)
            result.same_content.append(item.path)
            continue
        docs[item.sha256] = {"paper": item.paper, "title": item.title, "pages": item.pages,
                             "chunks": len(item.chunks), "paths": [item.path]}
        new_chunks.extend(item.chunks)
        result.added_paths.append(item.path)
    orphans = {sha for sha, d in docs.items() if not d["paths"]}
    for sha in orphans:
        del docs[sha]
    result.removed = len(orphans)
    if not new_chunks and not orphans:
        if result.same_content:  # only paths were added: no chunk changes, just the manifest
            write_index(path, manifest, chunks, vectors, manifest.get("ann", ann), bundle)
        return result
    chunks, vectors = without_documents(chunks, vectors, orphans)
    new_vectors = embed(embedder, [index_text(c) for c in new_chunks], progress=progress) if new_chunks \
        else np.zeros((0, vectors.shape[1]), dtype=np.float32)
    write_index(path, manifest, chunks + new_chunks, np.vstack([vectors, new_vectors]), ann, bundle)
    result.chunks_added = len(new_chunks)
    return result


def remove_documents(path: Path, shas: set[str]) -> int:
    """Remove papers (by content hash) from the index at path, atomically; returns how many."""
    path = Path(path)
    with write_lock(path):
        return _remove_documents(path, shas)


def _remove_documents(path: Path, shas: set[str]) -> int:
    index = load_index(path)
    docs = index.manifest["documents"]
    gone = {sha for sha in shas if sha in docs}
    if not gone:
        return 0
    for sha in gone:
        del docs[sha]
    write_index(path, index.manifest, *without_documents(index.chunks, index.embeddings, gone),
                index.manifest.get("ann", "flat"), Path(index.embedder) if index.manifest["embedder"].get("bundled") else None)
    return len(gone)
