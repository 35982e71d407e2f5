"""Text utilities shared across rqa: words, sentences, citation markers and file hashes.

A leaf module: it imports nothing from rqa, and nltk only when words or sentences are first needed.

Two sentence splitters serve two kinds of text. Papers (chunking) are split by NLTK Punkt trained
on the paper itself: nltk.sent_tokenize needs downloaded model data, which this project never
fetches, and Punkt is unsupervised, so the split depends on that paper alone, which keeps chunk ids
stable when the paper is ingested again next to other papers. Answers and excerpts (support,
prompt, numbers checks) are short and split by punctuation (`sentence_spans`).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text, split at "\n" alone: a JSON string may hold U+2028, U+2029, U+0085
    or a form feed unescaped (json.dumps with ensure_ascii=False writes them so), where
    str.splitlines splits too and cuts the record in pieces. A "\r" before a "\n" and a byte-order
    mark at the start are dropped; blank lines are kept, so that line numbers match an editor's."""
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


# --- words (BM25, support, prompt excerpts) ------------------------------------------------------

STOPWORDS = set("""a an and are as at be been but by can could did do does for from had has have how i if in
into is it its may might more most no not of on or our so such than that the their them then there these they
this those to was we were what when where which while who why will with would you your""".split())


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer().stem(word)


@functools.cache
def _stemmer():
    from nltk.stem.porter import PorterStemmer  # imported on first use: hashing needs no nltk

    return PorterStemmer()


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words, stop words dropped, Porter-stemmed ("heads" matches "head")."""
    return [_stem(t) for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOPWORDS]


# --- citation markers ----------------------------------------------------------------------------

# One citation marker: [2], [1, 3], [2-4], [7;8]. The answer path parses the numbers with it too.
CITATION = r"\[(\d+(?:\s*[,;-]\s*\d+)*)\]"
CITATION_RE = re.compile(CITATION)
# A paper's own reference marker in its text: "[36]", "[12, 13]", "[2-4]". Not one that starts at 0:
# that is an interval ("scaled to [0, 1]"), which the model and the reader need.
PAPER_REFERENCE = r"\[[1-9]\d*(?:\s*[,;\-\u2013]\s*\d+)*\]"


def cited_numbers(text: str) -> list[int]:
    out: list[int] = []
    for group in CITATION_RE.findall(text):
        for part in re.split(r"\s*[,;]\s*", group):
            if "-" in part:
                a, b = (int(x) for x in part.split("-")[:2])
                nums = range(a, b + 1) if 0 < b - a < 20 else [a, b]
            else:
                nums = [int(part)]
            out.extend(n for n in nums if n not in out)
    return out


# --- sentences -----------------------------------------------------------------------------------

# A sentence ends at . ! ? before a capital, a bracket or math, not after a list number ("2. Next");
# and always at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\s\d\.)(?<!^\d\.)\s+(?=[A-Z(\[$\\])|\s*\n\s*\n\s*")  # or a blank line


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a text, by punctuation followed by a capital or math."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


# Stored without the final period, lower case, as Punkt expects.
SCIENTIFIC_ABBREVIATIONS = {
    "al", "et al", "fig", "figs", "eq", "eqs", "sec", "secs", "tab", "i.e", "e.g", "cf", "vs",
    "approx", "resp", "ref", "refs", "no", "vol", "pp", "ch", "app", "thm", "def", "prop", "lem",
    "alg", "dr", "prof", "etc", "incl", "max", "min", "avg", "std", "var", "est", "dept", "univ",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}


def train_tokenizer(text: str):
    """NLTK Punkt trained on the text itself (see the module's docstring)."""
    from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTrainer

    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train(text, finalize=True)
    params = trainer.get_params()
    params.abbrev_types.update(SCIENTIFIC_ABBREVIATIONS)
    return PunktSentenceTokenizer(params)


def split_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets in text. Abbreviations such as "Fig. 2" never end a sentence:
    Punkt's orthographic heuristic may still split before a number or capital, so such splits
    are merged back."""
    spans = list(tokenizer.span_tokenize(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged:
            prev = text[merged[-1][0]:merged[-1][1]]
            last = re.search(r"(\S+)\.$", prev)
            if last and last.group(1).lower().lstrip("(") in SCIENTIFIC_ABBREVIATIONS:
                merged[-1] = (merged[-1][0], end)
                continue
        merged.append((start, end))
    return merged
