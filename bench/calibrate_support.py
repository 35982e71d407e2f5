"""Calibrate the sentence-support threshold on ../shared/eval/dev.jsonl.

Positives: each dev reference answer's sentences against the chunks retrieved for its own
question (the answers are written from those papers, so they should count as supported).
Negatives: the same sentences against the chunks retrieved for a question about a different
paper. The threshold maximising balanced accuracy is printed with the resulting rates.

    .venv/bin/python -m bench.calibrate_support --index DIR   (an index of ../shared/corpus)
"""

from __future__ import annotations

import argparse
from pathlib import Path


import numpy as np

from bench.common import dev_questions
from rqa.config import Settings
from rqa.search import retrieve
from rqa.index import load_index
from rqa.support import SUPPORT_EMBEDDER, answer_sentences, support_scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, required=True)
    args = ap.parse_args()
    settings = Settings.load()
    index = load_index(args.index)
    qs = dev_questions()
    pos, neg = [], []
    for i, q in enumerate(qs):
        other = next(o for o in qs[i + 1:] + qs[:i] if o["paper"] != q["paper"])
        sentences = answer_sentences(q["answer"]) or [q["answer"]]
        for question, scores in ((q["question"], pos), (other["question"], neg)):
            hits = retrieve(index, question, settings)  # as the app does, with the stored vectors
            texts = [h.chunk.text for h in hits]
            vectors = index.embeddings[[h.row for h in hits]] if index.embedder == SUPPORT_EMBEDDER else None
            scores += [float(v.max()) for v in support_scores(sentences, texts, SUPPORT_EMBEDDER, vectors) if len(v)]
    pos, neg = np.array(pos), np.array(neg)
    best = max(np.arange(0.2, 0.8, 0.01), key=lambda t: (pos >= t).mean() + (neg < t).mean())
    print(f"{len(pos)} supported / {len(neg)} unsupported sentences")
    print("| threshold | supported kept | unsupported flagged | balanced accuracy |\n|---|---|---|---|")
    for t in sorted({round(float(best), 2), settings.support_threshold}):
        print(f"| {t:.2f} | {(pos >= t).mean():.2f} | {(neg < t).mean():.2f} | "
              f"{((pos >= t).mean() + (neg < t).mean()) / 2:.2f} |")
    print(f"\nmean score: supported {pos.mean():.3f}, unsupported {neg.mean():.3f}; best threshold {best:.2f}")


if __name__ == "__main__":
    main()
