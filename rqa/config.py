"""All settings in one typed place, grouped by concern, each with its description and range.

Every field can be set by an environment variable `RQA_<FIELD>` (upper case) and many by a CLI
flag of the same name. Precedence: CLI flag > environment > default. No other rqa module reads an
`RQA_*` variable. The README's settings table is generated from these fields
(`python -m rqa.config`), and a test checks that it is current.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from rqa.errors import SettingsError

PACKAGE_DIR = Path(__file__).resolve().parent
PRIMER_DIR = PACKAGE_DIR / "primer"

GROUPS = {
    "files": "Where things live",
    "chunking": "Chunking (docs/DESIGN.md, \"Chunking\"; an index keeps the values it was built with)",
    "index": "Index building (applied when an index is written)",
    "retrieval": "Retrieval",
    "expansion": "Query expansion (rqa.expand)",
    "model": "The model",
    "serving": "Where generation runs (docs/SCALING.md)",
    "generation": "Generation and the prompt",
    "checks": "Checks of the answer",
    "limits": "Bounds on what users send",
    "app": "The app and its API",
}


def setting(default, group: str, help: str, bounds: tuple | None = None, choices: tuple | None = None):
    """A field of Settings: its default, its concern, what it does, and its range or choices."""
    return dataclasses.field(default=default, metadata={"group": group, "help": help, "bounds": bounds,
                                                        "choices": choices})


@dataclass
class Settings:
    # --- where things live
    index_dir: Path = setting(Path(".rqa/index"), "files", "index directory (built from the primer on first use "
                              "when it is the default)")
    index_uri: str = setting("", "files", "the index on Milvus instead of index_dir: a Milvus Lite file (*.db) or "
                             "a Milvus server, http://host:19530 (docs/SCALING.md)")
    db_path: Path = setting(Path(".rqa/ratings.sqlite"), "files", "SQLite file for ratings and feedback")
    papers: str = setting("", "files", "a folder ingested into the index when the app starts (papers already "
                          "there are skipped)")
    model_cache: str = setting("", "files", "where offline models are assembled; empty: "
                               "$XDG_CACHE_HOME/rqa/models (~/.cache/rqa/models)")
    shared_dir: str = setting("", "files", "the shared corpus and dev set that tests and benchmarks read; "
                              "empty: ../shared beside the repository")
    # --- chunking
    chunk_size: int = setting(1000, "chunking", "characters per chunk", (100, 20_000))
    overlap: int = setting(200, "chunking", "characters shared by neighbouring chunks", (0, 10_000))
    method_chunk_factor: float = setting(1.5, "chunking", "methods sections get chunks this many times larger",
                                         (1.0, 4.0))
    # --- index building
    ann: str = setting("flat", "index", "dense index kind", choices=("flat", "hnsw", "ivf"))
    hnsw_m: int = setting(32, "index", "HNSW graph degree (ann hnsw; a folder index's FAISS, Milvus builds its own with M 32)", (4, 256))
    hnsw_ef_search: int = setting(64, "index", "HNSW candidates per search (ann hnsw; a folder index's FAISS)", (8, 4096))
    ivf_min_nprobe: int = setting(8, "index", "IVF lists searched at least (ann ivf; a folder index's FAISS; else a 16th of the lists)",
                                  (1, 4096))
    # BM25's usual 1.5 / 0.75: Anserini's passage values 0.82 / 0.68 found two paraphrased dev answers
    # and lost a third (docs/HISTORY.md), no gain worth a tuned constant
    bm25_k1: float = setting(1.5, "index", "BM25 term-frequency saturation (Okapi, Robertson's idf)", (0.0, 10.0))
    bm25_b: float = setting(0.75, "index", "BM25 length normalisation", (0.0, 1.0))
    # --- retrieval
    embedder: str = setting("", "retrieval", "sentence-transformers model name or folder; empty: the index's "
                            "own (all-MiniLM-L6-v2 for a new one). An index built with another is refused")
    k: int = setting(4, "retrieval", "sources per question (4 longer excerpts beat 5 shorter ones in the same prompt "
                     "length: docs/BENCHMARKS.md)", (1, 50))
    fusion_depth: int = setting(100, "retrieval", "candidates from each retriever before fusion", (1, 10_000))
    fusion: str = setting("convex", "retrieval", "how BM25 and dense results combine: convex (scores scaled to "
                          "[0, 1] from their floors and added, dense x dense_weight) or rrf (reciprocal rank)",
                          choices=("convex", "rrf"))
    rrf_k: int = setting(60, "retrieval", "reciprocal-rank smoothing (fusion rrf, and the reranker's fusion)",
                         (1, 10_000))
    dense_weight: float = setting(0.5, "retrieval", "weight of the dense retriever against BM25's 1 "
                                  "(docs/BENCHMARKS.md)", (0.0, 10.0))
    within_paper_weight: float = setting(0.2, "retrieval", "weight of each candidate's BM25 score over its own "
                                         "paper's chunks (scaled to [0, 1] in the paper), added to the fused "
                                         "convex score of the top rerank_depth; 0: off (rqa.search.within_paper)",
                                         (0.0, 10.0))
    reranker: str = setting("", "retrieval", "second stage over the fused top rerank_depth: a cross-encoder or "
                            "embedder folder; empty: none (rqa.rerank)")
    rerank_depth: int = setting(20, "retrieval", "fused candidates the within-paper score and the reranker reorder", (1, 200))
    rerank_weight: float = setting(1.0, "retrieval", "weight of the reranker's rank against the fused rank",
                                   (0.0, 100.0))
    # --- query expansion
    # Off by default: on dev-100 it put 3 more questions' evidence in the top 5 but no more answers
    # right (0.69 as shown against 0.71 without) for 1.6 s more before the first token (BENCHMARKS)
    expand_tokens: int = setting(0, "expansion", "length of the passage a model writes for BM25 to search "
                                 "with besides the question (32 measured); 0: the question alone", (0, 512))
    expand_with: str = setting("", "expansion", "offline model name or GGUF path that writes it; empty: the "
                               "offline model `model`")
    # BM25 counts the question's words this many times against the passage's once, so that a wrong
    # guess cannot outweigh the question (query2doc repeats the query for the same reason)
    expand_question_weight: int = setting(2, "expansion", "times the question's words count against the "
                                          "passage's once", (1, 20))
    # --- the model
    model: str = setting("qwen2.5-coder-1.5b-instruct", "model", "offline model (rqa.models) served when no "
                         "path or Hub repo is set: qwen2.5-coder-1.5b-instruct, qwen2.5-coder-0.5b-instruct or "
                         "smollm2-135m-instruct")
    adapter: str = setting("", "model", "the fine-tune applied to the offline base at load: empty = the GGUF "
                           "LoRA adapter rqa ships for `model` in rqa/adapters/ (sha256-pinned; none for an explicit "
                           "model_path or a Hub repo), none = the stock base, or a GGUF LoRA adapter's path "
                           "(`build export` writes adapter-f16.gguf)")
    # llama.cpp adds scale x the adapter file's low-rank update to each adapted weight: 1 is the file
    # as exported (the default model's holds a quarter of its trained update), 0 the stock base
    adapter_scale: float = setting(1.0, "model", "how much of the adapter file's update is applied (llama.cpp's "
                                   "LoRA scale): 1 as the file holds it, 0.5 half-way to the stock base", (0.0, 4.0))
    model_path: str = setting("", "model", "GGUF to serve (first in the resolution order)")
    model_path_q8: str = setting("", "model", "a q8_0 GGUF for reasoning-heavy questions beside model_path")
    hub_repo: str = setting("", "model", "Hugging Face model repo holding the GGUF files (falls back offline)")
    hub_q4_file: str = setting("model-q4_0.gguf", "model", "the file of hub_repo that answers lookups")
    hub_q8_file: str = setting("model-q8_0.gguf", "model", "the file of hub_repo for reasoning questions")
    hub_index_repo: str = setting("", "model", "Hugging Face dataset repo holding a published index (used "
                                  "instead of index_dir; uploads go to a copy of it in index_dir, served from then on)")
    n_ctx: int = setting(2048, "model", "context length; the prompt is about 950 tokens with 4 excerpts of "
                         "800 characters", (512, 131_072))
    n_threads: int = setting(0, "model", "threads for generation; 0: all cores", (0, 256))
    # --- where generation runs
    engine: str = setting("server", "serving", "where the app generates: server (llama.cpp's llama-server as a "
                          "supervised child: parallel slots, continuous batching, cancellation) or in-process "
                          "(llama-cpp-python, one answer at a time). The CLI and the pipeline generate in-process",
                          choices=("server", "in-process"))
    slots: int = setting(4, "serving", "answers llama-server generates at once; each slot holds n_ctx tokens of "
                         "KV cache (docs/BENCHMARKS.md)", (1, 64))
    llama_server: str = setting("", "serving", "the llama-server binary; empty: the one `make install` builds "
                                "into the virtual environment, else one on PATH")
    llm_url: str = setting("", "serving", "an OpenAI-compatible server that generates instead (another "
                           "llama-server, vLLM), e.g. http://gpu-host:8000/v1; empty: this machine")
    llm_model: str = setting("", "serving", "the model id sent to llm_url (its /v1/models lists them)")
    llm_api_key: str = setting("", "serving", "bearer key for llm_url, if it asks for one")
    # --- generation and the prompt
    max_new_tokens: int = setting(256, "generation", "longest answer, in tokens", (1, 8192))
    temperature: float = setting(0.0, "generation", "0: greedy (the answer restates facts; sampling only adds "
                                 "errors)", (0.0, 2.0))
    source_chars: int = setting(800, "generation", "characters of each source shown to the model, around the "
                                "question's words", (100, 20_000))
    grounding: str = setting("excerpts", "generation", "how each excerpt's centre sentence is found: excerpts "
                             "(the question's words) or sentences (plus embedding cosine with the question)",
                             choices=("excerpts", "sentences"))
    answer_style: str = setting("direct", "generation", "direct; quote: copy the answering sentence first, then "
                                "answer; parts: the question before and after the sources, every part answered",
                                choices=("direct", "quote", "parts"))
    demonstration: bool = setting(False, "generation", "show the model one worked example (another paper's "
                                  "question, sources and a cited answer) before the question")
    equation_hint: bool = setting(False, "generation", "where the excerpts hold an equation, ask the model to "
                                  "copy the one that answers, in LaTeX (for the equation check)")
    # 3 with the floor answered 3 more dev-100 questions than 2 without, in 12 more words; 5 two more
    # than 3, none lost, in 15 more words; 6 and 8 none more (BENCHMARKS, "Up to five quotes")
    quotes: int = setting(5, "generation", "sentences of the cited sources quoted under the answer, those that best "
                          "match the question (the paper's own words for the fact; 0: none); those below "
                          "quote_min_score are not, so most answers show fewer", (0, 10))
    quote_min_score: float = setting(0.35, "generation", "match with the question (0.5 x cosine + 0.5 x share of "
                                     "its words) below which a sentence is not quoted, the best one excepted",
                                     (0.0, 1.0))
    # 0.1 answered one more dev-100 question than 0 (a table row backing the model's numbers, quoted
    # instead of a looser match), none fewer; 0.2 and 0.3 tied 0.1; 0.1 adds the fewest words (BENCHMARKS)
    quote_answer_weight: float = setting(0.1, "generation", "weight of the share of the answer's own words (those "
                                         "not in the question) a sentence holds, added to its match with the "
                                         "question when quotes are chosen: quotes back what the answer says",
                                         (0.0, 1.0))
    # --- checks
    support_threshold: float = setting(0.45, "checks", "support score from which an answer sentence counts "
                                       "as supported (docs/BENCHMARKS.md)", (0.0, 1.0))
    attribute_numbers: bool = setting(True, "checks", "a sentence stating a number of two digits or more "
                                      "(leading zeros aside: 0.045, 192) that none of its cited sources holds also "
                                      "cites the retrieved source that does; a number no source holds stays flagged")
    name_sources: bool = setting(True, "checks", "after answering, the model names the source of each sentence "
                                 "it left uncited (its turn continued with \" [\"; a few tokens a sentence); "
                                 "attribution then checks and completes them")
    sympy_timeout_s: float = setting(2.0, "checks", "seconds one equation check may take", (0.1, 60.0))
    # --- bounds on what users send
    max_question_chars: int = setting(2000, "limits", "longest question answered, in characters (chat and API "
                                      "refuse a longer one)", (10, 100_000))
    # the longest shared paper has about 150,000 characters; a one-line 5 MB text once made 6,676
    # chunks and held the index for minutes
    max_chars_per_file: int = setting(2_000_000, "limits", "a paper with more text is skipped",
                                      (1_000, 1_000_000_000))
    max_chunks_per_upload: int = setting(3_000, "limits", "the papers panel skips files that would take one "
                                         "upload past this many chunks", (1, 10_000_000))
    max_upload_mb: int = setting(20, "limits", "largest uploaded file; the server refuses a larger request "
                                 "before any handler reads it", (1, 2_000))
    max_files_per_upload: int = setting(10, "limits", "files in one upload", (1, 1_000))
    max_papers: int = setting(500, "limits", "papers one app serves; an upload past it is refused", (1, 100_000))
    # --- the app and its API
    rate_limit_per_minute: int = setting(5, "app", "questions per minute per client; 0: off", (0, 100_000))
    # Otherwise the client is the connection's own address, which a client cannot forge.
    trusted_proxies: str = setting("", "app", "addresses of reverse proxies whose X-Forwarded-For is believed "
                                   "(*: any peer, as behind the Spaces proxy)")
    annotators: str = setting("", "app", "name:token,name2:token2, or a file of such lines: who may rate in the "
                              "annotator tab")
    api_keys: str = setting("", "app", "comma-separated keys for /v1/*; empty: the API is open like the chat")
    # On a public server anyone could otherwise empty the index every other user asks.
    papers_edit: str = setting("open", "app", "who may add and remove papers in the Papers panel: open (anyone "
                               "using the page), key (whoever enters papers_key), off (nobody: the list only)",
                               choices=("open", "key", "off"))
    papers_key: str = setting("", "app", "the key the Papers panel asks for when papers_edit is key (long and "
                              "random: a secret)")
    # answers are generated one at a time on a CPU: one more gets 503 instead of an unbounded wait
    api_max_in_flight: int = setting(8, "app", "API questions answered or waiting at once; past it, 503 with "
                                     "Retry-After", (1, 10_000))
    # An upload is copied into the papers store (or read by the annotator's import) when its button is
    # pressed; Gradio's own copy, and any file chosen and never added, would otherwise stay for good.
    upload_cache_s: int = setting(3_600, "app", "seconds an uploaded file stays in Gradio's upload folder (swept "
                                  "as often; all at shutdown); 0: kept", (0, 30 * 86_400))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, bounds, choices = getattr(self, f.name), f.metadata["bounds"], f.metadata["choices"]
            flag = f"(flag --{f.name.replace('_', '-')}, environment RQA_{f.name.upper()})"
            if bounds and not bounds[0] <= value <= bounds[1]:
                raise SettingsError(f"setting {f.name}={value} is out of range: it must be between {bounds[0]} and "
                                    f"{bounds[1]} {flag}")
            if choices and value not in choices:
                listed = ", ".join(choices[:-1]) + " or " + choices[-1]
                raise SettingsError(f"setting {f.name}={value!r} must be {listed} {flag}")
        if self.overlap >= self.chunk_size:
            raise SettingsError(f"setting overlap={self.overlap} must be smaller than chunk_size={self.chunk_size}")
        if self.max_new_tokens > self.n_ctx - 256:
            raise SettingsError(f"setting max_new_tokens={self.max_new_tokens} leaves no room for the question "
                                f"and sources in n_ctx={self.n_ctx}")
        if self.papers_edit == "key" and not self.papers_key.strip():
            raise SettingsError("setting papers_edit='key' needs papers_key (environment RQA_PAPERS_KEY)")
        if self.papers_edit == "open" and self.papers_key.strip():  # a key that guards nothing would mislead
            raise SettingsError("setting papers_key is set but papers_edit is 'open', so anyone may change the "
                                "papers: set papers_edit=key (environment RQA_PAPERS_EDIT)")
        if self.index_uri and self.hub_index_repo:
            raise SettingsError("settings index_uri and hub_index_repo both name the index: set one of them")

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


def markdown_table() -> str:
    """The README's settings table: one section per concern."""
    lines = []
    for group, title in GROUPS.items():
        lines += [f"**{title}**", "", "| variable | default | range | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(Settings):
            if f.metadata["group"] != group:
                continue
            meta = f.metadata
            allowed = " / ".join(f"`{c}`" for c in meta["choices"]) if meta["choices"] else \
                f"{meta['bounds'][0]:,} to {meta['bounds'][1]:,}" if meta["bounds"] else ""
            default = f"`{f.default}`" if f.default not in ("", None) else "(empty)"
            lines.append(f"| `RQA_{f.name.upper()}` | {default} | {allowed} | {meta['help']} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
