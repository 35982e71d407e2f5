"""Contextual truthfulness (docs/DESIGN.md, "Contextual truthfulness"): does some retrieved chunk support each answer sentence?

Support of a sentence = max over the retrieved chunks of
    0.5 * cosine(embedding(sentence), embedding(chunk)) + 0.5 * lexical overlap,
where lexical overlap is the share of the sentence's content words (stemmed) found in the chunk.
Sentences under the threshold are marked unsupported. The threshold comes from
bench/calibrate_support.py over ../shared/eval/dev.jsonl (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from rqa.embed import embed
from rqa.text import CITATION, CITATION_RE, PAPER_REFERENCE, sentence_spans, tokenize

# A source line that speaks to the model instead of about the work: planted instructions.
_INSTRUCTION = re.compile(
    r"\b(?:system (?:note|notice|message|prompt)|ignore (?:all |any |the )?(?:previous|prior|above|earlier)|disregard|"
    r"(?:new|updated|hidden) instructions?|you (?:must|should) (?:always|now|only)|(?:always|only) (?:answer|reply|respond|say)|"
    r"(?:reply|respond|answer) only with|assistant\s*:|user\s*:|the (?:correct|real|true) answer is|"
    r"do not (?:mention|tell|reveal)|when asked about)\b|https?://", re.I)


def instruction_sentences(text: str) -> list[str]:
    """The sentences of a source text that look like instructions to the model (or carry a URL)."""
    return [text[a:b] for a, b in sentence_spans(text) if _INSTRUCTION.search(text[a:b])]


@dataclass
class SentenceSupport:
    sentence: str
    score: float
    source: int | None  # 1-based number of the best-supporting source
    supported: bool
    complete: bool = True  # False for a sentence cut off mid-way: never called supported
    scores: list[float] = field(default_factory=list)  # support by each source, in source order
    repeats_instruction: bool = False  # it restates a source line that gives the model orders: never supported

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "scores"}



_LEADING_CITATION = re.compile(rf"^((?:{CITATION}\s*)+)")


def answer_sentences(answer: str) -> list[str]:
    answer = answer.strip()
    parts = [answer[a:b].strip() for a, b in sentence_spans(answer)]
    for i in range(1, len(parts)):  # "... gradients. [1] The next" -> the [1] closes the first sentence
        m = _LEADING_CITATION.match(parts[i])
        if m:
            parts[i - 1] += " " + m.group(1).strip()
            parts[i] = parts[i][m.end():]
    return [p.strip() for p in parts if len(tokenize(CITATION_RE.sub("", p))) >= 3]


def is_complete(sentence: str) -> bool:
    """Ends as a sentence does and has balanced math: not a fragment cut off by the token limit."""
    core = CITATION_RE.sub("", sentence).rstrip()
    return core.endswith((".", "!", "?", ")", "$", ":")) and core.count("$") % 2 == 0


# The support threshold was calibrated (bench/calibrate_support.py) with this embedder's scores, so
# the check keeps it whatever embedder retrieval uses.
SUPPORT_EMBEDDER = "all-MiniLM-L6-v2"


def support_scores(sentences: list[str], sources: list[str], embedder: str,
                   source_vectors: np.ndarray | None = None) -> list[np.ndarray]:
    """source_vectors: the sources' stored index embeddings, when known (no second encoding)."""
    if not sentences:
        return []
    if not sources:
        return [np.zeros(0) for _ in sentences]
    clean = [CITATION_RE.sub("", s) for s in sentences]
    if source_vectors is None:
        source_vectors = embed(embedder, sources)
    cos = embed(embedder, clean) @ source_vectors.T
    source_tokens = [set(tokenize(s)) for s in sources]
    out = []
    for i, sentence in enumerate(clean):
        words = set(tokenize(sentence))
        lexical = np.array([len(words & t) / max(len(words), 1) for t in source_tokens])
        out.append(0.5 * np.clip(cos[i], 0, 1) + 0.5 * lexical)
    return out


def check_support(answer: str, sources: list[str], embedder: str, threshold: float,
                  source_vectors: np.ndarray | None = None) -> list[SentenceSupport]:
    sentences = answer_sentences(answer)
    scores = support_scores(sentences, sources, embedder, source_vectors)
    planted = [set(tokenize(line)) for text in sources for line in instruction_sentences(text)]
    out = []
    for s, by_source in zip(sentences, scores):
        complete = is_complete(s)
        j = int(np.argmax(by_source)) if len(by_source) else -1
        score = float(by_source[j]) if j >= 0 else 0.0
        words = set(tokenize(CITATION_RE.sub("", s)))
        # half its content words from one planted line: the sentence passes the line on, it is not backed by the paper
        repeats = any(len(words & line) >= 0.5 * max(len(words), 1) for line in planted if line)
        out.append(SentenceSupport(s, round(score, 4), j + 1 if j >= 0 else None,
                                   complete and score >= threshold and not repeats,
                                   complete, [round(float(x), 4) for x in by_source], repeats))
    return out


def supporting_sentences(chunk_text: str, answer_sentences: list[str], min_share: float = 0.3) -> list[str]:
    """For each answer sentence, the chunk sentence sharing the largest share of its content
    words (at least min_share): the exact text to highlight in the cited source."""
    spans = sentence_spans(chunk_text)
    chunk_words = [set(tokenize(chunk_text[a:b])) for a, b in spans]
    out: list[str] = []
    for sentence in answer_sentences:
        words = set(tokenize(CITATION_RE.sub("", sentence)))
        if not words or not spans:
            continue
        shares = [len(words & cw) / len(words) for cw in chunk_words]
        best = max(range(len(spans)), key=shares.__getitem__)
        text = chunk_text[spans[best][0]:spans[best][1]].strip()
        if shares[best] >= min_share and text not in out:
            out.append(text)
    return out


@dataclass
class Quote:
    """A sentence of a cited source shown under the answer: the paper's own words for the fact."""
    n: int  # the source's number, as the answer cites it
    sentence: str  # whitespace collapsed, the paper's own reference markers ("[36]") removed
    score: float

    def to_json(self) -> dict:
        return asdict(self)


# A paper's own reference marker in a quote, "value 0.1 [36].": after a blank, before punctuation or a
# blank; one after a name is an index (x[3]) and stays, escaped, where the reader sees it.
_REFERENCE = re.compile(r"(?<=\s)" + PAPER_REFERENCE + r"(?=[\s.,;:)]|$)")
_BRACKETED_NUMBER = re.compile(r"\[(\d[^\[\]]*)\]")
_MARKUP = re.compile(r"\]\(|<[!/a-zA-Z]")  # a Markdown link or an HTML tag: never shown as a quote


def quote_text(sentence: str) -> str:
    """A source sentence as a quote: whitespace collapsed, the paper's reference markers removed, and
    any other bracketed number escaped (x\\[3\\] in Markdown) so that it never reads as a citation."""
    sentence = re.sub(r"\s+", " ", _REFERENCE.sub("", sentence)).strip()
    sentence = re.sub(r"\s+([.,;:])(?!\d)", r"\1", sentence)  # "value 0.1 [36]." -> "value 0.1."
    return _BRACKETED_NUMBER.sub(r"\\[\1\\]", sentence)


def semantic_scores(question: str, sentences: list[str]) -> list[float]:
    """How well each sentence matches the question: 0.5 x cosine with it (the support check's
    embedder) + 0.5 x the share of the question's content words the sentence holds."""
    if not sentences:
        return []
    vectors = embed(SUPPORT_EMBEDDER, [question] + sentences)
    cos = vectors[1:] @ vectors[0]
    wanted = set(tokenize(question))
    return [0.5 * max(float(c), 0.0) + 0.5 * len(wanted & set(tokenize(s))) / max(len(wanted), 1)
            for c, s in zip(cos, sentences)]


def quote_sentences(question: str, sources: dict[int, str], k: int, answer: str = "",
                    min_score: float = 0.0, answer_weight: float = 0.0) -> list[Quote]:
    """The k sentences of the given sources (number -> text) that best match the question
    (semantic_scores), plus answer_weight x the share of the answer's own content words (those not
    in the question, citation markers aside) that a sentence holds: of two sentences matching the
    question alike, the one that backs what the answer says (its numbers, its names) is quoted.
    Not quoted: a sentence sharing no content word with the question, one the answer already holds
    word for word, one that speaks to the model (planted instructions, URLs) or carries markup, and
    any matching the question below min_score, the best match excepted (a weak match is more often
    another topic that shares a word than the fact)."""
    if k <= 0:
        return []
    wanted, said = set(tokenize(question)), f" {' '.join(tokenize(answer))} "
    claimed = set(tokenize(CITATION_RE.sub(" ", answer))) - wanted
    candidates = []
    for n, text in sources.items():
        for a, b in sentence_spans(text):
            sentence = quote_text(text[a:b])
            words = tokenize(sentence)
            if len(words) >= 3 and wanted & set(words) and not _INSTRUCTION.search(sentence) \
                    and not _MARKUP.search(sentence) and f" {' '.join(words)} " not in said:
                candidates.append((n, sentence, set(words)))
    scores = semantic_scores(question, [s for _, s, _ in candidates])
    ranking = scores  # the floor stays on the match with the question: the answer may be wrong
    if claimed and answer_weight:
        ranking = [score + answer_weight * len(claimed & words) / len(claimed)
                   for score, (_, _, words) in zip(scores, candidates)]
    out: list[Quote] = []
    best = max(range(len(scores)), key=scores.__getitem__, default=-1)  # the one exempt from the floor
    for i in sorted(range(len(candidates)), key=ranking.__getitem__, reverse=True):
        n, sentence, _ = candidates[i]
        if scores[i] < min_score and i != best:
            continue
        if all(q.sentence != sentence for q in out):  # chunks overlap: the same sentence twice
            out.append(Quote(n, sentence, round(scores[i], 4)))
        if len(out) == k:
            break
    return out
