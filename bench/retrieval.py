"""Retrieval benchmark over ../shared/corpus with ../shared/eval/dev.jsonl.

Prints Markdown tables: quality (recall@1/5/10, MRR) for BM25, dense and hybrid; query latency
p50/p95 (embedding + both searches + fusion) at the corpus size and replicated to 50k chunks;
ingestion rate next to the raw sentence-transformers encode rate of the same run.

    .venv/bin/python bench/retrieval.py [--target-chunks 50000] [--index DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import PAPERS, dev_questions, percentile  # noqa: E402
from rqa.config import Settings  # noqa: E402
from rqa.corpus import ingest_paths, retrieve  # noqa: E402
from rqa.embed import embed  # noqa: E402
from rqa.index import Index, build_bm25, build_faiss, index_text, load_index  # noqa: E402
from rqa.metrics import first_hit_rank, retrieval_scores  # noqa: E402


def quality(index: Index, questions: list[dict], settings: Settings) -> dict[str, dict]:
    out = {}
    for mode in ("bm25", "dense", "hybrid"):
        ranks = []
        for q in questions:
            hits = retrieve(index, q["question"], settings, k=10, mode=mode)
            ranks.append(first_hit_rank([h.chunk.text for h in hits], q["evidence"]))
        out[mode] = retrieval_scores(ranks)
    return out


def latency(index: Index, questions: list[str], settings: Settings, repeats: int = 3) -> tuple[float, float]:
    index.search(questions[0], k=10)  # warm-up: model load, caches
    times = []
    for _ in range(repeats):
        for q in questions:
            t = time.perf_counter()
            retrieve(index, q, settings, k=10)
            times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50), percentile(times, 95)


def replicate(index: Index, target: int, ann: str) -> Index:
    reps = -(-target // len(index.chunks))
    chunks = (index.chunks * reps)[:target]
    vectors = np.vstack([index.embeddings] * reps)[:target]
    return Index(path=index.path, manifest=index.manifest, chunks=chunks, embeddings=vectors,
                 dense=build_faiss(vectors, ann), bm25=build_bm25(chunks))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-chunks", type=int, default=50_000)
    ap.add_argument("--index", type=Path, help="reuse a built index of the shared corpus (skips ingestion timing)")
    args = ap.parse_args()
    settings = Settings.load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.index:
            index = load_index(args.index)
        else:
            settings.index_dir = Path(tmp) / "index"
            t = time.perf_counter()
            report = ingest_paths([PAPERS], settings, progress=False)
            seconds = time.perf_counter() - t
            index = load_index(settings.index_dir)
            texts = [index_text(c) for c in index.chunks]
            t = time.perf_counter()
            embed(settings.embedder, texts)
            encode_s = time.perf_counter() - t
            rows.append(("ingestion", f"{report.files} PDFs, {report.pages} pages, {report.chunks_added} chunks "
                         f"in {seconds:.1f} s: {report.pages / seconds:.1f} pages/s, "
                         f"{report.chunks_added / seconds:.1f} chunks/s; raw encode {len(texts) / encode_s:.1f} chunks/s"))
        questions = dev_questions()
        print(f"\n### Retrieval quality ({len(questions)} dev questions, {len(index.chunks)} chunks)\n")
        print("| retriever | recall@1 | recall@5 | recall@10 | MRR |\n|---|---|---|---|---|")
        for mode, s in quality(index, questions, settings).items():
            print(f"| {mode} | {s['recall@1']:.2f} | {s['recall@5']:.2f} | {s['recall@10']:.2f} | {s['mrr']:.3f} |")
        qtexts = [q["question"] for q in questions]
        print("\n### Hybrid query latency (embedding + BM25 + FAISS + fusion, k=10)\n")
        print("| chunks | FAISS | p50 ms | p95 ms |\n|---|---|---|---|")
        p50, p95 = latency(index, qtexts, settings)
        print(f"| {len(index.chunks)} | flat | {p50:.1f} | {p95:.1f} |")
        for ann in ("flat", "hnsw"):
            big = replicate(index, args.target_chunks, ann)
            p50, p95 = latency(big, qtexts, settings)
            print(f"| {len(big.chunks)} | {ann} | {p50:.1f} | {p95:.1f} |")
        t = time.perf_counter()
        for q in qtexts * 3:
            embed(settings.embedder, [q])
        print(f"\nquery embedding alone: {(time.perf_counter() - t) * 1000 / (3 * len(qtexts)):.1f} ms mean")
        for name, value in rows:
            print(f"\n{name}: {value}")


if __name__ == "__main__":
    main()
