"""Second-stage reranking of the fused candidates.

A reranker reads the question next to each candidate's text, which the first stage cannot afford
to do for every chunk. Two kinds run here on a CPU:
  - a cross-encoder (a sentence-transformers CrossEncoder folder: a model "ForSequenceClassification")
    scores each (question, chunk) pair jointly;
  - a bi-encoder (any sentence-transformers embedder, e.g. the pipeline's tuned one) embeds the
    candidates at query time, so an index built with the stock embedder can use a tuned one
    without being re-embedded.
The reranker's order is fused with the first stage's by reciprocal rank (the first stage keeps a
say: on its own a small reranker loses what BM25's exact matches find).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from rqa.index import index_text
from rqa.types import Hit

@functools.lru_cache(maxsize=2)
def _load(name: str):
    from rqa.embed import load_embedder, resolve_model

    path = Path(resolve_model(name))
    config = path / "config.json"
    if config.exists() and any(a.endswith("ForSequenceClassification")
                               for a in json.loads(config.read_text()).get("architectures", [])):
        from sentence_transformers import CrossEncoder

        return "cross", CrossEncoder(str(path), device="cpu")
    return "bi", load_embedder(name)


def scores(name: str, question: str, texts: list[str]) -> np.ndarray:
    kind, model = _load(name)
    if kind == "cross":
        return np.asarray(model.predict([(question, t) for t in texts], show_progress_bar=False), dtype=np.float32)
    vecs = model.encode([question] + texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return vecs[1:] @ vecs[0]


def rerank(name: str, question: str, hits: list[Hit], weight: float, rrf_k: int) -> list[Hit]:
    if len(hits) < 2:
        return hits
    s = scores(name, question, [index_text(h.chunk) for h in hits])
    order = np.argsort(-s, kind="stable")
    fused = {i: 1.0 / (rrf_k + i + 1) for i in range(len(hits))}
    for rank, i in enumerate(order, start=1):
        fused[int(i)] += weight / (rrf_k + rank)
    ranked = sorted(range(len(hits)), key=lambda i: -fused[i])
    return [Hit(hits[i].chunk, fused[i], row=hits[i].row) for i in ranked]
