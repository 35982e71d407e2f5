"""The papers of a live index: add uploaded files, list them, remove them, suggest questions.

The app serves one Index object; these functions write a new index next to it (atomic swap, as
every index write) and hand back the freshly loaded one, so questions go on being answered from
the old index until the new one is complete. One writer at a time: callers hold the app's lock.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from rqa.config import Settings
from rqa.corpus import IngestReport, ingest_paths
from rqa.index import Index, index_exists, load_index, remove_documents
from rqa.ingest import SUFFIXES, sha256_file

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


def writable_index(index: Index, settings: Settings) -> Path:
    """Where changes go: index_dir; an index served from elsewhere (a Hub download) is copied there first."""
    target = Path(settings.index_dir)
    if Path(index.path).resolve() != target.resolve() and not index_exists(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(index.path, target)
    return target


def store_dir(settings: Settings) -> Path:
    index_dir = Path(settings.index_dir)
    return index_dir.parent / f"{index_dir.name}-uploads"


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


def add_files(files: list[Path], index: Index, settings: Settings,
              progress: bool = True) -> tuple[IngestReport, Index]:
    """Copy uploads into the papers store (named by content, so the same paper lands in one
    place and re-uploads are recognised) and ingest them into the writable index."""
    target = writable_index(index, settings)
    stored = []
    for f in files:
        dest = store_dir(settings) / sha256_file(f)[:16] / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copyfile(f, dest)
        stored.append(dest)
    report = ingest_paths(stored, dataclasses.replace(settings, index_dir=target), progress=progress)
    return report, load_index(target, settings.embedder)


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
