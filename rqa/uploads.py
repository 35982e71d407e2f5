"""The papers store: uploaded files checked, then kept under their content hash.

A request may name any path, so a file is accepted only from Gradio's upload folder; copies are
written under a temporary name and renamed, so that a copy cut short never stands under its final
name. rqa.collection ingests what is stored here.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from rqa.config import Settings
from rqa.errors import StoreError
from rqa.text import sha256_file


def store_dir(settings: Settings) -> Path:
    index_dir = Path(settings.index_dir)
    return index_dir.parent / f"{index_dir.name}-uploads"


def upload_folder() -> Path:
    """Where Gradio's upload route writes (GRADIO_TEMP_DIR, else the system temp folder's gradio/)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def uploaded_files(names: list[str], upload_root: Path) -> list[Path]:
    """The files an upload request names, each checked to be a file that arrived through the
    upload route: inside `upload_root` (Gradio's upload folder) once resolved, not a link. A
    request is free to name any path. The pinned Gradio refuses one it did not receive before this
    runs, but that check is the framework's, not rqa's, and has varied with versions and mounts:
    without this, any file the server can read could be ingested and shown."""
    root = Path(upload_root).resolve()
    out = []
    for name in names:
        path = Path(name)
        real = path.resolve()
        if not path.is_symlink() and root in real.parents and not real.exists():
            raise StoreError(swept(path.name))
        if path.is_symlink() or root not in real.parents or not real.is_file():
            raise StoreError(f"{path.name} was not uploaded through this page; nothing was added")
        if real not in out:  # named twice in one request: added and reported once
            out.append(real)
    return out


def swept(name: str) -> str:
    """Why an upload is refused that was swept from Gradio's upload folder (the upload_cache_s
    setting) before it was added."""
    return (f"{name} is no longer on the server (an upload not added soon after it arrives is deleted); "
            "choose it again; nothing was added")


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
