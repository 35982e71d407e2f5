"""One question, answered: retrieve, prompt, stream, then citations and checks.

`answer_stream` retrieves at once and returns an AnswerStream: its `hits` are there before the
first token (the app shows the sources while the model is still reading them), iterating it gives
the text pieces as the model writes them, and after the last one `.answer` holds the Answer with
numbered citations, the retrieved-but-uncited sources, citations to sources that do not exist,
sentence support and equation checks. The CLI, the web app, the benchmarks and the pipeline's
evaluation all go through it.

Named sources (`name_sources`): after the answer, the model is asked which source each sentence it
left uncited came from: its own turn is continued at that sentence's end with " [" and it writes
the number. Then attribution: a sentence still without a citation, or citing only sources that
support it clearly less than another one does, gets the number of its best-supporting source appended (the
support check scores every sentence against every source; the source must pass the threshold); a
sentence stating a number its cited sources do not hold also cites the retrieved source that does
(the numbers check looks each number up; `attribute_numbers`). The Answer
keeps what the model wrote (`model_text`) apart from what is shown (`text`), and each citation
says whether the model wrote it, named it when asked, or rqa attributed it.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import re
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from rqa.config import Settings
from rqa.conversation import context_for, searched_text
from rqa.embed import fingerprint
from rqa.search import retrieve
from rqa.equations import EquationCheck, SympyWorker, check_equations
from rqa.errors import QuestionError
from rqa.expand import expand
from rqa.index import Index
from rqa.llm import ChatModel, Models
from rqa.numbers import NumberCheck, check_numbers, distinctive
from rqa.prompt import build_messages, question_block, sanitize
from rqa.support import (SUPPORT_EMBEDDER, Quote, SentenceSupport, answer_sentences, check_support, quote_sentences,
                         supporting_sentences)
from rqa.text import cited_numbers, sentence_spans
from rqa.types import Hit, Sampling

log = logging.getLogger("rqa.answer")

# "The sources do not say", "not mentioned in the provided sources", "cannot be determined from ..."
ABSTAIN_RE = re.compile(r"(sources?|context|documents?|excerpts?|provided (text|information))\s+(do|does|did)\s+not\s+"
                        r"(say|contain|mention|provide|specify|state|include|give)|not (mentioned|stated|specified|"
                        r"provided|given|found) in the (provided )?(sources|context)|cannot be (determined|answered|found)",
                        re.I)


@dataclass
class Citation:
    n: int
    hit: Hit
    # "model": written by the model in its answer; "named": by the model when asked after its answer
    # (name_sources); "attributed": added by rqa (support or numbers check)
    origin: str = "model"
    highlights: list[str] = field(default_factory=list)  # exact sentences of the chunk that support the answer

    def to_json(self) -> dict:
        c = self.hit.chunk
        return {"n": self.n, "chunk_id": c.chunk_id, "paper": c.paper, "title": c.title, "section": c.section,
                "pages": c.pages, "text": c.text, "origin": self.origin, "highlights": self.highlights}

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
    numbers: list[NumberCheck] = field(default_factory=list)  # each number of the answer, looked up in what it cites
    notices: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    model_text: str = ""  # what the model wrote (with the sources it named), before rqa attributed any
    expansion: str = ""  # the passage the search used besides the question (rqa.expand)
    adapter: str | None = None  # the fine-tune's LoRA adapter applied to `model`, if any
    quotes: list[Quote] = field(default_factory=list)  # the cited sources' sentences shown under the answer

    @property
    def quote_text(self) -> str:
        """The quotes as the end of `text` shows them (Markdown block quotes)."""
        return "".join(f'\n\n> "{q.sentence}" [{q.n}]' for q in self.quotes)

    @property
    def body(self) -> str:
        """The answer without its quotes: the model's words with rqa's citations."""
        return self.text.removesuffix(self.quote_text)

    @property
    def abstained(self) -> bool:
        return bool(ABSTAIN_RE.search(self.body))

    def checks(self) -> dict:
        return {
            "invalid_citations": self.invalid_citations,
            "unsupported_sentences": [s.sentence for s in self.support if not s.supported],
            "sentences": [s.to_json() for s in self.support],
            "equations": [e.to_json() for e in self.equations],
            "numbers": [n.to_json() for n in self.numbers],
            "unsourced_numbers": [n.number for n in self.numbers if not n.found],
            "notices": self.notices,
        }

    def to_json(self) -> dict:
        return {"answer": self.text, "model_text": self.model_text, "citations": [c.to_json() for c in self.citations],
                "checks": self.checks(), "uncited": [c.to_json() for c in self.uncited], "model": self.model,
                "adapter": self.adapter, "expansion": self.expansion, "quotes": [q.to_json() for q in self.quotes],
                "timings": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.timings.items()}}


def clean_question(question: str | bytes, max_chars: int) -> tuple[str, list[str]]:
    """Decode, normalise and bound a question; returns it with notices for the user."""
    notices = []
    if isinstance(question, str):
        # Undecodable command-line bytes arrive as lone surrogates (Python's surrogateescape):
        # turn them back into bytes so that they are reported like any invalid UTF-8.
        try:
            question = question.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError:
            question = question.encode("utf-8", errors="replace")
    question = question.decode("utf-8", errors="replace")
    if "\ufffd" in question:
        notices.append("The question contained invalid UTF-8; undecodable bytes were replaced.")
    # control characters (escape codes) and invisible format ones (zero-width spaces, a BOM) are no
    # part of a question: one of only those is empty. The joiners stay: some scripts and emoji need them.
    question = "".join(" " if unicodedata.category(c) == "Cc" else
                       "" if unicodedata.category(c) == "Cf" and c not in "\u200c\u200d" else c for c in question)
    question = re.sub(r"\s+", " ", question).strip()
    if not question:
        raise QuestionError("Please type a question.")
    if len(question) > max_chars:  # refused, not cut: the cut-off part may be what was asked
        raise QuestionError(f"The question is {len(question):,} characters; at most {max_chars:,} are answered. "
                            "Please ask it in fewer words.")
    return question, notices


def cleaned_or_none(question: str, max_chars: int) -> str | None:
    """An earlier question cleaned as clean_question cleans the one asked, its turn-format tokens
    removed (it is echoed in the answer's notices), or None where it could not have been asked."""
    try:
        return " ".join(sanitize(clean_question(question, max_chars)[0]).split()) or None
    except QuestionError:
        return None


class AnswerStream:
    """One question being answered: `hits` now, text pieces by iteration, then `answer`."""

    def __init__(self, question: str, index: Index, models: Models, settings: Settings,
                 sympy: SympyWorker | None = None, sampling: Sampling | None = None, earlier: list[str] = ()):
        """`earlier`: the conversation's questions before this one, oldest first (rqa.conversation)."""
        self.question, self.notices = clean_question(question, settings.max_question_chars)
        self.settings, self.sympy, self.index = settings, sympy, index
        self.sampling = sampling or Sampling(temperature=settings.temperature)  # an API request's, or the app's
        self._t0 = time.perf_counter()
        # what a follow-up leans on, each cleaned as this question was (one line, no control characters);
        # one that could not have been asked here (empty, past the bound) is left out
        cleaned = (cleaned_or_none(q, settings.max_question_chars) for q in earlier)
        self.context = context_for(self.question, [q for q in cleaned if q])
        if self.context:
            self.notices.append("Read as following on from: " + " / ".join(f"\u201c{q}\u201d" for q in self.context))
        searched = searched_text(self.question, self.context)
        # no papers, nothing to expand the question for: the model is not asked at all (below)
        self.expansion, notice = expand(searched, models, settings) if index.manifest.get("documents") \
            else ("", None)
        self.notices += [notice] if notice else []
        expanded = time.perf_counter()
        self.hits: list[Hit] = retrieve(index, searched, settings, expansion=self.expansion)
        self.timings = {"expansion_s": expanded - self._t0, "retrieval_s": time.perf_counter() - expanded}
        self.model = models.for_question(self.question)
        self.prompt_tokens: int | None = None  # counted by the model's tokenizer, where it can say
        if self.hits:
            self._check_fits()
        self.answer: Answer | None = None
        self.finish_reason: str | None = None  # the model's: "stop" or "length", once it has ended
        self.cancelled = threading.Event()  # set by `cancel`: the asker has gone

    @property
    def asked(self) -> str:
        """The question with the earlier ones a follow-up leans on, as the model read them: what a
        rating of the answer is about."""
        return question_block(self.question, self.context) if self.context else self.question

    @functools.cached_property
    def messages(self) -> list[dict]:
        """The chat the model answers: instructions, then the sources and the question."""
        return build_messages(self.question, self.hits, source_chars(self.settings, len(self.hits)),
                              self.settings.grounding, self.settings.answer_style, self.settings.demonstration,
                              self.settings.equation_hint, self.context)

    def _check_fits(self) -> None:
        """The character bound on questions assumes English's three to four characters a token; a
        question of CJK characters, emoji or digits within it can still take the prompt past the
        model's context, which the model refused mid-request. Refused here in one line instead,
        leaving room for the answer."""
        tokens = self.prompt_tokens = self.model.count_tokens(self.messages)
        room = self.settings.n_ctx - self.settings.max_new_tokens
        if tokens is not None and tokens > room:
            raise QuestionError(f"The question is too long for the model: with its sources the prompt takes "
                                f"{tokens:,} tokens, and {room:,} fit. Please ask it in fewer words.",
                                code="context_length_exceeded")

    def __iter__(self) -> Iterator[str]:
        if not self.hits:  # an empty index: nothing to ground an answer in, so the model is not asked
            self.timings.update(first_token_s=time.perf_counter() - self._t0, tokens=0)
            self.timings["total_s"] = self.timings["first_token_s"]
            yield NO_PAPERS
            self.answer = finish(self.question, NO_PAPERS, [], self.model.name, self.settings, self.sympy,
                                 self.notices, self.timings, None, set())
            self.answer.adapter = self.model.adapter_name
            return
        messages = self.messages
        pieces: list[str] = []
        text, looped_at = "", None
        # closed explicitly when the reader stops early (a client gone): the model's lock is released now
        with contextlib.closing(self.model.stream(messages, self.settings.max_new_tokens,
                                                  self.sampling, self.cancelled)) as generated:
            while True:  # not a for loop: the generator's return value says why the model stopped
                try:
                    piece = next(generated)
                except StopIteration as end:
                    self.finish_reason = end.value
                    break
                if not pieces:
                    self.timings["first_token_s"] = time.perf_counter() - self._t0
                pieces.append(piece)
                text += piece
                yield piece
                if (looped_at := repeated_sentence(text)) is not None:
                    self.finish_reason = "stop"  # rqa stopped it, not the token limit
                    break  # greedy decoding that repeats a sentence repeats it to the token limit
        self.timings["total_s"] = time.perf_counter() - self._t0
        self.timings["tokens"] = len(pieces)
        text, named = text[:looped_at].strip(), set()
        if self.settings.name_sources and text:
            text, named = name_sources(self.model, messages, text, len(self.hits))
            self.timings["naming_s"] = time.perf_counter() - self._t0 - self.timings["total_s"]
        self.answer = finish(self.question, text, self.hits, self.model.name, self.settings, self.sympy,
                             self.notices, self.timings, stored_vectors(self.index, self.hits), named)
        self.answer.expansion = self.expansion
        self.answer.adapter = self.model.adapter_name

    def cancel(self) -> None:
        """The asker has gone: if the question still waits for the model (its lock, or a free
        llama-server slot), iteration raises Cancelled at once instead of generating for no one.
        Safe from any thread."""
        self.cancelled.set()

    def run(self) -> Answer:
        """Generate to the end without streaming."""
        for _ in self:
            pass
        return self.answer


# What an empty index answers (every paper removed, or an index built from none); it says the
# sources do not say, so it counts as an abstention, and it says how to add papers.
NO_PAPERS = ("The sources do not say: the index holds no papers. Add papers in the Papers panel, or with "
             "`python -m rqa ingest PAPERS`, then ask again.")

LOOP_MIN_CHARS = 30  # shorter sentences ("See [2].") may fairly recur


def repeated_sentence(text: str) -> int | None:
    """Where the text's last finished sentence starts, when it repeats an earlier one word for word."""
    spans = sentence_spans(text)[:-1]  # the last may be unfinished
    if len(spans) < 2:
        return None
    last = " ".join(text[slice(*spans[-1])].split())
    if len(last) < LOOP_MIN_CHARS:
        return None
    if any(" ".join(text[a:b].split()) == last for a, b in spans[:-1]):
        return spans[-1][0]
    return None


def stored_vectors(index: Index, hits: list[Hit]):
    """The hits' embeddings as the index stores them, for the support check, or None: they serve it
    only when they come from its calibrated embedder (else finish encodes the sources itself)."""
    reuse = hits and hits[0].row >= 0 and (index.embedder == SUPPORT_EMBEDDER or
                                           fingerprint(index.embedder) == fingerprint(SUPPORT_EMBEDDER))
    return index.embeddings[[h.row for h in hits]] if reuse else None


def source_chars(settings: Settings, n_sources: int) -> int:
    """The configured excerpt length, shortened when all of them would not fit the context
    (about 3.2 characters a token; room for the instructions, the question and the answer)."""
    room = (settings.n_ctx - settings.max_new_tokens - 400) * 3.2
    return max(100, min(settings.source_chars, int(room / max(n_sources, 1)) - 80))


def answer_stream(question: str, index: Index, models: Models, settings: Settings,
                  sympy: SympyWorker | None = None, sampling: Sampling | None = None,
                  earlier: list[str] = ()) -> AnswerStream:
    return AnswerStream(question, index, models, settings, sympy, sampling, earlier)


# A URL in any form a Markdown renderer or a browser turns into a link or an image: a scheme (any
# case; its colon and slashes as HTML entities too, with or without their ";"; backslashes, which
# browsers read as slashes), a web scheme without slashes ("http:host.example", which a browser
# reads as absolute), a script, data, file or mail link without "//", a scheme-relative //host or
# \\host, or www.host. URLs hold no blanks, so a text cut at a blank can be cleaned as it streams.
_COLON = r"(?::|&#0*58;?|&#x0*3a;?|&colon;)"
_SLASH = r"(?:/|\\|&#0*47;?|&#x0*2f;?|&sol;)"
_REST = r"[^\s<>()\[\]\"']"
_URL = re.compile(rf"<?(?:\b[a-z][a-z0-9+.-]*{_COLON}{_SLASH}{{2}}{_REST}+"
                  rf"|\b(?:https?|ftp|wss?){_COLON}{_SLASH}?(?:[\w-]+\.)+[\w-]+{_REST}*"
                  rf"|\b(?:javascript|vbscript|mailto|data(?=\S*/)|file(?=\S*/)){_COLON}{_REST}+"
                  rf"|(?<![\w/:\\]){_SLASH}{{2}}(?:[\w-]+\.)+[a-z]{{2,}}{_REST}*|\bwww\.{_REST}+)>?", re.I)
_TRAILING = ".,;:!?'"


def remove_links(text: str, hits: list[Hit]) -> tuple[str, int]:
    """The text with every URL removed but the arXiv pages of the retrieved papers (their own
    metadata): a link a paper's text plants ("see http://.../phish") must not become clickable, nor
    an image load, in the answer. `[text](url)` keeps its text. Returns the text and how many went."""
    arxiv = {h.chunk.arxiv_id for h in hits if h.chunk.arxiv_id}
    removed = 0

    def replace(m: re.Match) -> str:
        nonlocal removed
        url = m.group(0)
        tail = ""
        while url and url[-1] in _TRAILING + ">":  # sentence punctuation after a URL is the sentence's
            url, tail = url[:-1], url[-1] + tail
        plain = html.unescape(url.lstrip("<"))
        own = re.fullmatch(r"https?://arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})(?:v\d+)?(?:\.pdf)?/?", plain, re.I)
        if own and own.group(1) in arxiv:
            return m.group(0)
        removed += 1
        if not re.match(r"[a-z][a-z0-9+.-]*:[/\\]*[\w-]+\.", plain, re.I) and \
                not plain.lower().startswith(("www.", "//", "\\\\", "/\\", "\\/")):
            return f"(link removed){tail.lstrip('>')}"  # a script, data or mail link: no host to name
        host = re.sub(r"^(?:[a-z][a-z0-9+.-]*:)?[/\\]*(?:www\.)?([^/\\?#]*).*$", r"\1", plain, flags=re.I) or "a site"
        return f"(link to {host} removed){tail.lstrip('>')}"

    return _URL.sub(replace, text), removed


def finish(question: str, text: str, hits: list[Hit], model: str, settings: Settings,
           sympy: SympyWorker | None, notices: list[str], timings: dict, source_vectors=None,
           named: set[int] = frozenset()) -> Answer:
    """The Answer to `text`, what the model wrote (`named`: the source numbers it wrote only when
    asked after answering): source lists and links dropped, citations attributed, checks run, the
    cited sources' sentences quoted."""
    sources = [h.chunk.text for h in hits]
    model_text, text = text, drop_source_list(text)
    text, links = remove_links(text, hits)
    if links:
        notices = [*notices, f"{links} link(s) the papers' metadata does not list were removed from the answer."]
    support = check_support(text, sources, SUPPORT_EMBEDDER, settings.support_threshold, source_vectors) \
        if text else []
    shown, attributed = attribute(text, support, len(hits))
    checks = check_numbers(shown, sources, question)
    if settings.attribute_numbers and any(not c.found for c in checks):
        shown, more = attribute_numbers(shown, support, checks, len(hits))
        attributed |= more
        checks = check_numbers(shown, sources, question)
    numbers = cited_numbers(shown)
    citations = [Citation(n, hits[n - 1], "attributed" if n in attributed else "named" if n in named else "model")
                 for n in numbers if 1 <= n <= len(hits)]
    cited = {c.n for c in citations}
    answer = Answer(question=question, text=shown, model=model, citations=citations,
                    uncited=[Citation(n, h) for n, h in enumerate(hits, start=1) if n not in cited],
                    invalid_citations=[n for n in numbers if not 1 <= n <= len(hits)],
                    support=support, notices=list(notices), timings=timings, model_text=model_text)
    for c in citations:
        c.highlights = supporting_sentences(c.hit.chunk.text, [s.sentence for s in support if c.n in cited_numbers(s.sentence)])
    answer.numbers = checks
    if text and sympy is not None:
        answer.equations = check_equations(text, sources, sympy)
    if not model_text:
        answer.notices.append("The model returned an empty answer.")
    # The paper's own sentences for the fact, after the checks: they judge what the model wrote.
    answer.quotes = quote_sentences(question, {c.n: c.hit.chunk.text for c in citations}, settings.quotes, shown,
                                    settings.quote_min_score, settings.quote_answer_weight)
    for q in answer.quotes:
        q.sentence = remove_links(q.sentence, hits)[0]
    answer.text += answer.quote_text
    return answer


NAMING_MIN_WORDS = 4  # "See [2]." or a heading names no claim
# The answer is written and the reader waits for its citations: past this, the rest is attribution's.
# Dev-100 named in 0.6 s at the median, 2.0 s at p90 (docs/BENCHMARKS.md).
NAMING_BUDGET_S = 5.0


def name_sources(model: ChatModel, messages: list[dict], text: str, n_sources: int,
                 budget_s: float = NAMING_BUDGET_S) -> tuple[str, set[int]]:
    """The model's answer with a source number after each sentence it left uncited, written by the
    model: its own turn is continued at the sentence's end with " [" and it writes the number (a
    few tokens; the server and the in-process model still hold the answer's tokens, so only what
    follows is evaluated, unless another question took the model meanwhile).

    Told to cite, the 1.5B writes citations in about half its answers, and every way of making it
    cite while it writes (a grammar, an answer begun with "According to [", a fine-tune at full
    strength) changed what it wrote and cost right answers; asked afterwards, its words are those of
    its greedy answer. Left to attribution: sentences that already cite, short ones, those ending in
    a colon, those saying the sources do not say, a model that cannot continue its turn (a
    chat-completions server) or fails, and any reply that is not a source's number. Nor is the model
    asked while it is busy with other questions (every llama-server slot taken, or the in-process
    model's lock held: the request would wait behind a whole answer) or after `budget_s` seconds.
    Returns the text and the numbers named that the answer did not already cite."""
    claims = drop_source_list(text)  # the answer less a closing source list (finish drops it): a cut at its end
    written, named = set(cited_numbers(claims)), set()
    if n_sources == 0:
        return text, named
    deadline = time.monotonic() + budget_s
    at = 0
    for sentence in answer_sentences(claims):
        found = text.find(sentence, at)
        if found < 0:
            continue
        at = found + len(sentence)
        if cited_numbers(sentence) or len(sentence.split()) < NAMING_MIN_WORDS or ABSTAIN_RE.search(sentence) \
                or sentence.rstrip().endswith(":"):  # a colon opens a list or an equation: not a claim yet
            continue
        end = found + _citation_point(sentence)
        if model.busy or time.monotonic() > deadline:
            break
        try:
            reply = model.complete(messages, text[:end] + " [", 3, ["]"])
        except Exception as e:  # the answer is written and shown: whatever fails here, attribution cites it
            log.warning("naming sources stopped: %s: %s", type(e).__name__, e)
            break
        if reply is None:
            break
        m = re.match(r"\s*(\d+)", reply)
        if m and 1 <= int(m.group(1)) <= n_sources:
            text, cited = _cite(text, found, sentence, int(m.group(1)))
            at += len(cited) - len(sentence.rstrip())
            named.add(int(m.group(1)))
    return text, named - written


# "Sources: [1], [2]." / "The sources are [1] and [3]." closing an answer: a list, not a claim.
SOURCE_LIST_RE = re.compile(r"(?:^|(?<=[.!?\]]))\s*(?:(?:the\s+)?sources?(?:\s+(?:are|used|for this(?: information)?(?: are)?|cited))?\s*:?\s*)"
                            r"(?:\[\d+\](?:\s*(?:,|and)\s*)*)+\.?\s*$", re.I)


def drop_source_list(text: str) -> str:
    """Small models often close with a list of source numbers although told not to; it cites
    nothing in particular, so it is dropped (the model's own text stays in Answer.model_text)."""
    return SOURCE_LIST_RE.sub("", text).rstrip()


# A cited source counts as holding a sentence unless another source supports it by this much more.
ATTRIBUTION_MARGIN = 0.05


def attribute(text: str, support: list[SentenceSupport], n_sources: int) -> tuple[str, set[int]]:
    """Append [n] to each supported sentence whose best-supporting source n it does not cite, when
    the model left it uncited or every source it cites supports it clearly less (by more than
    ATTRIBUTION_MARGIN). Returns the text and the numbers only rqa cited."""
    written = set(cited_numbers(text))
    added: set[int] = set()
    at = 0
    for s in support:
        found = text.find(s.sentence, at)  # in order: a sentence may repeat an earlier one
        if found < 0:
            continue
        at = found
        own = [n for n in cited_numbers(s.sentence) if 1 <= n <= len(s.scores)]
        if s.supported and s.source is not None and 1 <= s.source <= n_sources and s.source not in own and \
                not (own and max(s.scores[n - 1] for n in own) >= s.score - ATTRIBUTION_MARGIN):
            text, s.sentence = _cite(text, at, s.sentence, s.source)
            if s.source not in written:
                added.add(s.source)
        at += len(s.sentence)
    return text, added


def attribute_numbers(text: str, support: list[SentenceSupport], checks: list[NumberCheck],
                      n_sources: int) -> tuple[str, set[int]]:
    """Append [n] to each sentence stating a distinctive number (rqa.numbers.distinctive) that none
    of its cited sources holds and source n does: the source the number came from (of several, the
    one holding most of the sentence's missing numbers, then the first retrieved; again while a
    missing number is held by another). A number no source holds stays flagged. `checks` are
    check_numbers' of `text`, in the order of `support`'s sentences. Returns the text and the
    numbers only rqa cited."""
    written = set(cited_numbers(text))
    added: set[int] = set()
    at, i = 0, 0
    for s in support:
        mine = []
        while i < len(checks) and checks[i].sentence == s.sentence:
            mine.append(checks[i])
            i += 1
        found = text.find(s.sentence, at)
        if found < 0:
            continue
        at = found
        need = [c.held_by for c in mine if not c.found and distinctive(c.number)]
        if any(need) and not [n for n in cited_numbers(s.sentence) if 1 <= n <= n_sources]:
            # It cites nothing itself, so its numbers were looked up in every source the answer cites;
            # once it cites one, only that is: the sources that held its other numbers are cited too.
            need += [[n for n in c.held_by if n in c.sources] for c in mine if c.found]
        while holders := Counter(n for held in need for n in held):
            best = min(holders, key=lambda n: (-holders[n], n))
            text, s.sentence = _cite(text, at, s.sentence, best)
            need = [held for held in need if best not in held]
            if best not in written:
                added.add(best)
        at += len(s.sentence)
    return text, added


def _citation_point(sentence: str) -> int:
    """Where a sentence's citation goes: before its full stop, else at its end."""
    core = sentence.rstrip()
    return len(core) - 1 if core[-1] in ".!?" else len(core)


def _cite(text: str, at: int, sentence: str, n: int) -> tuple[str, str]:
    """text with [n] appended to the sentence that starts at `at` (before its full stop), and the
    sentence as it now reads."""
    core, cut = sentence.rstrip(), _citation_point(sentence)
    marker = f" [{n}]"
    return text[:at + cut] + marker + text[at + cut:], core[:cut] + marker + core[cut:]
