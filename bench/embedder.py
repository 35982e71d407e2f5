"""Does fine-tuning the embedder help on papers it never saw? Two folds by paper over the shared
corpus: each fold's embedder trains (build/embedder.py) on the inverse-cloze pairs of the other
half's papers (plus a dataset's question pairs with --data), and is scored on the dev questions
about its held-out half. Every dev question is thus answered by an embedder that never saw its paper.

    .venv/bin/python -m bench.embedder --index .rqa/corpus [--out .rqa/embedder-folds]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path


from bench.common import dev_questions
from build.embedder import EmbedderRecipe, train_embedder, training_triples
from rqa.config import Settings
from rqa.index import Index, load_index
from rqa.metrics import first_hit_rank, retrieval_scores
from rqa.search import retrieve


def fold_of(paper: str) -> int:
    return int(hashlib.sha1(paper.encode()).hexdigest(), 16) % 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, required=True, help="an index of the shared corpus (python -m rqa ingest)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rqa-embedder-folds"))
    ap.add_argument("--ict-per-chunk", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="score the fold embedders already in --out")
    ap.add_argument("--max-chunks", type=int, default=600, help="inverse-cloze pairs from at most this many chunks per fold")
    args = ap.parse_args()
    base = load_index(args.index)
    settings = Settings.load(embedder=base.embedder)
    questions = dev_questions()
    ranks: dict[str, list] = {}
    for fold in (0, 1):
        train_chunks = [c for c in base.chunks if fold_of(c.paper) != fold]
        test_qs = [q for q in questions if fold_of(q["paper"]) == fold]
        recipe = EmbedderRecipe(base=base.embedder, ict_per_chunk=args.ict_per_chunk, epochs=args.epochs,
                                max_chunks=args.max_chunks)
        tuned_name = str(args.out / f"fold{fold}")
        if not (args.reuse and (args.out / f"fold{fold}" / "config.json").exists()):
            t = time.perf_counter()
            triples = training_triples(train_chunks, [], recipe, settings)
            metrics = train_embedder(triples, args.out / f"fold{fold}", recipe)
            print(f"fold {fold}: {len(train_chunks)} train chunks, {len(triples)} triples, loss {metrics['train_loss']}, "
                  f"{time.perf_counter() - t:.0f} s; {len(test_qs)} dev questions held out", file=sys.stderr)
        tuned = Index.from_chunks(base.chunks, tuned_name)
        ts = dataclasses.replace(settings, embedder=tuned_name)
        rows = [("dense, base", base, settings, "dense"), ("hybrid, base", base, settings, "hybrid"),
                ("dense, tuned", tuned, ts, "dense"), ("hybrid, tuned", tuned, ts, "hybrid")]
        rows += [(f"hybrid, tuned, dense weight {w}", tuned, dataclasses.replace(ts, dense_weight=w), "hybrid")
                 for w in (0.25, 1.0)]
        rows += [("hybrid, tuned, RRF (dense weight 0.3)", tuned, dataclasses.replace(ts, fusion="rrf", dense_weight=0.3),
                  "hybrid")]
        rows += [(f"hybrid, base index + rerank top 20 by the tuned embedder (weight {w})", base,
                  dataclasses.replace(settings, reranker=tuned_name, rerank_depth=20, rerank_weight=w), "hybrid")
                 for w in (1.0, 3.0)]
        for label, index, s, mode in rows:
            for q in test_qs:
                hits = retrieve(index, q["question"], s, k=10, mode=mode)
                ranks.setdefault(label, []).append(first_hit_rank([h.chunk.text for h in hits], q["evidence"]))
    print(f"\n### Embedder fine-tuning, 2 folds by paper ({len(questions)} dev questions, each on unseen papers)\n")
    print("| retriever | recall@1 | recall@5 | recall@10 | MRR |\n|---|---|---|---|---|")
    for name, r in ranks.items():
        s = retrieval_scores(r)
        print(f"| {name} | {s['recall@1']:.2f} | {s['recall@5']:.2f} | {s['recall@10']:.2f} | {s['mrr']:.3f} |")


if __name__ == "__main__":
    main()
