"""The one way to search an index with the settings: used by the app, CLI, pipeline, benchmarks and tests.

BM25 and dense results are fused (a convex combination of their scores by default, reciprocal-rank
fusion on request); neighbouring chunks that share the chunker's overlap both stay (a short chunk
at a section's end can share more than half its text with the one before and still hold the
sentence that answers: PonderNet's halting threshold); the fused top `rerank_depth`
get a second BM25 score with their own paper's term weights (`within_paper`); then, when a reranker
is configured, they are re-ordered by it (rqa.rerank).
"""

from __future__ import annotations

from rqa.config import Settings
from rqa.index import Index, doc_key
from rqa.types import Chunk, Hit

MODES = ("hybrid", "bm25", "dense")


def retrieve(index: Index, question: str, settings: Settings, k: int | None = None,
             mode: str = "hybrid", expansion: str = "") -> list[Hit]:
    """The top k chunks for a question. `expansion` (rqa.expand) is searched by BM25 together with
    the question, whose words count `expand_question_weight` times; the dense query stays the
    question alone."""
    if mode not in MODES:
        raise ValueError(f"search mode {mode!r}: expected one of {', '.join(MODES)}")
    k = settings.k if k is None else k
    rerank = bool(settings.reranker) and mode == "hybrid"
    depth = max(settings.fusion_depth, k, settings.rerank_depth if rerank else 0)
    text = " ".join([question] * settings.expand_question_weight + [expansion]) if expansion else question
    sparse = index.search_bm25(text, depth) if mode in ("hybrid", "bm25") else []
    dense = index.search_dense(question, depth) if mode in ("hybrid", "dense") else []
    fuse = fuse_rrf if settings.fusion == "rrf" else fuse_convex
    scores = fuse(sparse, dense, settings)
    hits = [Hit(index.chunks[i], score, row=i) for i, score in scores.items()]
    ranked = sorted(hits, key=lambda h: -h.score)
    if settings.within_paper_weight and mode == "hybrid" and settings.fusion == "convex":
        depth = settings.rerank_depth
        ranked = within_paper(index, question, ranked[:depth], settings) + ranked[depth:]
    if rerank:
        from rqa.rerank import rerank as rerank_hits

        ranked = rerank_hits(settings.reranker, question, ranked[:settings.rerank_depth], settings.rerank_weight,
                             settings.rrf_k)
    return ranked[:k]


def fuse_convex(sparse: list[tuple[int, float]], dense: list[tuple[int, float]],
                settings: Settings) -> dict[int, float]:
    """BM25 + dense_weight x cosine, each scaled to [0, 1] between its theoretical floor (BM25 0,
    cosine -1) and the query's best score. Unlike rank fusion this keeps the margins: a chunk BM25
    finds far ahead of the rest stays ahead of chunks both retrievers rank middling, which is where
    RRF lost the evidence on dev (MRR 0.58 vs 0.77, docs/BENCHMARKS.md). The theoretical floor rather
    than the list's minimum keeps the scale independent of fusion_depth (Bruch et al. 2023, "An
    analysis of fusion functions for hybrid retrieval"). A chunk missing from one list gets 0 there."""
    fused: dict[int, float] = {}
    for ranking, floor, weight in ((sparse, 0.0, 1.0), (dense, -1.0, settings.dense_weight)):
        if not ranking:
            continue
        top = max(score for _, score in ranking)
        span = max(top - floor, 1e-9)
        for i, score in ranking:
            fused[i] = fused.get(i, 0.0) + weight * (score - floor) / span
    return fused


def within_paper(index: Index, question: str, hits: list[Hit], settings: Settings,
                 papers: int = 5) -> list[Hit]:
    """Candidates re-scored with their paper's own term weights: to each chunk of a paper among the
    top `papers` hits, add within_paper_weight x its BM25 score over that paper's chunks alone,
    scaled by the best such score among the paper's candidates (all of them the full weight where
    every such score is 0). The fused scores find the paper;
    inside it, the question's words that name the paper weigh nothing and the words that single out
    the passage decide (dev-100 at 0.2: the evidence ranks higher in 15 questions, lower in 6; BENCHMARKS).
    The weight is on the convex scores' scale (about [0, 1.5]), so rrf fusion goes without it."""
    docs = {doc_key(h.chunk) for h in hits[:papers]}
    extra = [0.0] * len(hits)
    for doc in docs:
        members = [i for i, h in enumerate(hits) if doc_key(h.chunk) == doc]
        scores = index.paper_terms(doc, settings).scores(question, [hits[i].chunk.chunk_id for i in members])
        top = max(scores)
        for i, s in zip(members, scores):
            # a paper whose own terms cannot tell its candidates apart (a one- or two-chunk upload, or
            # no question word there) keeps its order and loses no ground to the papers that could
            extra[i] = settings.within_paper_weight * (s / top if top > 0 else 1.0)
    rescored = [Hit(h.chunk, h.score + e, row=h.row) for h, e in zip(hits, extra)]
    return sorted(rescored, key=lambda h: -h.score)  # stable: ties keep the fused order


def fuse_rrf(sparse: list[tuple[int, float]], dense: list[tuple[int, float]],
             settings: Settings) -> dict[int, float]:
    """Weighted reciprocal-rank fusion: ranks only, so scales never need matching."""
    fused: dict[int, float] = {}
    for ranking, weight in ((sparse, 1.0), (dense, settings.dense_weight)):
        for rank, (i, _) in enumerate(ranking, start=1):
            fused[i] = fused.get(i, 0.0) + weight / (settings.rrf_k + rank)
    return fused


def overlap(a: Chunk, b: Chunk) -> int:
    """The characters two chunks of one paper share (the chunker's overlap, or none)."""
    return max(0, min(a.char_end, b.char_end) - max(a.char_start, b.char_start))
