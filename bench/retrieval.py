"""Retrieval benchmark over ../shared/corpus with ../shared/eval/dev.jsonl.

Prints Markdown tables:
  - quality: one row per retriever and setting (recall@1/5/10, MRR, ms per query), every row
    searched through rqa.search.retrieve, the path the app uses;
  - query latency p50/p95 at the corpus size and replicated to --target-chunks (hybrid, flat/HNSW);
  - ingestion rate (when no --index is given);
  - with --scale N: the dense index alone at N vectors for flat, HNSW and IVF: build time, size on
    disk, RSS of a fresh process that loads it (memory-mapped where FAISS allows), query p50/p95
    and recall@5 against flat.

    .venv/bin/python -m bench.retrieval [--index DIR] [--extra-index LABEL=DIR ...] [--scale 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import numpy as np

from bench.common import DEV, PAPERS, dev_questions, percentile
from rqa.config import Settings
from rqa.collection import ingest_paths
from rqa.embed import embed
from rqa.index import Index, build_bm25, build_faiss, index_text, load_index
from rqa.metrics import first_hit_rank, retrieval_scores
from rqa.search import overlap, retrieve
from rqa.types import Chunk


def score(index: Index, questions: list[dict], settings: Settings, mode: str,
          expansion: Expansions | None = None) -> dict:
    ranks, times = [], []
    retrieve(index, questions[0]["question"], settings, k=10, mode=mode)  # warm-up: model loads
    for q in questions:
        t = time.perf_counter()
        hits = retrieve(index, q["question"], settings, k=10, mode=mode,
                        expansion=expansion.texts[q["id"]] if expansion else "")
        times.append((time.perf_counter() - t) * 1000)
        ranks.append(first_hit_rank([h.chunk.text for h in hits], q["evidence"]))
    return {**retrieval_scores(ranks), "ms": percentile(times, 50),
            "expansion_s": percentile(expansion.seconds, 50) if expansion else None}


def score_pairs(index: Index, pairs: list[dict], settings: Settings) -> dict:
    """The pipeline's own questions (build's pairs.jsonl: question, chunk_id): a hit is a chunk of the
    same paper overlapping the question's chunk by more than half. Pairs whose chunk the index does
    not hold (its text changed with the index format) are skipped."""
    chunks = {c.chunk_id: c for c in index.chunks}
    ranks = []
    for p in pairs:
        own = chunks.get(p["chunk_id"])
        if own is None:
            continue
        hits = retrieve(index, p["question"], settings, k=10)
        ranks.append(next((r for r, h in enumerate(hits, start=1) if same_paper(h.chunk, own) and
                           overlap(h.chunk, own) > 0.5 * (own.char_end - own.char_start)), None))
    return {**retrieval_scores(ranks), "n": len(ranks)}


def same_paper(a: Chunk, b: Chunk) -> bool:
    """Whether two chunks are of one paper: its content hash where both have one, else its name."""
    return a.doc == b.doc if a.doc and b.doc else a.paper == b.paper


@dataclasses.dataclass
class Expansions:
    """The passages one expansion model wrote for the questions (rqa.expand), and how long each took."""
    label: str
    texts: dict[str, str]
    seconds: list[float]


def expansions(questions: list[dict], settings: Settings, tokens: int) -> Expansions:
    from rqa.expand import expand
    from rqa.llm import ModelPool

    settings = dataclasses.replace(settings, expand_tokens=tokens)
    pool = ModelPool(settings)
    pool.expander()  # loaded before the clock starts, as in the app
    texts, seconds = {}, []
    for q in questions:
        t = time.perf_counter()
        texts[q["id"]], notice = expand(q["question"], pool, settings)
        seconds.append(time.perf_counter() - t)
        if notice:
            raise SystemExit(notice)
    return Expansions(f"{settings.expand_with or settings.model}, {tokens} tokens", texts, seconds)


def with_bm25(index: Index, text=index_text, **how) -> Index:
    """The same index with BM25 rebuilt another way: other text, or other settings (bm25_k1=, bm25_b=)."""
    return dataclasses.replace(index, bm25=build_bm25(index.chunks, dataclasses.replace(Settings(), **how), text))


def quality_rows(index: Index, extra: dict[str, Index], rerankers: list[str], questions: list[dict],
                 settings: Settings, expanded: list[Expansions]):
    s = settings
    rows = [("BM25 (title + section + text)", index, s, "bm25"),
            ("BM25 (text only)", with_bm25(index, text=lambda c: c.text), s, "bm25"),
            (f"dense ({index.embedder})", index, s, "dense"),
            (f"hybrid, question alone ({s.fusion}, dense weight {s.dense_weight}, depth {s.fusion_depth}, "
             f"within-paper weight {s.within_paper_weight})", index, s, "hybrid")]
    for w in [w for w in (0.0, 0.1, 0.2, 0.5, 1.0) if w != s.within_paper_weight]:
        rows.append((f"hybrid, within-paper weight {w}", index, dataclasses.replace(s, within_paper_weight=w), "hybrid"))
    for e in expanded:
        rows += [(f"BM25 + query expansion ({e.label})", index, s, "bm25", e),
                 (f"hybrid + query expansion ({e.label})", index, s, "hybrid", e)]
    if expanded:  # the question's weight against the guess (default 2)
        for w in (1, 3):
            rows.append((f"hybrid + query expansion ({expanded[0].label}), question weight {w}", index,
                         dataclasses.replace(s, expand_question_weight=w), "hybrid", expanded[0]))
    for w in [w for w in (0.25, 0.5, 1.0) if not (s.fusion == "convex" and w == s.dense_weight)]:
        rows.append((f"hybrid, convex, dense weight {w}", index, dataclasses.replace(s, fusion="convex", dense_weight=w), "hybrid"))
    rows.append(("hybrid, convex, fusion depth 50", index, dataclasses.replace(s, fusion="convex", fusion_depth=50), "hybrid"))
    for k1, b in ((0.82, 0.68), (0.9, 0.9), (1.2, 0.75), (2.0, 0.75)):  # 0.82/0.68: Anserini's MS MARCO passage values
        rows.append((f"hybrid, BM25 k1 {k1} b {b} (default 1.5/0.75)", with_bm25(index, bm25_k1=k1, bm25_b=b), s, "hybrid"))
    for w, rrf_k in ((0.3, 60), (0.1, 60), (0.3, 10)):
        r = dataclasses.replace(s, fusion="rrf", dense_weight=w, rrf_k=rrf_k)
        rows.append((f"hybrid, RRF, dense weight {w}, rrf_k {rrf_k}", index, r, "hybrid"))
    for label, other in extra.items():
        o = dataclasses.replace(s, embedder=other.embedder)
        rows += [(f"{label}: dense", other, o, "dense"), (f"{label}: hybrid", other, o, "hybrid")]
    for name in rerankers:
        for depth in (20, 30):
            for w in (1.0, 100.0):
                r = dataclasses.replace(s, reranker=name, rerank_depth=depth, rerank_weight=w)
                how = "alone" if w >= 100 else f"weight {w}"
                rows.append((f"hybrid + rerank top {depth} by {Path(name).name} ({how})", index, r, "hybrid"))
                if expanded:
                    rows.append((f"hybrid + query expansion ({expanded[0].label}) + rerank top {depth} by "
                                 f"{Path(name).name} ({how})", index, r, "hybrid", expanded[0]))
    for label, index_, settings_, mode, *expansion in rows:
        yield label, score(index_, questions, settings_, mode, *expansion)


def latency(index: Index, questions: list[str], settings: Settings, repeats: int = 3) -> tuple[float, float]:
    retrieve(index, questions[0], settings, k=10)  # warm-up: model load, caches
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
    return Index.from_chunks(chunks, index.embedder, embeddings=vectors, settings=Settings(ann=ann))


# --- scale: the dense index alone at N vectors ------------------------------------------------

def synthetic_vectors(base: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """The corpus's vectors replicated to n, each copy jittered and re-normalised, so that no two
    vectors tie (exact copies would make recall against flat meaningless)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        rows = np.arange(start, min(n, start + 100_000)) % len(base)
        v = base[rows] + rng.normal(0, 0.03, (len(rows), base.shape[1])).astype(np.float32)
        out[start:start + len(rows)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


SERVE = """
import json, sys, time
import numpy as np, faiss
path, queries, ann = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
def rss_mb():  # resident now (ru_maxrss would carry the parent's peak across fork and exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
before = rss_mb()
flags = faiss.IO_FLAG_MMAP if ann != "hnsw" else 0
try:
    index = faiss.read_index(path, flags)
except RuntimeError:
    flags, index = 0, faiss.read_index(path)
if ann == "hnsw":
    index.hnsw.efSearch = int(sys.argv[4])
elif ann == "ivf":
    index.nprobe = int(sys.argv[4])
faiss.omp_set_num_threads(1)
times, ids = [], []
for q in queries:
    t = time.perf_counter()
    _, i = index.search(q[None, :], 5)
    times.append((time.perf_counter() - t) * 1000)
    ids.append(i[0].tolist())
rss = rss_mb()
print(json.dumps({"times": times, "ids": ids, "rss_mb": rss, "index_rss_mb": rss - before, "mmap": bool(flags)}))
"""


def scale(base: np.ndarray, n: int, queries: np.ndarray, folder: Path, chunks: list | None = None,
          evidence: list[list[str]] | None = None) -> None:
    """evidence: for the first len(evidence) queries (dev questions), their evidence passages; a
    vector's chunk is chunks[id % len(chunks)], since the synthetic vectors replicate the corpus."""
    import faiss

    vectors = synthetic_vectors(base, n)
    qfile = folder / "queries.npy"
    np.save(qfile, queries)
    print(f"\n### Dense index at {n:,} vectors (dim {base.shape[1]}; {len(queries)} queries, k=5, one thread)\n")
    print("| index | build s | size on disk MB | serving RSS MB (index part) | mmap | p50 ms | p95 ms | recall@5 vs flat "
          "| dev evidence in top 5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    truth = None
    for ann, knob in (("flat", 0), ("hnsw", 64), ("hnsw", 128), ("hnsw", 256), ("hnsw", 512),
                      ("ivf", 16), ("ivf", 64), ("ivf", 256)):
        path, build_s = folder / f"{ann}.faiss", float("nan")
        if not path.exists():
            t = time.perf_counter()
            faiss.write_index(build_faiss(vectors, Settings(ann=ann)), str(path))
            build_s = time.perf_counter() - t
        out = json.loads(subprocess.run([sys.executable, "-c", SERVE, str(path), str(qfile), ann, str(knob)],
                                        capture_output=True, text=True, check=True).stdout)
        ids = out["ids"]
        if truth is None:
            truth = ids
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, truth)])
        found = [first_hit_rank([chunks[i % len(chunks)].text for i in row], ev) is not None
                 for row, ev in zip(ids, evidence or [])]
        found_s = f"{np.mean(found):.2f}" if found else "n/a"
        label = ann + (f" (efSearch {knob})" if ann == "hnsw" else f" (nprobe {knob})" if ann == "ivf" else "")
        print(f"| {label} | {build_s:.0f} | {path.stat().st_size / 2**20:.0f} | {out['rss_mb']:.0f} ({out['index_rss_mb']:.0f}) | {out['mmap']} | "
              f"{percentile(out['times'], 50):.2f} | {percentile(out['times'], 95):.2f} | {recall:.3f} | {found_s} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, help="reuse a built index of the shared corpus (skips ingestion timing)")
    ap.add_argument("--extra-index", action="append", default=[],
                    help="LABEL=DIR: another index of the corpus (other chunking or embedder) to compare")
    ap.add_argument("--reranker", action="append", default=[], help="a reranker (rqa.rerank) to compare")
    ap.add_argument("--target-chunks", type=int, default=50_000)
    ap.add_argument("--scale", type=int, help="also benchmark the dense index alone at this many vectors")
    ap.add_argument("--scale-dir", type=Path, help="keep the scale benchmark's index files here")
    ap.add_argument("--scale-only", action="store_true", help="with --index: only the --scale benchmark")
    ap.add_argument("--expand-tokens", default="0,32",
                    help="comma-separated lengths of query expansion to compare (rqa.expand); 0: none, the app's default")
    ap.add_argument("--expand-with", help="the model writing them (default: the offline default model)")
    ap.add_argument("--set", type=Path, default=DEV, help="questions with evidence, in dev.jsonl's form")
    ap.add_argument("--quality-only", action="store_true", help="only the quality table")
    ap.add_argument("--pairs", type=Path, help="also the pipeline's own questions (build's pairs.jsonl, e.g. "
                    "data/qa/pairs.jsonl), by split, with and without the within-paper weights")
    args = ap.parse_args()
    settings = Settings.load(expand_with=args.expand_with)
    notes = []
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
            notes.append(f"ingestion: {report.files} PDFs, {report.pages} pages, {report.chunks_added} chunks "
                         f"in {seconds:.1f} s: {report.pages / seconds:.1f} pages/s, "
                         f"{report.chunks_added / seconds:.1f} chunks/s; raw encode {len(texts) / encode_s:.1f} chunks/s")
        settings = dataclasses.replace(settings, embedder=index.embedder)
        extra = {label: load_index(path) for label, path in (e.split("=", 1) for e in args.extra_index)}
        questions = dev_questions(args.set)
        qtexts = [q["question"] for q in questions]
        if args.scale_only:
            return scale_from(index, questions, settings, args.scale, args.scale_dir or Path(tmp) / "scale")
        expanded = [expansions(questions, settings, int(n)) for n in args.expand_tokens.split(",") if int(n)]
        print(f"\n### Retrieval quality ({len(questions)} questions of {args.set.name}, {len(index.chunks)} chunks)\n")
        print("| retriever | recall@1 | recall@5 | recall@10 | MRR | search p50 ms | expansion p50 s |\n"
              "|---|---|---|---|---|---|---|")
        for label, s in quality_rows(index, extra, args.reranker, questions, settings, expanded):
            expansion_s = "–" if s["expansion_s"] is None else f"{s['expansion_s']:.2f}"
            print(f"| {label} | {s['recall@1']:.2f} | {s['recall@5']:.2f} | {s['recall@10']:.2f} | {s['mrr']:.3f} "
                  f"| {s['ms']:.1f} | {expansion_s} |", flush=True)
        if args.pairs:
            pairs = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
            print(f"\n### The pipeline's own questions ({args.pairs.name}; their validation kept a pair only when "
                  "the retrieval of its day had its chunk in the top 5)\n")
            print("| split | within-paper weight | questions | recall@1 | recall@5 | recall@10 | MRR |\n|---|---|---|---|---|---|---|")
            for split in sorted({p.get("split", "") for p in pairs}):
                for w in sorted({0.0, settings.within_paper_weight}):
                    s = score_pairs(index, [p for p in pairs if p.get("split", "") == split],
                                    dataclasses.replace(settings, within_paper_weight=w))
                    print(f"| {split} | {w} | {s['n']} | {s['recall@1']:.3f} | {s['recall@5']:.3f} | "
                          f"{s['recall@10']:.3f} | {s['mrr']:.3f} |", flush=True)
        if args.quality_only:
            return
        print("\n### Hybrid query latency (embedding + BM25 + FAISS + fusion, k=10)\n")
        print("| chunks | FAISS | p50 ms | p95 ms |\n|---|---|---|---|")
        p50, p95 = latency(index, qtexts, settings)
        print(f"| {len(index.chunks)} | {index.manifest.get('ann', 'flat')} | {p50:.1f} | {p95:.1f} |")
        for ann in ("flat", "hnsw"):
            big = replicate(index, args.target_chunks, ann)
            p50, p95 = latency(big, qtexts, settings)
            print(f"| {len(big.chunks)} | {ann} | {p50:.1f} | {p95:.1f} |", flush=True)
            del big
        for note in notes:
            print(f"\n{note}")
        if args.scale:
            scale_from(index, questions, settings, args.scale, args.scale_dir or Path(tmp) / "scale")


def scale_from(index: Index, questions: list[dict], settings: Settings, n: int, folder: Path) -> None:
    """Queries: the dev questions and 180 jittered chunk vectors."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    sample = index.embeddings[rng.choice(len(index.chunks), 180, replace=False)]
    jitter = sample + rng.normal(0, 0.05, sample.shape).astype(np.float32)
    qvecs = embed(settings.embedder, [q["question"] for q in questions])
    queries = np.vstack([qvecs, jitter / np.linalg.norm(jitter, axis=1, keepdims=True)])
    scale(np.asarray(index.embeddings), n, queries.astype(np.float32), folder, index.chunks,
          [q["evidence"] for q in questions])


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
