"""A finer-grained index, measured before it is built: does scoring a chunk by its best passage
(a window of sentences) find the right chunk within the right paper more often?

Every chunk of an index is cut into windows of W sentences, one starting at each sentence; BM25
and MiniLM score the windows; a chunk gets the best score of its windows. Four scores per chunk, each
scaled to [0, 1] as rqa.search.fuse_convex does (chunk BM25, chunk cosine, best window BM25, best
window cosine), are weighted and summed; every weighting on a small grid is scored on all the dev
questions (recall@5, MRR), next to the chunk scores alone (the default's two).

    .venv/bin/python -m bench.passages --index DIR [--window 3]

Embedding the windows of the shared corpus (about 8,400) takes minutes; they are cached in
DIR/../passages-W.npy.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path


import numpy as np

from bench.common import DEV, dev_questions
from rqa.config import Settings
from rqa.embed import embed
from rqa.index import build_bm25, load_index
from rqa.metrics import first_hit_rank, retrieval_scores
from rqa.text import sentence_spans, tokenize
from rqa.types import Chunk


def windows(index, width: int) -> tuple[np.ndarray, list[str]]:
    owner, texts = [], []
    for i, c in enumerate(index.chunks):
        sentences = [c.text[a:b] for a, b in sentence_spans(c.text)] or [c.text]
        for j in range(0, max(1, len(sentences) - width + 1)):
            owner.append(i)
            texts.append(" ".join(sentences[j:j + width]))
    return np.array(owner), texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--set", type=Path, default=DEV)
    args = ap.parse_args()
    index, questions = load_index(args.index), dev_questions(args.set)
    owner, texts = windows(index, args.window)
    cache = args.index.parent / f"passages-{args.window}.npy"
    titled = [f"{index.chunks[o].title}. {t}" for o, t in zip(owner, texts)]
    vectors = np.load(cache) if cache.exists() else embed(index.embedder, titled, progress=True)
    np.save(cache, vectors)
    bm25 = build_bm25([Chunk("", "", index.chunks[o].title, index.chunks[o].section, 0, 0, 0, 0, t)
                       for o, t in zip(owner, texts)], Settings())
    n = len(index.chunks)
    features = []
    for q, v in zip(questions, embed(index.embedder, [q["question"] for q in questions])):
        words = tokenize(q["question"])
        chunk_bm25 = index.bm25.get_scores([w for w in words if w in index.bm25.vocab_dict] or ["_"])
        window_bm25 = bm25.get_scores([w for w in words if w in bm25.vocab_dict] or ["_"])
        best_bm25, best_cos = np.zeros(n), np.full(n, -1.0)
        np.maximum.at(best_bm25, owner, window_bm25)
        np.maximum.at(best_cos, owner, vectors @ v)
        chunk_cos = np.asarray(index.embeddings) @ v
        features.append([s / max(s.max(), 1e-9) for s in (chunk_bm25, best_bm25)]
                        + [(s + 1) / max(s.max() + 1, 1e-9) for s in (chunk_cos, best_cos)])

    def scores(w):
        ranks = []
        for q, (cb, wb, cc, wc) in zip(questions, features):
            top = np.argsort(-(w[0] * cb + w[1] * cc + w[2] * wb + w[3] * wc))[:10]
            ranks.append(first_hit_rank([index.chunks[i].text for i in top], q["evidence"]))
        return retrieval_scores(ranks)

    rows = [((1, 0.5, 0, 0), scores((1, 0.5, 0, 0)))]
    grid = [w for w in itertools.product([0, 0.5, 1], [0, 0.25, 0.5], [0, 0.5, 1], [0, 0.25, 0.5]) if any(w)]
    rows += sorted(((w, scores(w)) for w in grid), key=lambda r: (-r[1]["recall@5"], -r[1]["mrr"]))[:8]
    print(f"\n### Best window of {args.window} sentences ({len(texts)} windows, {len(questions)} questions)\n")
    print("| weights: chunk BM25, chunk cosine, window BM25, window cosine | recall@5 | recall@10 | MRR |\n|---|---|---|---|")
    for w, r in rows:
        label = " / ".join(map(str, w)) + (" (chunks alone, as the default)" if w == (1, 0.5, 0, 0) else "")
        print(f"| {label} | {r['recall@5']:.2f} | {r['recall@10']:.2f} | {r['mrr']:.3f} |")


if __name__ == "__main__":
    main()
