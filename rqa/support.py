"""Contextual truthfulness (seed section 8): does some retrieved chunk support each answer sentence?

Support of a sentence = max over the retrieved chunks of
    0.5 * cosine(embedding(sentence), embedding(chunk)) + 0.5 * lexical overlap,
where lexical overlap is the share of the sentence's content words (stemmed) found in the chunk.
Sentences under the threshold are marked unsupported. The threshold comes from
bench/calibrate_support.py over ../shared/eval/dev.jsonl (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from rqa.embed import embed
from rqa.index import tokenize

_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")


@dataclass
class SentenceSupport:
    sentence: str
    score: float
    source: int | None  # 1-based number of the best-supporting source
    supported: bool

    def to_json(self) -> dict:
        return asdict(self)


def answer_sentences(answer: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z$\\(\[])", answer.strip())
    return [p.strip() for p in parts if len(tokenize(_CITATION.sub("", p))) >= 3]


def support_scores(sentences: list[str], sources: list[str], embedder: str,
                   source_vectors: np.ndarray | None = None) -> list[tuple[float, int | None]]:
    """source_vectors: the sources' stored index embeddings, when known (no second encoding)."""
    if not sentences:
        return []
    if not sources:
        return [(0.0, None) for _ in sentences]
    clean = [_CITATION.sub("", s) for s in sentences]
    if source_vectors is None:
        source_vectors = embed(embedder, sources)
    cos = embed(embedder, clean) @ source_vectors.T
    source_tokens = [set(tokenize(s)) for s in sources]
    out = []
    for i, sentence in enumerate(clean):
        words = set(tokenize(sentence))
        lexical = np.array([len(words & t) / max(len(words), 1) for t in source_tokens])
        combined = 0.5 * np.clip(cos[i], 0, 1) + 0.5 * lexical
        j = int(np.argmax(combined))
        out.append((float(combined[j]), j + 1))
    return out


def check_support(answer: str, sources: list[str], embedder: str, threshold: float,
                  source_vectors: np.ndarray | None = None) -> list[SentenceSupport]:
    sentences = answer_sentences(answer)
    scores = support_scores(sentences, sources, embedder, source_vectors)
    return [SentenceSupport(s, round(score, 4), n, score >= threshold) for s, (score, n) in zip(sentences, scores)]
