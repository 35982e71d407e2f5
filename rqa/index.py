"""The hybrid index: BM25 (bm25s) + FAISS over normalised sentence embeddings (fused in rqa.search).

On disk an index is a directory:
    manifest.json    format version, embedder (name, dimension, weights fingerprint), chunk settings, documents:
                     {content sha256: {paper, title, pages, chunks, paths}}
    chunks.jsonl     one Chunk per line, in index order
    embeddings.npy   float32 [n, dim], kept so that adding papers embeds only the new ones
    dense.faiss      FAISS index over the embeddings (flat, HNSW or IVF)
    bm25/            bm25s data
    embedder/        a copy of the embedder when it is a local folder (a tuned one): the index
                     carries what it must be queried with, to the Hub and back
A paper is identified by the sha256 of its content, its paths kept as metadata: two files with the
same name never collide, the same content is stored once, and an updated file replaces exactly its
own chunks. Writes go to a sibling temporary directory that replaces the old one by rename, so a
build killed half-way leaves the previous index loadable; leftovers are removed at the next write.
Loading verifies that the files agree with each other and names the one that does not.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rqa.config import Settings
from rqa.text import tokenize
from rqa.embed import dimension, embed, fingerprint
from rqa.types import Chunk
from rqa.errors import IndexError_

FORMAT_VERSION = 22
def index_text(chunk: Chunk) -> str:
    """What both retrievers see: title and section give a chunk the context its text lacks."""
    return f"{chunk.title}. {chunk.section}.\n{chunk.text}"


@dataclass
class Index:
    path: Path
    manifest: dict
    chunks: list[Chunk]
    embeddings: np.ndarray
    dense: object  # faiss.Index
    bm25: object  # bm25s.BM25
    # (doc, k1, b) -> PaperTerms, built when first searched: at most as large as the BM25 above
    _papers: dict = field(default_factory=dict, repr=False)
    _paper_rows: dict | None = field(default=None, repr=False)  # doc -> its chunks' rows

    @property
    def embedder(self) -> str:
        """The embedder queries must use: the index's bundled copy, or the named one."""
        if self.manifest["embedder"].get("bundled"):
            return str(self.path / "embedder")
        return self.manifest["embedder"]["name"]

    # --- search --------------------------------------------------------------------------

    def search_bm25(self, question: str, k: int) -> list[tuple[int, float]]:
        tokens = [t for t in tokenize(question) if t in self.bm25.vocab_dict]
        if not tokens or not self.chunks:
            return []
        scores = self.bm25.get_scores(tokens)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def search_dense(self, question: str, k: int) -> list[tuple[int, float]]:
        if not self.chunks:
            return []
        scores, ids = self.dense.search(embed(self.embedder, [question]), min(k, len(self.chunks)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def paper_terms(self, doc: str, settings: Settings) -> "PaperTerms":
        """BM25 over one paper's chunks (`doc`: a chunk's `doc_key`), built on first use."""
        key = (doc, settings.bm25_k1, settings.bm25_b)
        if key not in self._papers:
            if self._paper_rows is None:
                rows: dict[str, list[int]] = {}
                for i, c in enumerate(self.chunks):
                    rows.setdefault(doc_key(c), []).append(i)
                self._paper_rows = rows
            rows = self._paper_rows.get(doc, [])
            chunks = [self.chunks[i] for i in rows] if len(rows) <= PaperTerms.MAX_CHUNKS else []
            self._papers[key] = PaperTerms.build(chunks, settings)
        return self._papers[key]

    @classmethod
    def from_chunks(cls, chunks: list[Chunk], embedder: str, embeddings: np.ndarray | None = None,
                    settings: Settings | None = None) -> "Index":
        """An in-memory index over chunks (embedded here unless their vectors are given): what the
        pipeline and benchmarks search, built exactly as an index on disk is (with `settings`'
        index parameters, the defaults when none are given)."""
        settings = settings or Settings()
        if embeddings is None:
            embeddings = embed(embedder, [index_text(c) for c in chunks]) if chunks \
                else np.zeros((0, dimension(embedder)), dtype=np.float32)
        manifest = {"format_version": FORMAT_VERSION, "embedder": {"name": embedder, "dim": embeddings.shape[1]},
                    "documents": {}, "settings": chunk_settings(settings), "chunks": len(chunks), "ann": settings.ann}
        return cls(path=Path("."), manifest=manifest, chunks=chunks, embeddings=embeddings,
                   dense=build_faiss(embeddings, settings), bm25=build_bm25(chunks, settings))


# --- build / load ----------------------------------------------------------------------------

# The settings an index is built with; extending it with other values would mix two chunkings.
CHUNK_SETTINGS = ("chunk_size", "overlap", "method_chunk_factor")


def chunk_settings(settings: Settings) -> dict:
    return {k: getattr(settings, k) for k in CHUNK_SETTINGS}


def build_faiss(embeddings: np.ndarray, settings: Settings):
    import faiss

    n, dim = embeddings.shape
    ann = settings.ann
    if ann == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = settings.hnsw_ef_search
    elif ann == "ivf" and n >= 1000:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
        index.nprobe = max(settings.ivf_min_nprobe, nlist // 16)
    else:  # exact search; also IVF on corpora too small to train clusters
        index = faiss.IndexFlatIP(dim)
    if n:
        index.add(embeddings)
    return index


def build_bm25(chunks: list[Chunk], settings: Settings, text=index_text):
    import bm25s

    # Okapi BM25 with Robertson's idf: the scoring rank_bm25's BM25Okapi uses (the test reference)
    bm25 = bm25s.BM25(k1=settings.bm25_k1, b=settings.bm25_b, method="robertson")
    bm25.index([tokenize(text(c)) for c in chunks] or [["_"]], show_progress=False)
    return bm25


def doc_key(chunk: Chunk) -> str:
    """What identifies a chunk's paper: its content hash, the paper name for chunks without one."""
    return chunk.doc or chunk.paper


@dataclass
class PaperTerms:
    """BM25 over one paper's chunks alone. Within a paper the words that name it or its subject
    ("RWKV", "Transformer") are in more than half its chunks and weigh nothing here (Robertson's idf,
    clamped at 0 by bm25s; so every word of a one- or two-chunk paper), while the corpus-wide BM25
    counts them in full: this is what tells a paper's chunks apart (rqa.search.within_paper)."""

    bm25: object  # bm25s.BM25
    rows: dict[str, int]  # chunk_id -> its row here

    # A longer "paper" (a book, or the repeated corpus of the scale benchmarks) is not scored this way:
    # building its BM25 would cost more than the search it serves. The longest paper here has 281.
    MAX_CHUNKS = 2_000

    @classmethod
    def build(cls, chunks: list[Chunk], settings: Settings) -> "PaperTerms":
        return cls(build_bm25(chunks, settings), {c.chunk_id: i for i, c in enumerate(chunks)})

    def scores(self, question: str, chunk_ids: list[str]) -> list[float]:
        tokens = [t for t in tokenize(question) if t in self.bm25.vocab_dict]
        if not tokens:
            return [0.0] * len(chunk_ids)
        scores = self.bm25.get_scores(tokens)
        return [float(scores[self.rows[i]]) if i in self.rows else 0.0 for i in chunk_ids]


def write_index(path: Path, manifest: dict, chunks: list[Chunk], embeddings: np.ndarray, settings: Settings,
                embedder_dir: Path | None = None) -> None:
    """Write every file into a temporary sibling, then swap it in by rename (embedder_dir: a
    local embedder folder to bundle). Only rqa.collection calls this."""
    path = Path(path).resolve()  # "." has no name to put a sibling's beside
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f"{path.name}.tmp-*"):  # from a write that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = path.with_name(f"{path.name}.tmp-{int(time.time() * 1000)}")
    tmp.mkdir()
    try:
        import faiss

        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
        np.save(tmp / "embeddings.npy", embeddings)
        faiss.write_index(build_faiss(embeddings, settings), str(tmp / "dense.faiss"))
        build_bm25(chunks, settings).save(str(tmp / "bm25"), show_progress=False)
        if embedder_dir is not None:
            shutil.copytree(embedder_dir, tmp / "embedder", ignore=shutil.ignore_patterns("checkpoints"))
        manifest = {**manifest, "format_version": FORMAT_VERSION, "chunks": len(chunks), "ann": settings.ann}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, path)


def check_index_folder(path: Path) -> None:
    """An index is written only where one is, or where nothing is: a swap replaces the folder whole,
    and `--index ~/papers` would delete the papers in it."""
    path = Path(path)
    if path.is_dir() and not index_exists(path) and any(path.iterdir()):
        raise IndexError_(f"{path} holds files that are not an rqa index; name a new or empty folder for the index")


def swap_in(tmp: Path, path: Path) -> None:
    """Replace the index at `path` by the complete one at `tmp`: two renames, the old one kept as
    path.old between them (load_index reads that if a crash fell between)."""
    check_index_folder(path)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _located(path: Path) -> Path:
    path = Path(path).resolve()
    if not (path / "manifest.json").exists() and (path.with_name(path.name + ".old") / "manifest.json").exists():
        return path.with_name(path.name + ".old")  # a swap was interrupted between its two renames
    return path


def index_exists(path: Path) -> bool:
    return (_located(Path(path)) / "manifest.json").exists()


def read_manifest(path: Path) -> dict:
    """The manifest alone (load_index verifies the whole index)."""
    return json.loads((_located(Path(path)) / "manifest.json").read_text(encoding="utf-8"))


def load_index(path: Path, embedder: str | None = None) -> Index:
    """Load and verify an index; `embedder`, when given, must be the one it was built with.
    Every inconsistency is one IndexError_ line naming the file and how to rebuild. One function:
    the checks run in the order the files depend on each other, which it shows."""
    import bm25s
    import faiss

    path = _located(Path(path))
    if not (path / "manifest.json").exists():
        raise IndexError_(f"no index at {path}: build one with `python -m rqa ingest PATHS --index {path}`")

    def corrupt(file: str, what: str) -> IndexError_:
        return IndexError_(f"index {path} is corrupt: {file} {what}. Rebuild it: delete {path} and run "
                           f"`python -m rqa ingest PAPERS --index {path}`")

    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise corrupt("manifest.json", f"is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise corrupt("manifest.json", "is not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        # Format 3 keeps sub- and superscripts in the chunk text (d_k, 10^{6}), format 4 the math-font
        # glyphs pdfium gives as control codes (ϵ, ≪, big brackets), format 5 the scripts pdfium puts
        # on lines of their own (β^t_{1}) and a script's own scripts (R^{d_{model}×d_k}), format 6
        # the math-font glyphs pdfium gives as their font code in ASCII (′ ‖ ∑ √ ⊤, wide hats), format
        # 7 fractions and radicals pdfium puts on lines of their own (p(x)/(p(x) + q(x)), √d_k), format
        # 8 the appendices after a reference list ("Appendix H Reanalyze", "A. Datasets"), format 9
        # the hyphen of a compound broken at a line end ("channel-mixing"), format 10 capitalised words
        # broken at a line end joined ("Trans-former"), format 11 a fraction whose numerator pdfium
        # puts on a line of its own ("1", "2": 1/2), format 12 a fraction's scripts that looked like
        # footnote marks (1/(NT^{2})), radicands of more than one term (√(σ^{2}_B + ǫ)) and a big
        # operator's lower limit on a line of its own (∑^n_{i=1}), and chunks that keep a sentence
        # announcing an equation with it, format 13 an inline operator's limits beside it
        # (∑^d_{i=1} ‖g‖, was "∑_d", "i=1 ‖g‖"), format 14 a script's own script on a line of its
        # own and the line after a script of several glyphs (e^{m(x^{(1)})−m(x)}, R^{N×(P^{2}·C)},
        # "R^{d×k}, we"), format 15 a short fraction in running text after a word (update 1/N_d,
        # was "update 1", "N_d"), format 16 a display numerator wider than its denominator
        # ((−tr(H_f (x)))/2, was "−tr(H_f (x))", "2"), format 17 a numerator that opens with a big
        # operator and its limit (RWKV's wkv_t = (∑^{t−1}_{i=1} ...)/(∑^{t−1}_{i=1} ...), was two
        # lines), format 18 a denominator whose line goes on past the bar (QLoRA's
        # X^{Int8}/c^{FP32} = X^{FP32}, Reptile's ∂/∂φ L_{τ,B}, was two lines), format 19 a numerator
        # after a sign, a ceiling or in a script (ZeRO's 2Ψ + 14Ψ/N_d, FlashAttention's ⌈M/(4d)⌉,
        # RWKV's (i/s)^{1−l/L}) and a binomial coefficient (InstructGPT's 1/binom(K,2), was "1", "(K",
        # "2", ")"), format 20 a fraction after "←" and a small fraction's radical pdfium put before
        # its numerator (BatchNorm's Var[x] ← m/(m−1), (−1)/(√(σ^{2}_B+ǫ))), format 21 the scripts of
        # what follows a denominator past its bar (Primer's (s/(1 − 1/b))_{−k}), format 22 a lower limit
        # of up to 24 characters and a numerator opening with a radical over a big operator or with a
        # big operator after a lead (RAG's ∑_{z∈top-k(p(·|x))}, MuZero's pUCT); older text lost them, and only the papers can
        # give them back, so an older index is rebuilt rather than migrated.
        raise IndexError_(f"index {path} has format {manifest.get('format_version')}, this rqa reads "
                          f"{FORMAT_VERSION}: delete it and rebuild it with `python -m rqa ingest PAPERS --index {path}`")
    for key in ("embedder", "documents", "settings", "chunks"):
        if key not in manifest:
            raise corrupt("manifest.json", f"has no {key!r} field")
    if not isinstance(manifest["embedder"], dict) or not {"name", "dim"} <= set(manifest["embedder"]):
        raise corrupt("manifest.json", "has no embedder name and dimension")
    built_with = manifest["embedder"]["name"]
    same = (fingerprint(embedder) == manifest["embedder"]["fingerprint"]) if embedder and "fingerprint" in manifest["embedder"] \
        else embedder == built_with
    if embedder and not same:
        raise IndexError_(f"index {path} was built with embedder {built_with!r} "
                          f"(dim {manifest['embedder']['dim']}), not {embedder!r}: query it with the same "
                          f"embedder or rebuild it with --embedder {embedder}")
    n, dim = manifest["chunks"], manifest["embedder"]["dim"]
    chunks = []
    try:
        with open(path / "chunks.jsonl", encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                chunks.append(Chunk(**json.loads(line)))
    except FileNotFoundError:
        raise corrupt("chunks.jsonl", "is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise corrupt("chunks.jsonl", f"line {line_no} is not a chunk ({e})") from None
    if len(chunks) != n:
        raise corrupt("chunks.jsonl", f"has {len(chunks)} chunks, the manifest says {n}")
    try:
        embeddings = np.load(path / "embeddings.npy", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise corrupt("embeddings.npy", f"cannot be read ({e})") from None
    if embeddings.shape != (n, dim):
        raise corrupt("embeddings.npy", f"has shape {embeddings.shape}, expected ({n}, {dim})")
    try:
        # flat and IVF map from disk, so a process holds only the pages its queries touch (an index
        # is replaced by renaming a new directory in, so a mapped file never changes under us)
        dense = faiss.read_index(str(path / "dense.faiss"), 0 if manifest.get("ann") == "hnsw" else faiss.IO_FLAG_MMAP)
    except RuntimeError as e:
        raise corrupt("dense.faiss", f"cannot be read ({str(e).strip().splitlines()[-1]})") from None
    if dense.ntotal != n or dense.d != dim:
        raise corrupt("dense.faiss", f"holds {dense.ntotal} vectors of dim {dense.d}, expected {n} of {dim}")
    try:
        bm25 = bm25s.BM25.load(str(path / "bm25"), mmap=True, show_progress=False, verbosity=0)
        bm25_docs = int(bm25.scores["num_docs"])
    except Exception as e:
        raise corrupt("bm25/", f"cannot be read ({type(e).__name__}: {e})") from None
    if bm25_docs != max(n, 1):
        raise corrupt("bm25/", f"indexes {bm25_docs} chunks, expected {n}")
    return Index(path=path, manifest=manifest, chunks=chunks, embeddings=np.asarray(embeddings),
                 dense=dense, bm25=bm25)


def check_chunk_settings(manifest: dict, chunk_settings: dict, path: Path) -> None:
    """An index is searched and extended only with the chunk settings it was built with (the
    embedder is checked by load_index): mixing two chunkings would go unnoticed otherwise."""
    built = {k: manifest["settings"].get(k) for k in CHUNK_SETTINGS}
    asked = {k: chunk_settings.get(k) for k in CHUNK_SETTINGS}
    differ = [k for k in CHUNK_SETTINGS if built[k] is not None and asked[k] is not None and built[k] != asked[k]]
    if differ:
        raise IndexError_(f"index {path} was built with " + ", ".join(f"{k}={built[k]}" for k in differ)
                          + "; the settings ask for " + ", ".join(f"{k}={asked[k]}" for k in differ)
                          + ": use the index's settings (" + ", ".join(f"--{k.replace('_', '-')} {built[k]}" for k in differ)
                          + ") or ingest into a new --index")
