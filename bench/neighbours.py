"""Neighbour merging, measured before it is built: when the sentence of a hit that best matches the
question is the chunk's first or last, does adding the chunk before or after it find the evidence
more often?

Every dev question is searched as the app searches it (rqa.search.retrieve, hybrid, top 10, the
question alone so that no model is needed); each variant rewrites the text of those same hits, and
recall@k and MRR are scored on the rewritten texts:

  chunks        the hits as retrieved (the default)
  edge merge    a neighbour of the same paper appended where the best sentence sits at the edge
  re-centred    a window of the chunk's own length, centred on the best sentence of the chunk and
                both neighbours (the passage moves to the match, its size stays)
  both always   both neighbours appended to every hit: three times the text, shown to tell what
                bigger passages alone would do to the metric, not a candidate

    .venv/bin/python -m bench.neighbours --index DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import DEV, dev_questions
from rqa.collection import load_at
from rqa.config import Settings
from rqa.metrics import first_hit_rank, retrieval_scores
from rqa.prompt import excerpt, word_scores
from rqa.search import retrieve
from rqa.text import sentence_spans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--set", type=Path, default=DEV)
    args = ap.parse_args()
    index, questions, settings = load_at(args.index), dev_questions(args.set), Settings()
    row_of = {c.chunk_id: i for i, c in enumerate(index.chunks)}

    def neighbour(chunk, step: int) -> str:
        j = row_of[chunk.chunk_id] + step
        ok = 0 <= j < len(index.chunks) and index.chunks[j].paper == chunk.paper
        return index.chunks[j].text if ok else ""

    def best_sentence(text: str, question: str) -> tuple[int, int]:
        spans = sentence_spans(text)
        if not spans:
            return 0, 1
        scores = word_scores(question, [text[a:b] for a, b in spans])
        return max(range(len(spans)), key=lambda i: (scores[i], -i)), len(spans)

    def edge_merge(chunk, question: str) -> str:
        best, n = best_sentence(chunk.text, question)
        before = neighbour(chunk, -1) if best == 0 else ""
        after = neighbour(chunk, 1) if best == n - 1 else ""
        return " ".join(t for t in (before, chunk.text, after) if t)

    variants = {
        "chunks": lambda c, q: c.text,
        "edge merge": edge_merge,
        "re-centred": lambda c, q: excerpt(" ".join(t for t in (neighbour(c, -1), c.text, neighbour(c, 1)) if t),
                                           q, len(c.text)),
        "both always": lambda c, q: " ".join(t for t in (neighbour(c, -1), c.text, neighbour(c, 1)) if t),
    }
    hits = [retrieve(index, q["question"], settings, k=10) for q in questions]
    print(f"dev: {len(questions)} questions, hybrid on the question alone, top 10\n")
    print("| hits' text | recall@1 | recall@5 | recall@10 | MRR | characters a hit |")
    print("|---|---|---|---|---|---|")
    for name, rewrite in variants.items():
        texts = [[rewrite(h.chunk, q["question"]) for h in hs] for q, hs in zip(questions, hits)]
        s = retrieval_scores([first_hit_rank(t, q["evidence"]) for q, t in zip(questions, texts)])
        chars = np.mean([len(x) for t in texts for x in t])
        print(f"| {name} | {s['recall@1']:.2f} | {s['recall@5']:.2f} | {s['recall@10']:.2f} | {s['mrr']:.3f} "
              f"| {chars:,.0f} |")


if __name__ == "__main__":
    main()
