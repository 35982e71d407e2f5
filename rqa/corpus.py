"""From paths on disk to a searchable index, and the offline default corpus (the primer)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from rqa.chunking import chunk_document
from rqa.config import PRIMER_DIR, Settings
from rqa.index import (CHUNK_SETTINGS, Incoming, Index, IndexError_, build_or_extend, check_chunk_settings,
                       index_exists, load_index)
from rqa.ingest import find_files, load_documents


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
        result = build_or_extend(settings.index_dir, incoming, settings.embedder, settings.ann,
                                 {k: getattr(settings, k) for k in CHUNK_SETTINGS}, progress=progress)
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


def open_index(settings: Settings) -> Index:
    """The configured index: a Hub dataset repo when one is named, else index_dir; the default
    location is built from the primer on first use."""
    if settings.hub_index_repo:
        index = load_index(download_index(settings.hub_index_repo), settings.embedder)
    else:
        path = Path(settings.index_dir)
        if not index_exists(path) and path == Settings().index_dir:
            print(f"building the default index from the primer at {path} ...", file=sys.stderr)
            ingest_paths([PRIMER_DIR], settings, progress=False)
        index = load_index(path, settings.embedder)
    check_chunk_settings(index.manifest, {k: getattr(settings, k) for k in CHUNK_SETTINGS}, index.path)
    return index
