"""The hybrid index: BM25 (bm25s) + FAISS over normalised sentence embeddings, fused by RRF.

On disk an index is a directory:
    manifest.json    format version, embedder name and dimension, settings, ingested files (sha256)
    chunks.jsonl     one Chunk per line, in index order
    embeddings.npy   float32 [n, dim], kept so that adding papers embeds only the new ones
    dense.faiss      FAISS index over the embeddings (flat, HNSW or IVF)
    bm25/            bm25s data
Writes go to a sibling temporary directory that replaces the old one by rename, so a build
killed half-way leaves the previous index loadable.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nltk.stem.porter import PorterStemmer

from rqa.embed import dimension, embed
from rqa.types import Chunk, Hit

FORMAT_VERSION = 1
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

    def search(self, question: str, k: int = 5, depth: int = 100, rrf_k: int = 60,
               mode: str = "hybrid", dense_weight: float = 0.3) -> list[Hit]:
        """Hybrid search: weighted reciprocal-rank fusion of BM25 and dense rankings, then
        overlapping chunks of the same paper are de-duplicated (the better-ranked one stays).
        The dense list counts less because MiniLM-L6 is much weaker than BM25 on technical
        papers (docs/BENCHMARKS.md: recall@5 0.35 vs 0.85); plain RRF (weight 1) lost recall."""
        sparse = self.search_bm25(question, depth) if mode in ("hybrid", "bm25") else []
        dense = self.search_dense(question, depth) if mode in ("hybrid", "dense") else []
        fused: dict[int, Hit] = {}
        for ranking, weight in ((sparse, 1.0), (dense, dense_weight)):
            for rank, (i, _) in enumerate(ranking, start=1):
                hit = fused.setdefault(i, Hit(self.chunks[i], 0.0, row=i))
                hit.score += weight / (rrf_k + rank)
        ranked = sorted(fused.values(), key=lambda h: -h.score)
        return dedupe(ranked)[:k]


def dedupe(hits: list[Hit], max_overlap: float = 0.5) -> list[Hit]:
    kept: list[Hit] = []
    for hit in hits:
        c = hit.chunk
        if any(k.chunk.paper == c.paper and _overlap(k.chunk, c) > max_overlap * (c.char_end - c.char_start)
               for k in kept):
            continue
        kept.append(hit)
    return kept


def _overlap(a: Chunk, b: Chunk) -> int:
    return max(0, min(a.char_end, b.char_end) - max(a.char_start, b.char_start))


# --- build / load ----------------------------------------------------------------------------

def build_faiss(embeddings: np.ndarray, ann: str = "flat"):
    import faiss

    n, dim = embeddings.shape if embeddings.size else (0, embeddings.shape[1] if embeddings.ndim == 2 else 0)
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


def build_bm25(chunks: list[Chunk]):
    import bm25s

    # Okapi BM25 with Robertson's idf: the scoring rank_bm25's BM25Okapi uses (the test reference).
    bm25 = bm25s.BM25(k1=1.5, b=0.75, method="robertson")
    bm25.index([tokenize(index_text(c)) for c in chunks] or [["_"]], show_progress=False)
    return bm25


def write_index(path: Path, manifest: dict, chunks: list[Chunk], embeddings: np.ndarray, ann: str) -> None:
    """Write every file into a temporary sibling, then swap it in by rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def load_index(path: Path, embedder: str | None = None) -> Index:
    """Load an index; `embedder`, when given, must be the one the index was built with."""
    import bm25s
    import faiss

    path = Path(path)
    if not (path / "manifest.json").exists() and (path.with_name(path.name + ".old") / "manifest.json").exists():
        path = path.with_name(path.name + ".old")  # a swap was interrupted between its two renames
    if not (path / "manifest.json").exists():
        raise IndexError_(f"no index at {path}: build one with `python -m rqa ingest PATHS --index {path}`")
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexError_(f"index {path} has format {manifest.get('format_version')}, this rqa reads "
                          f"{FORMAT_VERSION}: rebuild it with `python -m rqa ingest`")
    built_with = manifest["embedder"]["name"]
    if embedder and embedder != built_with:
        raise IndexError_(f"index {path} was built with embedder {built_with!r} "
                          f"(dim {manifest['embedder']['dim']}), not {embedder!r}: query it with the same "
                          f"embedder or rebuild it with --embedder {embedder}")
    with open(path / "chunks.jsonl", encoding="utf-8") as f:
        chunks = [Chunk(**json.loads(line)) for line in f]
    return Index(path=path, manifest=manifest, chunks=chunks,
                 embeddings=np.load(path / "embeddings.npy"),
                 dense=faiss.read_index(str(path / "dense.faiss")),
                 bm25=bm25s.BM25.load(str(path / "bm25"), show_progress=False, verbosity=0))


def build_or_extend(path: Path, chunks_by_file: dict[str, tuple[str, list[Chunk]]], embedder: str,
                    ann: str = "flat", settings: dict | None = None, progress: bool = True) -> tuple[int, int]:
    """Add {file: (sha256, chunks)} to the index at path (created if missing). Files already
    ingested with the same hash are skipped; a changed file replaces its old chunks.
    Returns (files added, chunks added)."""
    path = Path(path)
    if (path / "manifest.json").exists() or (path.with_name(path.name + ".old") / "manifest.json").exists():
        old = load_index(path, embedder)
        manifest, chunks, vectors = old.manifest, old.chunks, old.embeddings
    else:
        manifest = {"embedder": {"name": embedder, "dim": dimension(embedder)}, "files": {},
                    "settings": settings or {}}
        chunks, vectors = [], np.zeros((0, dimension(embedder)), dtype=np.float32)
    files = manifest["files"]
    new_chunks: list[Chunk] = []
    replaced_papers = set()
    for name, (sha, file_chunks) in chunks_by_file.items():
        if files.get(name, {}).get("sha256") == sha:
            continue
        if name in files:
            replaced_papers.add(files[name]["paper"])
        paper = file_chunks[0].paper if file_chunks else Path(name).stem
        files[name] = {"sha256": sha, "paper": paper, "chunks": len(file_chunks)}
        new_chunks.extend(file_chunks)
    if not new_chunks and not replaced_papers:
        return 0, 0
    if replaced_papers:
        keep = [i for i, c in enumerate(chunks) if c.paper not in replaced_papers]
        chunks, vectors = [chunks[i] for i in keep], vectors[keep]
    new_vectors = embed(embedder, [index_text(c) for c in new_chunks], progress=progress) if new_chunks \
        else np.zeros((0, vectors.shape[1]), dtype=np.float32)
    write_index(path, manifest, chunks + new_chunks, np.vstack([vectors, new_vectors]), ann)
    return len({c.paper for c in new_chunks}), len(new_chunks)
