"""A learned reranker over cheap features, measured before it is built: can the pipeline's own
teacher questions teach a second stage to put the right chunk of the right paper higher?

Each question's candidates are the app's fused top 30 (rqa.search.retrieve, the question alone).
Each candidate gets ten features that need no model beyond the index's own: its fused, BM25 and
dense scores (scaled by the question's best), the log of its rank, the share of the question's
IDF weight its text holds, its title and section hold, and its best sentence holds, the share of
the question's word pairs it holds, its share of numeric tokens and its length. A logistic
regression and a gradient-boosted tree ensemble (scikit-learn, which sentence-transformers already
installs) learn "is the chunk the question was written from" on the teacher's train and val
questions (data/qa/pairs.jsonl); they are scored on the teacher's test papers and on all the dev
questions (evidence as bench.retrieval counts it), next to the fused order.

    .venv/bin/python -m bench.learned_rank --index DIR [--data data/qa] [--set DEV.jsonl]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from bench.common import DEV, dev_questions
from rqa.collection import load_at
from rqa.config import Settings
from rqa.metrics import evidence_hit, retrieval_scores
from rqa.search import retrieve
from rqa.text import sentence_spans, tokenize

DEPTH = 30


class Features:
    """What the ten features need of the index, computed once."""

    def __init__(self, index, settings: Settings):
        self.index, self.settings = index, settings
        chunks = index.chunks
        self.words = [tokenize(c.text) for c in chunks]
        self.sets = [set(w) for w in self.words]
        self.heads = [set(tokenize(f"{c.title}. {c.section}")) for c in chunks]
        self.sentences = [[set(tokenize(c.text[a:b])) for a, b in sentence_spans(c.text)] or [s]
                          for c, s in zip(chunks, self.sets)]
        self.pairs = [set(zip(w, w[1:])) for w in self.words]
        df = collections.Counter(w for s in self.sets for w in s)
        n = len(chunks)
        self.idf = lambda w: math.log((n + 1) / (df.get(w, 0) + 0.5))

    def candidates(self, question: str) -> tuple[list[int], np.ndarray]:
        """The fused top DEPTH (their index rows) and their features, one row each."""
        hits = retrieve(self.index, question, self.settings, k=DEPTH)
        sparse = dict(self.index.search_bm25(question, self.settings.fusion_depth))
        dense = dict(self.index.search_dense(question, self.settings.fusion_depth))
        top_sparse, top_dense = max(sparse.values(), default=1.0), max(dense.values(), default=1.0)
        q = tokenize(question)
        terms = list(dict.fromkeys(q))
        weights = {t: self.idf(t) for t in terms}
        total = sum(weights.values()) or 1.0
        held = lambda words: sum(w for t, w in weights.items() if t in words) / total
        q_pairs = set(zip(q, q[1:]))
        rows = []
        for rank, h in enumerate(hits):
            i = h.row
            rows.append([h.score / hits[0].score, sparse.get(i, 0.0) / top_sparse,
                         (dense.get(i, -1.0) + 1) / (top_dense + 1), math.log(rank + 1),
                         held(self.sets[i]), held(self.heads[i]), max(held(s) for s in self.sentences[i]),
                         len(q_pairs & self.pairs[i]) / max(len(q_pairs), 1),
                         sum(w.isdigit() for w in self.words[i]) / max(len(self.words[i]), 1),
                         len(self.words[i]) / 150])
        return [h.row for h in hits], np.array(rows).reshape(-1, 10)


def table(features: Features, items: list[tuple[str, set[int]]]):
    """Features, labels and question ids of every candidate of every question."""
    X, y, g = [], [], []
    for n, (question, gold) in enumerate(items):
        rows, F = features.candidates(question)
        X.append(F)
        y += [int(r in gold) for r in rows]
        g += [n] * len(rows)
    return np.vstack(X), np.array(y), np.array(g)


def scores(y: np.ndarray, g: np.ndarray, s: np.ndarray) -> dict:
    ranks = []
    for n in np.unique(g):
        m = g == n
        order = np.argsort(-s[m], kind="stable")[:10]
        ranks.append(next((k + 1 for k, j in enumerate(order) if y[m][j]), None))
    return retrieval_scores(ranks)


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("data/qa"))
    ap.add_argument("--set", type=Path, default=DEV)
    args = ap.parse_args()
    index = load_at(args.index)
    settings = dataclasses.replace(Settings(), reranker="")  # the fused order, whatever RQA_RERANKER says
    features = Features(index, settings)
    row = {c.chunk_id: i for i, c in enumerate(index.chunks)}
    pairs = [json.loads(line) for line in (args.data / "pairs.jsonl").read_text().splitlines() if line.strip()]
    teacher = lambda splits: [(p["question"], {row[p["chunk_id"]]}) for p in pairs
                              if p["split"] in splits and p["chunk_id"] in row]
    dev = [(q["question"], {i for i, c in enumerate(index.chunks) if any(evidence_hit(c.text, e) for e in q["evidence"])})
           for q in dev_questions(args.set)]
    train = table(features, teacher(("train", "val")))
    sets = {"teacher test papers": table(features, teacher(("test",))), "dev": table(features, dev)}
    models = {"logistic regression": LogisticRegression(C=1.0, max_iter=2000),
              "gradient-boosted trees": HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_depth=3)}
    for model in models.values():
        model.fit(train[0], train[1])
    found = [train[1][train[2] == n] for n in np.unique(train[2])]
    print(f"{len(found)} training questions: their chunk in the fused top {DEPTH} for {sum(f.any() for f in found)}, "
          f"in the top 5 for {sum(f[:5].any() for f in found)}\n")
    print("| order | set | recall@1 | recall@5 | recall@10 | MRR |\n|---|---|---|---|---|---|")
    for label, (X, y, g) in sets.items():
        orders = {"fused (the default)": -X[:, 3]}
        orders.update({name: m.predict_proba(X)[:, 1] for name, m in models.items()})
        for name, s in orders.items():
            r = scores(y, g, s)
            print(f"| {name} | {label} | {r['recall@1']:.2f} | {r['recall@5']:.2f} | {r['recall@10']:.2f} | {r['mrr']:.3f} |")


if __name__ == "__main__":
    main()
