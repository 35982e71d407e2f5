"""The papers rqa serves: one owner of adding, removing, listing and opening them.

Everything that writes an index goes through this module: `ingest_paths` (the CLI, the app's
papers at start, the pipeline), the app's uploads and removals (`Collection`). rqa.index stores and
searches; this module decides what goes in. Each write builds a new index next to the old one and
swaps it in by rename (rqa.index.write_index), under a lock file that serialises writers across
processes (two apps, or the app and `rqa ingest`); a writer re-reads the index once it holds the
lock, so nobody's papers are lost. The app keeps serving the old index until the new one is
complete: `Collection.index` is replaced by one assignment, and each question reads it once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from rqa.chunking import chunk_document
from rqa.config import PRIMER_DIR, Settings
from rqa.embed import DEFAULT_EMBEDDER, dimension, embed, fingerprint, is_local_model
from rqa.errors import IndexError_, StoreError
from rqa.index import (Index, check_chunk_settings, chunk_settings, check_index_folder, index_exists, index_text,
                       load_index, read_manifest, swap_in, write_index)
from rqa.ingest import find_files, load_documents
from rqa import milvus
from rqa.milvus import MilvusIndex, is_milvus_uri
from rqa.text import sha256_file
from rqa.types import Chunk
from rqa.ingest import SUFFIXES
from rqa.uploads import store_dir, store_upload, swept

log = logging.getLogger("rqa.collection")


# --- writing an index ----------------------------------------------------------------------------

@dataclass
class Incoming:
    """One file to add: where it was read from, its content hash, its chunks and metadata."""

    path: str
    sha256: str
    chunks: list[Chunk]
    paper: str
    title: str
    pages: int


@dataclass
class ExtendResult:
    added_paths: list[str] = field(default_factory=list)  # files whose chunks were embedded and added
    same_content: list[str] = field(default_factory=list)  # files whose content was stored already
    chunks_added: int = 0
    removed: int = 0  # documents no path points at any more (an updated file's old content)


def without_documents(chunks: list[Chunk], vectors: np.ndarray, shas: set[str]) -> tuple[list[Chunk], np.ndarray]:
    keep = [i for i, c in enumerate(chunks) if c.doc not in shas]
    return [chunks[i] for i in keep], vectors[keep]


def location(settings: Settings) -> str | Path:
    """Where the index lives: `index_uri` (Milvus) when set, else the index_dir folder."""
    return settings.index_uri or Path(settings.index_dir)


def on_milvus(where: str | Path) -> bool:
    """A location is Milvus only as the index_uri setting names it (a str), never a folder path
    that happens to end in .db."""
    return isinstance(where, str) and is_milvus_uri(where)


def exists_at(where: str | Path) -> bool:
    return milvus.exists(where) if on_milvus(where) else index_exists(Path(where))


def load_at(where: str | Path, embedder: str | None = None) -> Index | MilvusIndex:
    return MilvusIndex.open(where) if on_milvus(where) else load_index(Path(where), embedder)


@contextlib.contextmanager
def write_lock(path: str | Path):
    """One writer per index across processes (two apps, or the app and `rqa ingest`): a lock file
    beside the folder or Milvus Lite file (a folder is swapped by rename); for a Milvus server, one
    in the temporary folder, which serialises the writers of this machine. Writers re-read the
    index once they hold it, so nobody's papers are lost."""
    import hashlib
    import tempfile

    import portalocker

    if milvus.is_milvus_server(str(path)):
        lock = Path(tempfile.gettempdir()) / f"rqa-{hashlib.sha1(str(path).encode()).hexdigest()[:16]}.lock"
    else:
        path = Path(path).resolve()  # "." has no name to put a lock file beside
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as f:
        portalocker.lock(f, portalocker.LOCK_EX)
        try:
            yield
        finally:
            portalocker.unlock(f)


def build_or_extend(path: Path, incoming: list[Incoming], settings: Settings, progress: bool = True) -> ExtendResult:
    """Add files to the index at path (created if missing). A path whose content is unchanged is
    skipped; content already stored under another path gains that path; a path whose content
    changed moves to the new content, and old content that no path points at any more is removed.
    The index's own embedder and dense index kind are kept; a new index takes `settings`'."""
    with write_lock(path):
        return _build_or_extend(path, incoming, settings, progress)


def _build_or_extend(path: str | Path, incoming: list[Incoming], settings: Settings, progress: bool) -> ExtendResult:
    embedder = settings.embedder
    milvus_index = on_milvus(path)
    if exists_at(path):
        old = load_at(path, embedder)
        check_chunk_settings(old.manifest, chunk_settings(settings), path)
        settings = dataclasses.replace(settings, ann=old.manifest.get("ann", settings.ann))
        manifest = old.manifest
        chunks, vectors = ([], None) if milvus_index else (old.chunks, old.embeddings)
        embedder = old.embedder
        bundle = Path(embedder) if manifest["embedder"].get("bundled") else None
    else:
        embedder = embedder or DEFAULT_EMBEDDER
        bundle = Path(embedder) if is_local_model(embedder) else None
        manifest = {"embedder": {"name": embedder, "dim": dimension(embedder), "fingerprint": fingerprint(embedder),
                                 "bundled": bundle is not None}, "documents": {}, "settings": chunk_settings(settings)}
        chunks, vectors = [], np.zeros((0, dimension(embedder)), dtype=np.float32)
    if milvus_index and bundle:
        raise StoreError("a Milvus index cannot carry a local embedder folder; use a named embedder")
    docs: dict[str, dict] = manifest["documents"]
    result = ExtendResult()
    new_chunks: list[Chunk] = []
    touched: set[str] = set()  # documents whose entry changed
    for item in incoming:
        owner = next((sha for sha, d in docs.items() if item.path in d["paths"]), None)
        if owner == item.sha256:
            continue
        touched |= {owner, item.sha256} - {None}
        if owner:
            docs[owner]["paths"].remove(item.path)
        if item.sha256 in docs:
            docs[item.sha256]["paths"].append(item.path)
            result.same_content.append(item.path)
            continue
        docs[item.sha256] = {"paper": item.paper, "title": item.title, "pages": item.pages,
                             "chunks": len(item.chunks), "paths": [item.path],
                             "arxiv_id": next((c.arxiv_id for c in item.chunks if c.arxiv_id), None)}
        new_chunks.extend(item.chunks)
        result.added_paths.append(item.path)
    orphans = {sha for sha, d in docs.items() if not d["paths"]}
    for sha in orphans:
        del docs[sha]
    result.removed = len(orphans)
    if milvus_index:  # rows change in place: no rebuild
        new_vectors = embed(embedder, [index_text(c) for c in new_chunks], progress=progress) if new_chunks \
            else np.zeros((0, manifest["embedder"]["dim"]), dtype=np.float32)
        milvus.write(path, manifest, new_chunks, new_vectors, orphans, touched - orphans, settings)
        result.chunks_added = len(new_chunks)
        return result
    if not new_chunks and not orphans:
        if result.same_content:  # only paths were added: no chunk changes, just the manifest
            write_index(path, manifest, chunks, vectors, settings, bundle)
        return result
    chunks, vectors = without_documents(chunks, vectors, orphans)
    new_vectors = embed(embedder, [index_text(c) for c in new_chunks], progress=progress) if new_chunks \
        else np.zeros((0, vectors.shape[1]), dtype=np.float32)
    write_index(path, manifest, chunks + new_chunks, np.vstack([vectors, new_vectors]), settings, bundle)
    result.chunks_added = len(new_chunks)
    return result


def remove_documents(path: str | Path, shas: set[str], settings: Settings) -> int:
    """Remove papers (by content hash) from the index at path, atomically; returns how many."""
    with write_lock(path):
        return _remove_documents(path, shas, settings)


def _remove_documents(path: str | Path, shas: set[str], settings: Settings) -> int:
    index = load_at(path)
    docs = index.manifest["documents"]
    gone = {sha for sha in shas if sha in docs}
    if not gone:
        return 0
    for sha in gone:
        del docs[sha]
    if isinstance(index, MilvusIndex):
        milvus.write(path, index.manifest, [], np.zeros((0, 1), np.float32), gone, set(), settings)
        return len(gone)
    write_index(path, index.manifest, *without_documents(index.chunks, index.embeddings, gone),
                dataclasses.replace(settings, ann=index.manifest.get("ann", "flat")),
                Path(index.embedder) if index.manifest["embedder"].get("bundled") else None)
    return len(gone)


# --- from files on disk --------------------------------------------------------------------------

SAME_CONTENT = "same content as an indexed paper"


@dataclass
class FileResult:
    path: str
    status: str  # "added" | "already indexed" | "same content as an indexed paper" | "skipped"
    title: str = ""
    pages: int = 0
    chunks: int = 0
    reason: str = ""


@dataclass
class IngestReport:
    files: int = 0
    papers_added: int = 0
    chunks_added: int = 0
    pages: int = 0
    papers_removed: int = 0  # old content of files that changed
    per_file: list[FileResult] = field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [(f.path, f.reason) for f in self.per_file if f.status == "skipped"]

    @property
    def same_content(self) -> list[str]:
        """Files whose content was indexed already, under another name."""
        return [f.path for f in self.per_file if f.status == SAME_CONTENT]


def ingest_paths(paths: list[str | Path], settings: Settings, progress: bool = True,
                 max_chunks: int | None = None) -> IngestReport:
    """Read, chunk and index files. A file with more than `settings.max_chars_per_file` characters
    of text is skipped, and so is each file that would take this call past `max_chunks` chunks."""
    report = IngestReport()

    def skip(path: Path, reason: str) -> None:
        report.per_file.append(FileResult(str(path), "skipped", reason=reason))
        print(f"skipped {path}: {reason}", file=sys.stderr)

    if not on_milvus(location(settings)):  # before minutes of reading and embedding
        check_index_folder(Path(location(settings)))
    files = find_files(paths)
    report.files = len(files)
    incoming = []
    total = 0
    for doc in load_documents(files, skip, progress=progress):
        chars = sum(len(b.text) for s in doc.sections for b in s.blocks)
        if chars > settings.max_chars_per_file:
            skip(Path(doc.path), f"{chars:,} characters of text is over the {settings.max_chars_per_file:,} a file may hold")
            continue
        chunks = chunk_document(doc, settings.chunk_size, settings.overlap, settings.method_chunk_factor)
        if not chunks:
            skip(Path(doc.path), "no text left after cleaning")
            continue
        if max_chunks is not None and total + len(chunks) > max_chunks:
            skip(Path(doc.path), f"{len(chunks):,} chunks would take this upload past {max_chunks:,}")
            continue
        total += len(chunks)
        report.pages += doc.pages
        incoming.append(Incoming(str(Path(doc.path).resolve()), doc.sha256, chunks, doc.paper, doc.title, doc.pages))
    if incoming:
        result = build_or_extend(location(settings), incoming, settings, progress=progress)
        report.papers_added, report.chunks_added = len(result.added_paths), result.chunks_added
        report.papers_removed = result.removed
        for item in incoming:
            status = "added" if item.path in result.added_paths else \
                SAME_CONTENT if item.path in result.same_content else "already indexed"
            report.per_file.append(FileResult(item.path, status, item.title, item.pages, len(item.chunks)))
    return report


def download_index(repo: str) -> Path:
    """A published index (a Hub dataset repo) in the local Hugging Face cache."""
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(repo_id=repo, repo_type="dataset"))
    if not (path / "manifest.json").exists():
        raise IndexError_(f"Hub dataset {repo} holds no rqa index (no manifest.json)")
    return path


def copied_from(path: Path) -> dict:
    """What the index at `path` is a local copy of ({"repo", "manifest_sha256"}), or {}."""
    return read_manifest(path).get("copied_from", {}) if index_exists(path) else {}


def mark(target: Path, **fields) -> None:
    """Add fields to target's manifest (the caller holds target's write lock); replaced whole."""
    manifest = {**read_manifest(target), **fields}
    tmp = Path(target) / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(Path(target) / "manifest.json")


def mark_copy(target: Path, published: Path, repo: str) -> dict:
    """Name in target's manifest the publication it copies."""
    origin = {"repo": repo, "manifest_sha256": sha256_file(published / "manifest.json")}
    mark(target, copied_from=origin)
    return origin


def copy_published(published: Path, target: Path, settings: Settings, uploads: list[Path] = ()) -> None:
    """The published index copied to `target` (the folder changes go to), its manifest naming the
    publication it copies, with `uploads` ingested into it. All of it is done beside `target` and
    swapped in whole once it loads: a stop or a failure on the way (Ctrl-C, the embedder, a
    publication of an older format) leaves `target` as it was."""
    target = Path(target).resolve()
    with write_lock(target):
        tmp = target.with_name(f"{target.name}.tmp-copy")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(published, tmp)  # the Hub cache's links followed: the copy holds the files
            mark_copy(tmp, published, settings.hub_index_repo)
            if uploads:
                log_ingest(ingest_paths(uploads, dataclasses.replace(settings, index_dir=tmp), progress=False))
            load_index(tmp, settings.embedder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:  # the lock file the uploads' ingestion left beside the copy
            with contextlib.suppress(OSError):
                tmp.with_name(f".{tmp.name}.lock").unlink()
        swap_in(tmp, target)


def published_or_copy(settings: Settings) -> Path:
    """The Hub index to serve: the download, or the local copy in index_dir that holds this
    server's uploads. A copy of the same publication is served as it is; a copy of an earlier one
    is made again from the new one, and the uploads it held (their files are in the papers store)
    are ingested again, so that neither the republished papers nor the uploads are lost."""
    published = download_index(settings.hub_index_repo)
    local = Path(settings.index_dir)
    if not index_exists(local):
        return published
    manifest, published_docs = read_manifest(local), read_manifest(published)["documents"]
    origin = manifest.get("copied_from", {})
    if not origin and not manifest.get("fallback") and published_docs and set(published_docs) <= set(manifest["documents"]):
        with write_lock(local):  # copied by an rqa that named no origin: this one, with uploads
            origin = mark_copy(local, published, settings.hub_index_repo)
    if origin.get("repo") != settings.hub_index_repo:  # no copy of this index here
        return published
    if origin.get("manifest_sha256") == sha256_file(published / "manifest.json"):
        return local
    uploads = stored_uploads(manifest, settings)
    log.info("%s was republished: copying it again, with %d uploaded papers", settings.hub_index_repo, len(uploads))
    copy_published(published, local, settings, uploads)
    return local


def open_index(settings: Settings) -> Index:
    """The configured index: a Hub dataset repo when one is named (or index_dir's copy of it with
    this server's uploads), else index_dir; the default location is built from the primer on first use."""
    if settings.hub_index_repo:
        index = load_index(published_or_copy(settings), settings.embedder)
    elif settings.index_uri:
        index = MilvusIndex.open(settings.index_uri)
    else:
        path = Path(settings.index_dir)
        if not index_exists(path) and path == Settings().index_dir:
            print(f"building the default index from the primer at {path} ...", file=sys.stderr)
            ingest_paths([PRIMER_DIR], settings, progress=False)
        index = load_index(path, settings.embedder)
    check_chunk_settings(index.manifest, chunk_settings(settings), index.path)
    return index


# --- the live collection of the app --------------------------------------------------------------

def check_uploads(files: list[Path], index: Index, settings: Settings) -> list[tuple[Path, str]]:
    """(file, reason) for each upload refused before ingestion; raises StoreError for the batch."""
    if len(files) > settings.max_files_per_upload:
        raise StoreError(f"{len(files)} files: upload at most {settings.max_files_per_upload} at a time")
    check_room(files, index, settings)
    refused = []
    for f in files:
        if f.suffix.lower() not in SUFFIXES:
            refused.append((f, f"unsupported file type {f.suffix or '(none)'}; use {', '.join(sorted(SUFFIXES))}"))
        elif not f.is_file():
            raise StoreError(swept(f.name))
        elif f.stat().st_size > settings.max_upload_mb * 2**20:
            refused.append((f, f"{f.stat().st_size / 2**20:.1f} MB is over the {settings.max_upload_mb} MB limit"))
    return refused


def check_room(files: list[Path], index: Index, settings: Settings) -> None:
    """Refuse, for the batch, files the index has no room for (each counted as a new paper)."""
    if len(index.manifest["documents"]) + len(files) > settings.max_papers:
        raise StoreError(f"the index holds {len(index.manifest['documents'])} papers; at most {settings.max_papers} are served")


def _drop_unindexed(paths: list[Path], index: Index | MilvusIndex) -> None:
    """Remove stored copies that no paper of the index names (its own uploads are never touched)."""
    kept = {p for d in index.manifest["documents"].values() for p in d["paths"]}
    for path in paths:
        if str(path.resolve()) not in kept:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when no other name of that content is there


@dataclass
class Paper:
    sha256: str
    paper: str
    title: str
    pages: int
    chunks: int
    arxiv_id: str | None
    paths: list[str]

    @property
    def arxiv_url(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv_id}" if self.arxiv_id else None


def papers(index: Index | MilvusIndex) -> list[Paper]:
    # a Milvus index holds no chunk list: its documents name their arXiv id (the chunks say it too)
    arxiv = {sha: d["arxiv_id"] for sha, d in index.manifest["documents"].items() if d.get("arxiv_id")}
    if isinstance(index, Index):
        arxiv.update({c.doc: c.arxiv_id for c in index.chunks if c.arxiv_id})
    return [Paper(sha, d["paper"], d["title"], d["pages"], d["chunks"], arxiv.get(sha), list(d["paths"]))
            for sha, d in index.manifest["documents"].items()]


def example_questions(index: Index, n: int = 4) -> list[str]:
    """A few questions suited to the loaded papers: the newest papers first."""
    out = []
    for p in reversed(papers(index)):
        title = p.title if len(p.title) <= 70 else p.title[:67].rsplit(" ", 1)[0] + "..."
        out.append(f"What problem does “{title}” address, and what is its main idea?")
        if len(out) >= n:
            break
    return out


def writable_index(index: Index, settings: Settings) -> str | Path:
    """Where changes go: index_uri (Milvus, written in place), else index_dir; an index served from
    a Hub download is copied there first (and served from there from then on: published_or_copy)."""
    if settings.index_uri:
        return settings.index_uri
    target = Path(settings.index_dir)
    if Path(index.path).resolve() == target.resolve():
        if index.manifest["documents"] and not index_exists(target):
            # a new index would hold only the new papers, and the app would switch to it
            raise StoreError("the index folder has gone (deleted while the app runs?); nothing was added. The papers "
                             "served now stay served until a restart; restore the folder or rebuild it with `rqa ingest`")
        return target
    if not index_exists(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_published(Path(index.path), target, settings)
    elif copied_from(target).get("repo") != settings.hub_index_repo:
        if (uploads := fallback_uploads(target, settings)) is None:
            # changing it would serve it instead of the published papers; replacing it would lose it
            raise StoreError("the index folder holds another index than the published one served; nothing was "
                             "added. Set RQA_INDEX_DIR to a new folder for the served index's local copy")
        copy_published(Path(index.path), target, settings, uploads)
    return target


def fallback_uploads(path: Path, settings: Settings) -> list[Path] | None:
    """The uploads of the primer index a start built when it could not reach the published one
    (its manifest says "fallback"), which the copy of the published index takes over; None for any
    other index, which is the operator's own."""
    manifest = read_manifest(path)
    return stored_uploads(manifest, settings) if manifest.get("fallback") else None


def stored_uploads(manifest: dict, settings: Settings) -> list[Path]:
    """The papers store's files an index holds: what this server's users uploaded to it."""
    store = store_dir(settings).resolve()
    return sorted({q for d in manifest["documents"].values() for q in map(Path, d["paths"])
                   if store in q.resolve().parents and q.exists()})


def add_files(files: list[Path], index: Index, settings: Settings,
              progress: bool = True) -> tuple[IngestReport, Index]:
    """Copy uploads into the papers store (named by content, so the same paper lands in one
    place and re-uploads are recognised) and ingest them into the writable index. Copies of
    files that were not indexed (empty, corrupt, refused) are not kept."""
    stored: list[Path] = []
    try:
        target = writable_index(index, settings)
        for f in files:
            stored.append(store_upload(f, settings))
        report = ingest_paths(stored, settings if settings.index_uri else dataclasses.replace(settings, index_dir=target),
                              progress=progress, max_chunks=settings.max_chunks_per_upload)
        updated = load_at(target, settings.embedder)
        _drop_unindexed([Path(f.path) for f in report.per_file if f.status == "skipped"], updated)
        return report, updated
    except BaseException as e:  # copies no paper of the index names go: the store stays the index's
        if stored:
            with contextlib.suppress(Exception):  # (an index it cannot read: the copies stay, as before)
                _drop_unindexed(stored, load_at(target))
        if isinstance(e, OSError):  # a read-only or full disk: one line, without the server's paths
            raise StoreError(f"the server cannot write its papers store or index ({e.strerror or type(e).__name__}); "
                             "nothing was added") from None
        raise


def remove(sha256: str, index: Index, settings: Settings) -> Index:
    target = writable_index(index, settings)
    docs = load_at(target).manifest["documents"]
    paths = docs.get(sha256, {}).get("paths", [])
    if not remove_documents(target, {sha256}, settings):
        raise StoreError("that paper is not in the index (removed already?)")
    store = store_dir(settings).resolve()
    for p in map(Path, paths):  # uploaded copies go too; the user's own files are never touched
        if store in p.resolve().parents:
            shutil.rmtree(p.parent, ignore_errors=True)
    return load_at(target, settings.embedder)


@dataclass
class Collection:
    """The app's papers: the index it serves and the one writer that changes it. Readers take
    `index` once per question; a write builds the new index beside it and then replaces the
    attribute, so that questions are answered from the old papers until the new ones are complete."""

    settings: Settings
    index: Index
    notices: list[str] = field(default_factory=list)  # what the page should say about the index
    lock: threading.Lock = field(default_factory=threading.Lock)  # one writer in this process

    @classmethod
    def open(cls, settings: Settings) -> "Collection":
        """The configured index, with the `papers` folder ingested first; a Hub index that cannot be
        had is replaced by the local one, with a notice."""
        notices = []
        if settings.papers and not settings.hub_index_repo:
            log_ingest(ingest_paths([settings.papers], settings))  # creates index_dir if need be
        try:
            index = open_index(settings)  # a corrupt index fails first, before minutes of model loading
        except Exception as e:  # a Hub index repo that is missing, private, unreachable or of an older format
            if not settings.hub_index_repo:
                raise
            version = re.search(r"has format (\S+),", str(e)) if isinstance(e, IndexError_) else None
            reason = f"it has index format {version.group(1)}; republish it with `build publish`" if version \
                else type(e).__name__  # never the server's paths
            notices.append(f"The index repo {settings.hub_index_repo} could not be loaded ({reason}); "
                           "serving the local index instead.")
            local = Path(settings.index_dir)
            built = not index_exists(local)
            index = open_index(dataclasses.replace(settings, hub_index_repo=""))
            if built and index_exists(local):  # the primer, built for now: a copy of the published index replaces it
                with write_lock(local):
                    mark(local, fallback="primer")
                index = load_index(local, settings.embedder)
        if settings.papers and settings.hub_index_repo:
            writable_index(index, settings)  # a copy of the served index in index_dir
            log_ingest(ingest_paths([settings.papers], settings))
            index = load_index(settings.index_dir, settings.embedder)
        return cls(settings, index, notices)

    def papers(self) -> list[Paper]:
        return papers(self.index)

    def add_uploads(self, files: list[Path], on_wait: Callable[[], None] | None = None,
                    progress: bool = True) -> IngestReport:
        """Store and ingest uploaded files; `on_wait` is called first when another upload is
        being indexed and this one has to wait for it."""
        if not self.lock.acquire(blocking=False):
            if on_wait:
                on_wait()
            self.lock.acquire()
        try:
            # the wait may have outlasted the upload folder's sweep (upload_cache_s)
            if gone := [f for f in files if not f.is_file()]:
                raise StoreError(swept(gone[0].name))
            check_room(files, self.index, self.settings)  # again: an upload before this one may have filled it
            report, self.index = add_files(files, self.index, self.settings, progress)
            return report
        finally:
            self.lock.release()

    def remove(self, sha256: str) -> Paper:
        """Remove one paper (its uploaded copy too); returns what was removed."""
        with self.lock:
            paper = next((p for p in self.papers() if p.sha256 == sha256), None)
            self.index = remove(sha256, self.index, self.settings)
            return paper


def log_ingest(report: IngestReport) -> None:
    log.info("papers at start: %d added (%d chunks), %d skipped", report.papers_added, report.chunks_added,
             len(report.skipped))
