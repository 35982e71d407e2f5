"""QA generators: Groq, any OpenAI-compatible endpoint, and an offline extractive one.

The API generators send the seed's prompt (temperature 0.2, max_tokens 1000) and expect a JSON
object {"question", "answer"}. Retries with exponential backoff on 429, 5xx, timeouts and
connection errors, honouring Retry-After; a reply that is not that JSON raises MalformedReply,
which the dataset stage counts and skips.

The offline generator is extractive: it asks about a named method in the chunk and answers with
the chunk's own sentences. It is deterministic, needs no network and no model, and its answers are
grounded by construction, so the pipeline runs end to end here and in CI. (A local GGUF
generator was not chosen: the only offline model, Gemma 3 270M base, writes unusable QA pairs.)
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from rqa.types import Chunk
from rqa.errors import UserError

SEED_PROMPT = """You write training data for a research assistant. From the context below (an excerpt of
the paper "{title}", section "{section}"), write ONE technical question that references the specific
architectures, methods or quantities in the context, and a detailed answer grounded only in the context.
Use LaTeX between $...$ for equations and cite the context's equations where they apply.
Reply with a JSON object and nothing else: {{"question": "...", "answer": "..."}}

Context:
{text}"""
# The offline teacher is a 1.5B model on a CPU: the same task, asking for the concise answer the app
# wants (the app's answers are one to four sentences), which is also 3-4x fewer tokens to decode.
# Told only "references the specific methods", it wrote half its questions without naming any
# ("What is the maximum value of the effective stepsize?"), which the format filter rightly drops:
# a question must make sense to someone who has not seen the excerpt, as a user's does.
TEACHER_PROMPT = SEED_PROMPT.replace(
    "and a detailed answer grounded only in the context.",
    "and a concise answer (one to three full sentences) that states the facts the question asks for "
    "(numbers, names, equations), grounded only in the context. The question must name the method, "
    "model or paper it asks about by its name, so that it makes sense without the context.")
GROQ_MODEL = "llama-3.3-70b-versatile"


class MalformedReply(ValueError):
    pass


class GenerationFailed(RuntimeError):
    pass


class GenerationStopped(GenerationFailed):
    """No later request can succeed now (the key refused, the model unknown, a rate limit for hours):
    the run stops with what it has, instead of asking for every other chunk in vain."""


# A Retry-After past this (Groq's daily limit sends hours) stops the run: the same command continues.
MAX_RETRY_AFTER_S = 300.0


class Generator(Protocol):
    name: str

    def __call__(self, chunk: Chunk) -> tuple[str, str]: ...


# Models write LaTeX into JSON strings unescaped: "\alpha" is an invalid escape and "\frac" or
# "\beta" silently become a form feed or backspace. Read as LaTeX: a backslash that is no JSON
# escape, or b/f/n/r/t followed by a lower-case letter ("\nabla"; "\nThe" stays a newline).
_LATEX_BACKSLASH = re.compile(r'(?<!\\)\\(?=[bfnrt][a-z]|u(?![0-9a-fA-F]{4})|[^"\\/bfnrtu])')


def _latex_escaped(text: str) -> str:
    return _LATEX_BACKSLASH.sub(r"\\\\", text)


def parse_reply(text: str) -> tuple[str, str]:
    text = (text or "").strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    text = text[start:end + 1] if start >= 0 else text
    try:
        try:
            obj = json.loads(_latex_escaped(text))
        except json.JSONDecodeError:
            obj = json.loads(text)
        question, answer = str(obj["question"]).strip(), str(obj["answer"]).strip()
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise MalformedReply(f"not a {{question, answer}} JSON object: {e}") from None
    if not question or not answer:
        raise MalformedReply("empty question or answer")
    return question, answer


def _retry_after(error) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _retryable(error) -> bool:
    status = getattr(error, "status_code", None)
    if status is not None:
        return status == 429 or status >= 500
    return type(error).__name__ in {"APITimeoutError", "APIConnectionError"}


@dataclass
class ApiGenerator:
    """Chat completions through the groq or openai SDK (same API shape)."""

    client: object
    model: str
    name: str
    max_retries: int = 5
    backoff_s: float = 1.0
    max_tokens: int = 1000
    prompt: str = SEED_PROMPT
    sleep: Callable[[float], None] = time.sleep

    def complete(self, prompt: str) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                reply = self.client.chat.completions.create(
                    model=self.model, temperature=0.2, max_tokens=self.max_tokens,
                    messages=[{"role": "user", "content": prompt}])
                return reply.choices[0].message.content or ""
            except Exception as e:
                status, wait = getattr(e, "status_code", None), _retry_after(e)
                if status in (401, 403, 404):  # every request would be refused alike
                    raise GenerationStopped(f"the endpoint refuses the requests ({type(e).__name__}: {e}); check "
                                            "the API key and --model, then run the same command again") from None
                if wait is not None and wait > MAX_RETRY_AFTER_S:
                    raise GenerationStopped(f"the endpoint asks to wait {wait:,.0f} s (a rate limit); run the same "
                                            "command again later: it continues where this one stopped") from None
                if not _retryable(e) or attempt == self.max_retries:
                    raise GenerationFailed(f"{type(e).__name__}: {e}") from None
                self.sleep(wait or self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    def __call__(self, chunk: Chunk) -> tuple[str, str]:
        return parse_reply(self.complete(self.prompt.format(title=chunk.title, section=chunk.section, text=chunk.text)))


def groq_generator(api_key: str, base_url: str | None = None, model: str = GROQ_MODEL, timeout: float = 60,
                   **kw) -> ApiGenerator:
    import groq

    if not api_key:
        raise GenerationFailed("GROQ_API_KEY is not set")
    client = groq.Groq(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)
    return ApiGenerator(client, model, f"groq:{model}", **kw)


def openai_generator(base_url: str, model: str, api_key: str = "not-needed", timeout: float = 120,
                     **kw) -> ApiGenerator:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0, timeout=timeout)
    return ApiGenerator(client, model, f"openai:{model}@{base_url}", **kw)


def choose_generator(kind: str | None, base_url: str | None = None, model: str | None = None) -> Generator:
    """The generator `build dataset --generator` names, the offline teacher aside (build.teacher):
    by default groq when GROQ_API_KEY is set, else the offline extractive one."""
    kind = kind or ("groq" if os.environ.get("GROQ_API_KEY") else "offline")
    if kind == "groq":
        return groq_generator(os.environ.get("GROQ_API_KEY", ""), base_url=base_url, **({"model": model} if model else {}))
    if kind == "openai":
        if not base_url or not model:
            raise UserError("--generator openai needs --base-url and --model")
        return openai_generator(base_url, model, os.environ.get("OPENAI_API_KEY", ""))
    return ExtractiveGenerator()


# --- offline --------------------------------------------------------------------------------

TERM_RE = re.compile(r"\b([A-Z][a-z]*[A-Z][A-Za-z0-9-]*|[A-Z]{2,}[A-Za-z0-9-]*|[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+)\b")
COMMON = {"We", "The", "In", "This", "Our", "For", "It", "As", "Table", "Figure", "Section", "Appendix", "However"}


def named_terms(text: str) -> list[str]:
    """Method and architecture names: CamelCase, acronyms, Capitalised Multi Words."""
    seen = []
    for m in TERM_RE.finditer(text):
        term = m.group(1).strip("-")
        if term.split()[0] not in COMMON and len(term) >= 3 and term not in seen:
            seen.append(term)
    return seen


@dataclass
class ExtractiveGenerator:
    name: str = "extractive"

    def __call__(self, chunk: Chunk) -> tuple[str, str]:
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", chunk.text) if len(s.strip()) > 40]
        terms = named_terms(chunk.text)
        if not sentences or not terms:
            raise MalformedReply("no named method and sentence to ask about")
        term = max(terms, key=lambda t: (sum(t in s for s in sentences), len(t)))
        best = max(range(len(sentences)), key=lambda i: (term in sentences[i], len(set(sentences[i].split()))))
        answer = " ".join(sentences[best:best + 3])
        question = f"In \"{chunk.title}\", what does the section \"{chunk.section}\" say about {term}?"
        return question, f"{answer} [1]"
