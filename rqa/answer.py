"""One question, answered: retrieve, prompt, stream, then citations and checks.

`answer_stream` yields text pieces as the model writes them and finally an Answer with numbered
citations, the retrieved-but-uncited sources, citations to sources that do not exist, sentence
support and equation checks. The CLI and the web app both go through it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Iterator

from rqa.config import Settings
from rqa.corpus import retrieve
from rqa.equations import EquationCheck, SympyWorker, check_equations
from rqa.index import Index
from rqa.llm import ModelPool
from rqa.prompt import build_messages
from rqa.support import SentenceSupport, check_support
from rqa.types import Hit

CITE_RE = re.compile(r"\[(\d+(?:\s*[,;-]\s*\d+)*)\]")


class QuestionError(ValueError):
    """A question that cannot be asked as it is (empty, say)."""


@dataclass
class Citation:
    n: int
    hit: Hit

    def to_json(self) -> dict:
        c = self.hit.chunk
        return {"n": self.n, "chunk_id": c.chunk_id, "paper": c.paper, "title": c.title, "section": c.section,
                "pages": c.pages, "text": c.text}

    @property
    def arxiv_url(self) -> str | None:
        a = self.hit.chunk.arxiv_id
        return f"https://arxiv.org/abs/{a}" if a else None


@dataclass
class Answer:
    question: str
    text: str
    model: str
    citations: list[Citation]  # sources the answer cites, in order of their numbers
    uncited: list[Citation]  # retrieved and shown to the model, not cited
    invalid_citations: list[int]  # [n] with no source n
    support: list[SentenceSupport] = field(default_factory=list)
    equations: list[EquationCheck] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def checks(self) -> dict:
        return {
            "invalid_citations": self.invalid_citations,
            "unsupported_sentences": [s.sentence for s in self.support if not s.supported],
            "sentences": [s.to_json() for s in self.support],
            "equations": [e.to_json() for e in self.equations],
            "notices": self.notices,
        }

    def to_json(self) -> dict:
        return {"answer": self.text, "citations": [c.to_json() for c in self.citations], "checks": self.checks(),
                "uncited": [c.to_json() for c in self.uncited], "model": self.model}


def clean_question(question: str | bytes, max_chars: int) -> tuple[str, list[str]]:
    """Decode, normalise and bound a question; returns it with notices for the user."""
    notices = []
    if isinstance(question, bytes):
        question = question.decode("utf-8", errors="replace")
    question = question.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> ?
    if "\ufffd" in question:
        notices.append("The question contained invalid UTF-8; undecodable bytes were replaced.")
    question = re.sub(r"\s+", " ", question.replace("\x00", " ")).strip()
    if not question:
        raise QuestionError("Please type a question.")
    if len(question) > max_chars:
        notices.append(f"The question was {len(question):,} characters; only the first {max_chars:,} were used.")
        question = question[:max_chars]
    return question, notices


def cited_numbers(text: str) -> list[int]:
    out: list[int] = []
    for group in CITE_RE.findall(text):
        for part in re.split(r"\s*[,;]\s*", group):
            if "-" in part:
                a, b = (int(x) for x in part.split("-")[:2])
                nums = range(a, b + 1) if 0 < b - a < 20 else [a, b]
            else:
                nums = [int(part)]
            out.extend(n for n in nums if n not in out)
    return out


def answer_stream(question: str, index: Index, models: ModelPool, settings: Settings,
                  sympy: SympyWorker | None = None) -> Iterator[str | Answer]:
    question, notices = clean_question(question, settings.max_question_chars)
    t0 = time.perf_counter()
    hits = retrieve(index, question, settings)
    t_retrieval = time.perf_counter() - t0
    model = models.for_question(question)
    messages = build_messages(question, hits, max_source_chars=_source_budget(settings))
    pieces: list[str] = []
    t_first = None
    for piece in model.stream(messages, settings.max_new_tokens, settings.temperature):
        if t_first is None:
            t_first = time.perf_counter() - t0
        pieces.append(piece)
        yield piece
    text = "".join(pieces).strip()
    yield finish(question, text, hits, model.name, settings, sympy, notices,
                 {"retrieval_s": t_retrieval, "first_token_s": t_first, "total_s": time.perf_counter() - t0},
                 index.embeddings[[h.row for h in hits]] if hits else None)


def finish(question: str, text: str, hits: list[Hit], model: str, settings: Settings,
           sympy: SympyWorker | None, notices: list[str], timings: dict, source_vectors=None) -> Answer:
    numbers = cited_numbers(text)
    citations = [Citation(n, hits[n - 1]) for n in numbers if 1 <= n <= len(hits)]
    cited = {c.n for c in citations}
    answer = Answer(question=question, text=text, model=model, citations=citations,
                    uncited=[Citation(n, h) for n, h in enumerate(hits, start=1) if n not in cited],
                    invalid_citations=[n for n in numbers if not 1 <= n <= len(hits)],
                    notices=notices, timings=timings)
    sources = [h.chunk.text for h in hits]
    if text:
        answer.support = check_support(text, sources, settings.embedder, settings.support_threshold, source_vectors)
        if sympy is not None:
            answer.equations = check_equations(text, sources, sympy)
    if not text:
        answer.notices.append("The model returned an empty answer.")
    return answer


def _source_budget(settings: Settings) -> int:
    # about 3.5 characters a token; leave room for the answer and the instructions
    return max(1000, int((settings.n_ctx - settings.max_new_tokens - 300) * 3.5))
