"""All settings in one typed place.

Every field can be overridden by an environment variable `RQA_<FIELD>` (upper case) and most by a
CLI flag of the same name. Precedence: CLI flag > environment > default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRIMER_DIR = PACKAGE_DIR / "primer"


@dataclass
class Settings:
    # where things live
    index_dir: Path = Path(".rqa/index")
    # chunking (seed section 2.1)
    chunk_size: int = 1000
    overlap: int = 200
    method_chunk_factor: float = 1.5  # methods sections get larger chunks
    # retrieval
    embedder: str = "all-MiniLM-L6-v2"
    ann: str = "flat"  # flat | hnsw | ivf
    k: int = 5
    fusion_depth: int = 100  # candidates taken from each retriever before fusion
    rrf_k: int = 60
    dense_weight: float = 0.3  # weight of the dense ranking in RRF (BM25 has 1)
    # generation
    model_path: str = ""  # explicit GGUF path (q4 or only model)
    model_path_q8: str = ""  # optional q8_0 GGUF used for reasoning-heavy questions
    hub_repo: str = ""  # Hugging Face model repo holding GGUF files
    hub_q4_file: str = "model-q4_0.gguf"
    hub_q8_file: str = "model-q8_0.gguf"
    hub_index_repo: str = ""  # Hugging Face dataset repo holding a built index (used instead of index_dir)
    n_ctx: int = 4096
    n_threads: int = 0  # 0: all cores
    max_new_tokens: int = 384
    temperature: float = 0.2
    max_question_chars: int = 2000
    # checks
    support_threshold: float = 0.45
    sympy_timeout_s: float = 2.0
    # app
    rate_limit_per_minute: int = 5
    annotators: str = ""  # "name:token,name2:token2"; or a path to such a file
    db_path: Path = Path(".rqa/ratings.sqlite")

    @classmethod
    def load(cls, **overrides) -> "Settings":
        """Defaults, then RQA_* environment variables, then explicit overrides (CLI flags)."""
        values = {}
        for f in dataclasses.fields(cls):
            env = os.environ.get(f"RQA_{f.name.upper()}")
            if env is not None:
                values[f.name] = _coerce(f, env)
        values.update({k: _coerce(_field(cls, k), v) for k, v in overrides.items() if v is not None})
        return cls(**values)


def _field(cls, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"unknown setting {name!r}")


def _coerce(f: dataclasses.Field, value):
    kind = f.type if isinstance(f.type, type) else {"Path": Path, "int": int, "float": float,
                                                    "str": str, "bool": bool}[str(f.type)]
    if kind is bool and isinstance(value, str):
        return value.lower() in {"1", "true", "yes", "on"}
    return value if isinstance(value, kind) else kind(value)
