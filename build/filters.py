"""The dataset stage's three validation stages (docs/DESIGN.md, "Dataset"), each with kept/dropped
counts in the dataset card:
  1. similarity: the question, searched in an index of all chunks, must retrieve its own chunk
     in the top k (it is answerable and specific);
  2. format: names a specific method or architecture (a question that names nothing is first asked
     of its paper by title), the answer has 20 characters or more, and any LaTeX is balanced and
     parses with SymPy;
  3. entropy: answers of low token entropy for their length (repetitive) are dropped, and so are
     questions whose embedding is a near-duplicate (cosine >= 0.92) of one already kept.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from build.generate import COMMON, named_terms
from rqa.config import Settings
from rqa.embed import DEFAULT_EMBEDDER, embed
from rqa.equations import SympyWorker, extract_latex
from rqa.index import Index
from rqa.search import retrieve
from rqa.text import CITATION_RE, tokenize
from rqa.types import Chunk


@dataclass
class Filters:
    top_k: int = 5
    # a concise answer ("h = 8 parallel attention heads [1].") is what the app wants: the minimum only
    # drops empty and one-word replies (80 dropped 81 of 268 teacher answers, most of them concise)
    min_answer_chars: int = 20
    min_entropy_bits: float = 3.5
    near_duplicate_cosine: float = 0.92


# Capitalised words that are not names: named_terms' common words, question words, references into the paper
NOT_NAMES = COMMON | {"What", "Which", "How", "Why", "When", "Where", "Who", "Does", "Do", "Is", "Are", "Can",
                      "According", "Equation", "Eq", "Proposition", "Theorem", "Lemma", "Algorithm", "Corollary",
                      "Definition"}
# Title words too general to say which method a question is about
GENERIC = set(tokenize("neural network networks deep learning model models language large training method methods "
                       "approach via using towards efficient scalable improved"))


def names_its_subject(question: str, title: str) -> bool:
    """The seed's "named method in the question" check, so that a question makes sense without its
    excerpt. Beyond named_terms (CamelCase, acronyms, Capitalised Multi Words) a name is a
    capitalised word inside the sentence ("Adam") or two consecutive words of the paper's title
    that are not both generic ("batch normalization", "generative adversarial")."""
    if named_terms(question):
        return True
    words = re.findall(r"[A-Za-z][A-Za-z0-9-]*", question)
    if any(w[0].isupper() and w[1:].islower() and len(w) >= 3 and w not in NOT_NAMES for w in words[1:]):
        return True
    title_tokens, asked = tokenize(title), tokenize(question)
    pairs = {(a, b) for a, b in zip(title_tokens, title_tokens[1:]) if not (a in GENERIC and b in GENERIC)}
    return any(pair in pairs for pair in zip(asked, asked[1:]))


def with_subject(question: str, title: str) -> str:
    """The question, or when it names neither method nor paper ("What beam size is used in the
    translation models?"), the question asked of the paper by its short title ("In "Attention Is All
    You Need", what beam size ..."): a user names what they ask about, and a question that does not
    is unanswerable from a corpus, but the teacher's answer to it is still good."""
    if not question or not title.strip() or names_its_subject(question, title):
        return question
    short = title.split(":")[0].strip()
    short = short.title() if short.isupper() else short
    return f'In "{short}", {question[0].lower()}{question[1:]}'


def informative(answer: str, min_bits: float) -> bool:
    """Token entropy at least min_bits, or for answers too short to reach it (n words carry at
    most log2 n bits), at least 0.8 of the most they can carry: drops repetition, not brevity."""
    n = len(re.findall(r"\w+", answer))
    return n > 0 and token_entropy(answer) >= min(min_bits, 0.8 * math.log2(max(n, 1)))


def token_entropy(text: str) -> float:
    words = re.findall(r"\w+", text.lower())
    if not words:
        return 0.0
    counts = Counter(words)
    return -sum(n / len(words) * math.log2(n / len(words)) for n in counts.values())


def latex_ok(text: str, sympy: SympyWorker) -> bool:
    if text.count("$") % 2 or text.count("{") != text.count("}"):
        return False
    eqs = extract_latex(text)
    return not eqs or any(sympy.call("parse", e)[0] == "ok" for e in eqs)


def with_subjects(records: list[dict], chunks: list[Chunk]) -> tuple[list[dict], int]:
    """The records with every question that names nothing asked of its paper by title (with_subject),
    and how many were: done before validation, whose format stage asks for a name."""
    by_id = {c.chunk_id: c for c in chunks}
    asked = [{**r, "question": with_subject(r["question"], by_id[r["chunk_id"]].title)} for r in records]
    return asked, sum(a["question"] != r["question"] for a, r in zip(asked, records))


def well_formed(question: str, answer: str, title: str, filters: Filters, sympy: SympyWorker) -> bool:
    """The format stage: the question names its method or paper, the answer says something (its
    length counted without citation markers: "[1] [2] [3] [4] [5] [6]" is no answer) and its LaTeX
    is balanced and parses."""
    return names_its_subject(question, title) and len(CITATION_RE.sub("", answer).strip()) >= filters.min_answer_chars \
        and latex_ok(answer, sympy)


def validate(records: list[dict], chunks: list[Chunk], settings: Settings, filters: Filters,
             stages: dict) -> list[dict]:
    """The records that pass every stage, each with its `hits` (the sources retrieval returns for
    its question) and its `chunk`; `stages` gets each stage's kept and dropped counts."""
    from tqdm import tqdm

    by_id = {c.chunk_id: c for c in chunks}
    records = [dict(r) for r in records]  # gains "hits" and "chunk"
    embedder = settings.embedder or DEFAULT_EMBEDDER
    index = Index.from_chunks(chunks, embedder)

    def stage(name, rows, keep):
        kept = [r for r in tqdm(rows, desc=f"validate: {name}", unit="qa") if keep(r)]
        stages[name] = {"kept": len(kept), "dropped": len(rows) - len(kept)}
        return kept

    def retrieves_own_chunk(r: dict) -> bool:
        r["hits"] = retrieve(index, r["question"], settings, k=filters.top_k)  # the sources the app would show
        return r["chunk_id"] in {h.chunk.chunk_id for h in r["hits"]}

    rows = stage("1 similarity", records, retrieves_own_chunk)
    sympy = SympyWorker(settings.sympy_timeout_s)
    try:
        rows = stage("2 format", rows, lambda r: well_formed(r["question"], r["answer"], by_id[r["chunk_id"]].title,
                                                            filters, sympy))
    finally:
        sympy.close()
    rows = stage("3a entropy", rows, lambda r: informative(r["answer"], filters.min_entropy_bits))
    qvecs = embed(embedder, [r["question"] for r in rows]) if rows else np.zeros((0, 1))
    kept_idx: list[int] = []
    for i in range(len(rows)):
        if not kept_idx or float(np.max(qvecs[kept_idx] @ qvecs[i])) < filters.near_duplicate_cosine:
            kept_idx.append(i)
    stages["3b near-duplicates"] = {"kept": len(kept_idx), "dropped": len(rows) - len(kept_idx)}
    rows = [rows[i] for i in kept_idx]
    for r in rows:
        r["chunk"] = by_id[r["chunk_id"]]
    return rows
