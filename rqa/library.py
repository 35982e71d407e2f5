"""The papers of a live index: add uploaded files, list them, remove them, suggest questions.

The app serves one Index object; these functions write a new index next to it (atomic swap, as
every index write) and hand back the freshly loaded one, so questions go on being answered from
the old index until the new one is complete. One writer at a time: callers hold the app's lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from rqa.config import Settings
from rqa.corpus import IngestReport, ingest_paths
from rqa.index import Index, index_exists, load_index, remove_documents
from rqa.ingest import SUFFIXES
from rqa.text import sha256_file

MAX_FILES_PER_UPLOAD = 10
MAX_FILE_BYTES = 20 * 2**20
MAX_PAPERS = 500


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


def papers(index: Index) -> list[Paper]:
    arxiv = {c.doc: c.arxiv_id for c in index.chunks if c.arxiv_id}
    return [Paper(sha, d["paper"], d["title"], d["pages"], d["chunks"], arxiv.get(sha), list(d["paths"]))
            for sha, d in index.manifest["documents"].items()]


class StoreError(ValueError):
    """The papers store or the index cannot be written; the message says why, in one line."""


def writable_index(index: Index, settings: Settings) -> Path:
    """Where changes go: index_dir; an index served from elsewhere (a Hub download) is copied there first."""
    target = Path(settings.index_dir)
    if Path(index.path).resolve() == target.resolve() and index.manifest["documents"] and not index_exists(target):
        # a new index would hold only the new papers, and the app would switch to it
        raise StoreError("the index folder has gone (deleted while the app runs?); nothing was added. The papers "
                         "served now stay served until a restart; restore the folder or rebuild it with `rqa ingest`")
    if Path(index.path).resolve() != target.resolve() and not index_exists(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(index.path, target)
    return target


def store_dir(settings: Settings) -> Path:
    index_dir = Path(settings.index_dir)
    return index_dir.parent / f"{index_dir.name}-uploads"


def uploaded_files(names: list[str], upload_root: Path) -> list[Path]:
    """The files an upload request names, each checked to be a file that arrived through the
    upload route: inside `upload_root` (Gradio's upload folder) once resolved, not a link. A
    request is free to name any path, and the UI runs mounted on FastAPI, where Gradio's own
    check does not run: without this, any file the server can read could be ingested and shown."""
    root = Path(upload_root).resolve()
    out = []
    for name in names:
        path = Path(name)
        real = path.resolve()
        if path.is_symlink() or root not in real.parents or not real.is_file():
            raise ValueError(f"{path.name} was not uploaded through this page; nothing was added")
        out.append(real)
    return out


def check_uploads(files: list[Path], index: Index) -> list[tuple[Path, str]]:
    """(file, reason) for each upload refused before ingestion; raises ValueError for the batch."""
    if len(files) > MAX_FILES_PER_UPLOAD:
        raise ValueError(f"{len(files)} files: upload at most {MAX_FILES_PER_UPLOAD} at a time")
    if len(index.manifest["documents"]) + len(files) > MAX_PAPERS:
        raise ValueError(f"the index holds {len(index.manifest['documents'])} papers; at most {MAX_PAPERS} are served")
    refused = []
    for f in files:
        if f.suffix.lower() not in SUFFIXES:
            refused.append((f, f"unsupported file type {f.suffix or '(none)'}; use {', '.join(sorted(SUFFIXES))}"))
        elif f.stat().st_size > MAX_FILE_BYTES:
            refused.append((f, f"{f.stat().st_size / 2**20:.1f} MB is over the {MAX_FILE_BYTES // 2**20} MB limit"))
    return refused


def store_upload(f: Path, settings: Settings) -> Path:
    """The upload's copy in the papers store, named by its content hash. Copied under a temporary
    name and renamed, so a copy cut short (kill -9, a full disk) never stands under the final
    name; a stored copy is trusted only when its content still has that hash."""
    sha = sha256_file(f)
    dest = store_dir(settings) / sha[:16] / f.name
    if dest.is_file() and sha256_file(dest) == sha:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        shutil.copyfile(f, part)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def add_files(files: list[Path], index: Index, settings: Settings,
              progress: bool = True) -> tuple[IngestReport, Index]:
    """Copy uploads into the papers store (named by content, so the same paper lands in one
    place and re-uploads are recognised) and ingest them into the writable index. Copies of
    files that were not indexed (empty, corrupt, refused) are not kept."""
    try:
        target = writable_index(index, settings)
        stored = [store_upload(f, settings) for f in files]
        report = ingest_paths(stored, dataclasses.replace(settings, index_dir=target), progress=progress,
                              max_chunks=settings.max_chunks_per_upload)
        updated = load_index(target, settings.embedder)
        kept = {p for d in updated.manifest["documents"].values() for p in d["paths"]}
        for f in report.per_file:
            if f.status == "skipped" and str(Path(f.path).resolve()) not in kept:
                Path(f.path).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    Path(f.path).parent.rmdir()  # only when no other name of that content is there
        return report, updated
    except OSError as e:  # a read-only or full disk: one line, without the server's paths
        raise StoreError(f"the server cannot write its papers store or index ({e.strerror or type(e).__name__}); "
                         "nothing was added") from None


def remove(sha256: str, index: Index, settings: Settings) -> Index:
    target = writable_index(index, settings)
    docs = load_index(target).manifest["documents"]
    paths = docs.get(sha256, {}).get("paths", [])
    if not remove_documents(target, {sha256}):
        raise ValueError("that paper is not in the index (removed already?)")
    store = store_dir(settings).resolve()
    for p in map(Path, paths):  # uploaded copies go too; the user's own files are never touched
        if store in p.resolve().parents:
            shutil.rmtree(p.parent, ignore_errors=True)
    return load_index(target, settings.embedder)


def example_questions(index: Index, n: int = 4) -> list[str]:
    """A few questions suited to the loaded papers: the newest papers first."""
    out = []
    for p in reversed(papers(index)):
        title = p.title if len(p.title) <= 70 else p.title[:67].rsplit(" ", 1)[0] + "..."
        out.append(f"What problem does “{title}” address, and what is its main idea?")
        if len(out) >= n:
            break
    return out
