"""What the running app shares across sessions, and who may ask: the chat (rqa.web) and the API
(rqa.api) both admit questions through `admit`, so that both refuse the same questions alike."""

from __future__ import annotations

import dataclasses
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from rqa.answer import clean_question
from rqa.collection import Collection
from rqa.config import Settings
from rqa.equations import SympyWorker
from rqa.errors import ModelError, QuestionError
from rqa.index import Index
from rqa.llm import ModelPool, Models
from rqa.models import ADAPTERS
from rqa.ratelimit import RateLimiter
from rqa.ratings import RatingsDB, parse_annotators

LOGIN_FAILURES_PER_MINUTE = 5


@dataclass
class AppState:
    """Loaded once at start. The papers live in `collection`, whose index is replaced when papers
    are added or removed; each question reads it once."""

    settings: Settings
    collection: Collection
    models: Models
    db: RatingsDB
    limiter: RateLimiter
    sympy: SympyWorker | None
    annotators: dict[str, str] = field(default_factory=dict)  # token -> name
    # wrong secrets per client (annotator logins, the papers key, API keys): past 5 a minute, none can be
    # guessed at full speed
    login_failures: RateLimiter = field(default_factory=lambda: RateLimiter(LOGIN_FAILURES_PER_MINUTE))
    notices: list[str] = field(default_factory=list)  # shown at the top of the page

    @property
    def index(self) -> Index:
        return self.collection.index

    @classmethod
    def start(cls, settings: Settings) -> "AppState":
        collection = Collection.open(settings)  # a corrupt index fails first, before minutes of model loading
        notices = list(collection.notices)
        models = ModelPool(settings, engine=settings.engine)
        if settings.hub_repo and not models.files.source.startswith("hub:"):
            notices.append(f"The model repo {settings.hub_repo} could not be reached; serving the offline model "
                           f"{models.files.q4.name} instead.")
        models.get("q4")  # load now: a missing or corrupt model fails at start, not at the first question
        if settings.adapter.lower() == "none" and models.files.source == f"offline:{settings.model}" \
                and settings.model in ADAPTERS:
            notices.append(f"Serving the stock {settings.model} without rqa's fine-tune (adapter setting: none).")
        if settings.expand_tokens:
            try:
                models.expander()
            except ModelError as e:  # the app still answers, from the question alone
                notices.append(f"Query expansion is off ({e}): the search uses the question alone.")
                settings = dataclasses.replace(settings, expand_tokens=0)
        notices += models.notices  # after the expander's load too: its llama-server may have fallen back
        return cls(settings=settings, collection=collection, models=models, db=RatingsDB(settings.db_path),
                   limiter=RateLimiter(settings.rate_limit_per_minute),
                   sympy=SympyWorker(settings.sympy_timeout_s), annotators=parse_annotators(settings.annotators),
                   notices=notices)



def match_secret(app: "AppState", client: str, given: str | None, secrets: Iterable[str]) -> tuple[str | None, float]:
    """(the secret `given` is, or None; seconds this client must wait first, 0.0 when none) for every
    secret the app checks (annotator tokens, the papers key, API keys). Compared in constant time with
    each secret, blanks around `given` ignored; a wrong one is counted in `login_failures`, and past 5
    a minute from one client even the right one waits."""
    if wait := app.login_failures.wait(client):
        return None, wait
    given_bytes, found = (given or "").strip().encode(), None
    for secret in secrets:  # every one compared: the time says nothing of which, or how much, matched
        if hmac.compare_digest(given_bytes, secret.encode()):
            found = secret
    if found is None:
        app.login_failures.record(client)
    return found, 0.0


class Refused(Exception):
    """A question not admitted: `status`, `code` and `retry_after` are what the API answers with."""

    def __init__(self, message: str, status: int, code: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after


def admit(app: AppState, question: str, client: str) -> str:
    """The question as it will be answered, or Refused. Checked before the rate limit (a refused
    question is not charged): empty (nothing but blanks, control or invisible characters) or over
    `max_question_chars`. Invalid UTF-8 is replaced, with a notice, not refused."""
    try:
        cleaned, _ = clean_question(question, app.settings.max_question_chars)
    except QuestionError as e:
        long = len(question) > app.settings.max_question_chars
        raise Refused(str(e), 400, "context_length_exceeded" if long else "invalid_question") from None
    wait = app.limiter.check(client)
    if wait:
        raise Refused(f"Rate limit: {app.settings.rate_limit_per_minute} questions per minute. Please wait "
                      f"{math.ceil(wait)} seconds before asking again.", 429, "rate_limit_exceeded", math.ceil(wait))
    return cleaned


def client_id(request, trusted_proxies: str = "") -> str:
    """Who is asking (a Gradio or Starlette request; None: a call from Python, not over HTTP), as far
    as this server can tell: the connection's own address, unless it is a trusted reverse proxy;
    then the address that proxy put at the end of X-Forwarded-For (a client can only prepend forged
    entries, never replace what its proxy appends)."""
    if request is None:
        return "local"
    host = request.client.host if request.client else ""
    trusted = {p.strip() for p in trusted_proxies.split(",") if p.strip()}
    if host and (host in trusted or "*" in trusted):
        chain = [a.strip() for a in (request.headers.get("x-forwarded-for") or "").split(",") if a.strip()]
        for addr in reversed(chain):
            if addr not in trusted:
                return addr
    return host or "local"
