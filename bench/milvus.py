"""The index on Milvus Lite against the local index: dev-100 retrieval quality (hybrid on the
question alone, so that only the index differs) and search latency through rqa.search.retrieve,
at the corpus's size and at N chunks (the corpus's chunks repeated, their vectors jittered as in
bench.retrieval's scale rows).

    .venv/bin/python -m bench.milvus --index .rqa/corpus [--scale 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import dev_questions, percentile
from bench.retrieval import score, synthetic_vectors
from rqa import milvus
from rqa.config import Settings
from rqa.index import load_index
from rqa.milvus import MilvusIndex
from rqa.search import retrieve


def copy_to_milvus(index, uri: str, n: int | None = None) -> float:
    """The local index's chunks and vectors written to Milvus (as `rqa ingest --index-uri` writes
    them, without embedding again); n > len: the chunks repeated, vectors jittered. Seconds taken."""
    chunks, vectors = index.chunks, np.asarray(index.embeddings)
    if n and n > len(chunks):
        chunks = [c for _ in range(-(-n // len(chunks))) for c in chunks][:n]
        vectors = np.vstack([vectors, synthetic_vectors(vectors, n - len(vectors))])
    manifest = {**index.manifest, "documents": dict(index.manifest["documents"])}
    t = time.perf_counter()
    milvus.write(uri, manifest, chunks, vectors, set(), set(manifest["documents"]), Settings())
    return time.perf_counter() - t


def latency(index, questions: list[str], settings: Settings) -> float:
    times = []
    for q in questions * 2:
        t = time.perf_counter()
        retrieve(index, q, settings, k=10)
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=Path, default=Path(".rqa/corpus"))
    parser.add_argument("--scale", type=int, default=0, help="also time search at this many chunks")
    args = parser.parse_args()
    settings = Settings.load(index_dir=args.index, expand_tokens=0)
    local = load_index(args.index)
    questions = dev_questions()
    with tempfile.TemporaryDirectory() as tmp:
        uri = str(Path(tmp) / "corpus.db")
        write_s = copy_to_milvus(local, uri)
        remote = MilvusIndex.open(uri)
        print(f"\n### Milvus Lite against the local index (dev-100, hybrid on the question alone, "
              f"{len(local.chunks)} chunks)\n")
        print("| index | recall@1 | recall@5 | recall@10 | MRR | search p50 ms | write s |\n|---|---|---|---|---|---|---|")
        for name, index, took in (("local (bm25s + FAISS flat)", local, None), ("Milvus Lite", remote, write_s)):
            s = score(index, questions, settings, "hybrid")
            print(f"| {name} | {s['recall@1']:.2f} | {s['recall@5']:.2f} | {s['recall@10']:.2f} | {s['mrr']:.3f} | "
                  f"{s['ms']:.1f} | {'' if took is None else f'{took:.1f}'} |", flush=True)
        if args.scale:
            uri = str(Path(tmp) / "scale.db")
            took = copy_to_milvus(local, uri, args.scale)
            big = MilvusIndex.open(uri)
            texts = [q["question"] for q in questions[:50]]
            print(f"\n| chunks | write s | hybrid search p50 ms (50 dev questions, twice) |\n|---|---|---|")
            print(f"| {len(local.chunks):,} | {write_s:.1f} | {latency(remote, texts, settings):.1f} |")
            print(f"| {args.scale:,} | {took:.1f} | {latency(big, texts, settings):.1f} |")


if __name__ == "__main__":
    main()
