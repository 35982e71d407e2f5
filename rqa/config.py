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
    # chunking (docs/DESIGN.md, "Chunking")
    chunk_size: int = 1000
    overlap: int = 200
    method_chunk_factor: float = 1.5  # methods sections get larger chunks
    # retrieval
    # "" = the embedder the index was built with (all-MiniLM-L6-v2 for a new one); a name or
    # folder asks for that one, and an index built with another is refused
    embedder: str = ""
    ann: str = "flat"  # flat | hnsw | ivf
    k: int = 5
    fusion_depth: int = 100  # candidates taken from each retriever before fusion
    # convex: BM25 and cosine scores scaled to [0, 1] from their theoretical floors (0 and -1) and
    # added, dense times dense_weight; rrf: reciprocal-rank fusion (ranks only, rrf_k smooths)
    fusion: str = "convex"
    rrf_k: int = 60
    dense_weight: float = 0.5  # weight of the dense retriever against BM25's 1 (docs/BENCHMARKS.md)
    reranker: str = ""  # second stage over the fused top rerank_depth ("" = none; see rqa.rerank)
    rerank_depth: int = 20
    rerank_weight: float = 1.0  # weight of the reranker's rank against the fused rank
    # query expansion (rqa.expand): a model writes the passage it expects the papers to contain and
    # BM25 searches with the question and that passage. 0 tokens: the question alone.
    expand_tokens: int = 32
    expand_with: str = ""  # offline model name or GGUF path; "" = the offline model `model`
    # BM25 counts the question's words this many times against the passage's once, so that a wrong
    # guess cannot outweigh the question (query2doc repeats the query for the same reason)
    expand_question_weight: int = 2
    # generation
    model: str = "qwen2.5-coder-1.5b-instruct"  # offline model (rqa.models) when no path or Hub repo is set
    model_path: str = ""  # explicit GGUF path (q4 or only model)
    model_path_q8: str = ""  # optional q8_0 GGUF used for reasoning-heavy questions
    # the fine-tune applied to the offline base: "" = the LoRA adapter rqa ships for `model` (rqa.models
    # ADAPTERS; none for a model without one, an explicit model_path or a Hub repo), "none" = the stock
    # base, or the path of a GGUF LoRA adapter (build export writes adapter-f16.gguf)
    adapter: str = ""
    hub_repo: str = ""  # Hugging Face model repo holding GGUF files
    hub_q4_file: str = "model-q4_0.gguf"
    hub_q8_file: str = "model-q8_0.gguf"
    hub_index_repo: str = ""  # Hugging Face dataset repo holding a built index (used instead of index_dir)
    n_ctx: int = 2048  # the prompt is about 900 tokens with 5 excerpts of 600 characters
    n_threads: int = 0  # 0: all cores
    max_new_tokens: int = 256
    temperature: float = 0.0  # greedy: the answer restates facts, sampling only adds errors
    source_chars: int = 600  # each source is trimmed to this many characters around the question's words
    # how the sentence each excerpt centres on is found (rqa.prompt): "excerpts" counts the question's
    # words; "sentences" adds the embedding cosine with the question
    grounding: str = "excerpts"
    answer_style: str = "direct"  # "direct" | "quote": copy the answering sentence first, then answer
    max_question_chars: int = 2000
    # checks
    support_threshold: float = 0.45
    sympy_timeout_s: float = 2.0
    # ingestion bounds: a file past them is skipped with the reason (the longest shared paper has
    # about 150,000 characters; a one-line 5 MB text once made 6,676 chunks and held the index for minutes)
    max_chars_per_file: int = 2_000_000
    max_chunks_per_upload: int = 3_000  # the app's papers panel: all files of one upload together
    # app
    rate_limit_per_minute: int = 5
    # Addresses of reverse proxies whose X-Forwarded-For is believed ("*": any peer, as behind the
    # Spaces proxy). Otherwise the client is the connection's own address, which a client cannot forge.
    trusted_proxies: str = ""
    annotators: str = ""  # "name:token,name2:token2"; or a path to such a file
    papers: str = ""  # a folder ingested into the index when the app starts (papers already there are skipped)
    api_keys: str = ""  # comma-separated keys for /v1/*; empty: the API is open like the chat
    # API questions answered or waiting at once; one more gets 503 with Retry-After instead of an
    # unbounded wait (answers are generated one at a time on a CPU)
    api_max_in_flight: int = 8
    db_path: Path = Path(".rqa/ratings.sqlite")

    def __post_init__(self) -> None:
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise SettingsError(f"setting {name}={value} is out of range: it must be between {low} and {high} "
                                    f"(flag --{name.replace('_', '-')}, environment RQA_{name.upper()})")
        if self.overlap >= self.chunk_size:
            raise SettingsError(f"setting overlap={self.overlap} must be smaller than chunk_size={self.chunk_size}")
        if self.max_new_tokens > self.n_ctx - 256:
            raise SettingsError(f"setting max_new_tokens={self.max_new_tokens} leaves no room for the question "
                                f"and sources in n_ctx={self.n_ctx}")
        if self.fusion not in ("convex", "rrf"):
            raise SettingsError(f"setting fusion={self.fusion!r} must be convex or rrf")
        if self.grounding not in ("excerpts", "sentences"):
            raise SettingsError(f"setting grounding={self.grounding!r} must be excerpts or sentences")
        if self.answer_style not in ("direct", "quote"):
            raise SettingsError(f"setting answer_style={self.answer_style!r} must be direct or quote")
        if self.ann not in ("flat", "hnsw", "ivf"):
            raise SettingsError(f"setting ann={self.ann!r} must be flat, hnsw or ivf")

    @classmethod
    def load(cls, **overrides) -> "Settings":
        """Defaults, then RQA_* environment variables, then explicit overrides (CLI flags)."""
        values = {}
        for f in dataclasses.fields(cls):
            env = os.environ.get(f"RQA_{f.name.upper()}")
            if env is not None:
                values[f.name] = _coerce(f, env, f"environment RQA_{f.name.upper()}")
        values.update({k: _coerce(_field(cls, k), v, f"setting {k}") for k, v in overrides.items() if v is not None})
        return cls(**values)


class SettingsError(ValueError):
    """A setting with a value rqa cannot work with; the message names it and its range."""


# Where each numeric setting may go: outside these, chunking never ends, searches return nothing,
# or the context overflows.
BOUNDS = {
    "chunk_size": (100, 20_000), "overlap": (0, 10_000), "method_chunk_factor": (1.0, 4.0),
    "k": (1, 50), "fusion_depth": (1, 10_000), "rrf_k": (1, 10_000), "dense_weight": (0.0, 10.0),
    "rerank_depth": (1, 200), "rerank_weight": (0.0, 100.0), "expand_tokens": (0, 512),
    "expand_question_weight": (1, 20),
    "n_ctx": (512, 131_072), "source_chars": (100, 20_000), "n_threads": (0, 256), "max_new_tokens": (1, 8192),
    "temperature": (0.0, 2.0),
    "max_question_chars": (10, 100_000), "support_threshold": (0.0, 1.0), "sympy_timeout_s": (0.1, 60.0),
    "rate_limit_per_minute": (0, 100_000), "api_max_in_flight": (1, 10_000),
    "max_chars_per_file": (1_000, 1_000_000_000), "max_chunks_per_upload": (1, 10_000_000),
}


def _field(cls, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"unknown setting {name!r}")


def _coerce(f: dataclasses.Field, value, origin: str):
    kind = f.type if isinstance(f.type, type) else {"Path": Path, "int": int, "float": float,
                                                    "str": str, "bool": bool}[str(f.type)]
    if kind is bool and isinstance(value, str):
        return value.lower() in {"1", "true", "yes", "on"}
    try:
        return value if isinstance(value, kind) else kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{origin}={value!r} is not a valid {kind.__name__}") from None
