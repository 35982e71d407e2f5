"""The one way to search an index with the settings: used by the app, CLI, pipeline, benchmarks and tests.

BM25 and dense rankings are fused by weighted reciprocal-rank fusion; overlapping chunks of one
paper are de-duplicated; then, when a reranker is configured, the fused top `rerank_depth` are
re-ordered by it (rqa.rerank).
"""

from __future__ import annotations

from rqa.config import Settings
from rqa.index import Index
from rqa.types import Chunk, Hit

MODES = ("hybrid", "bm25", "dense")


def retrieve(index: Index, question: str, settings: Settings, k: int | None = None,
             mode: str = "hybrid") -> list[Hit]:
    """The top k chunks for a question. The dense list counts `dense_weight` (BM25 counts 1): the
    general-purpose MiniLM-L6 is weaker than BM25 on technical papers (docs/BENCHMARKS.md)."""
    if mode not in MODES:
        raise ValueError(f"search mode {mode!r}: expected one of {', '.join(MODES)}")
    k = settings.k if k is None else k
    rerank = bool(settings.reranker) and mode == "hybrid"
    depth = max(settings.fusion_depth, k, settings.rerank_depth if rerank else 0)
    sparse = index.search_bm25(question, depth) if mode in ("hybrid", "bm25") else []
    dense = index.search_dense(question, depth) if mode in ("hybrid", "dense") else []
    fused: dict[int, Hit] = {}
    for ranking, weight in ((sparse, 1.0), (dense, settings.dense_weight)):
        for rank, (i, _) in enumerate(ranking, start=1):
            hit = fused.setdefault(i, Hit(index.chunks[i], 0.0, row=i))
            hit.score += weight / (settings.rrf_k + rank)
    ranked = dedupe(sorted(fused.values(), key=lambda h: -h.score))
    if rerank:
        from rqa.rerank import rerank as rerank_hits

        ranked = rerank_hits(settings.reranker, question, ranked[:settings.rerank_depth], settings.rerank_weight)
    return ranked[:k]


def dedupe(hits: list[Hit], max_overlap: float = 0.5) -> list[Hit]:
    """Drop a chunk that overlaps a better-ranked chunk of the same paper by more than half."""
    kept: list[Hit] = []
    for hit in hits:
        c = hit.chunk
        if any(_same_doc(k.chunk, c) and _overlap(k.chunk, c) > max_overlap * (c.char_end - c.char_start)
               for k in kept):
            continue
        kept.append(hit)
    return kept


def _same_doc(a: Chunk, b: Chunk) -> bool:
    return a.doc == b.doc if a.doc and b.doc else a.paper == b.paper


def _overlap(a: Chunk, b: Chunk) -> int:
    return max(0, min(a.char_end, b.char_end) - max(a.char_start, b.char_start))
