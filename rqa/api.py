"""An OpenAI-compatible API on the app's own server: `GET /v1/models` (and `/v1/models/rqa`),
`POST /v1/chat/completions`.

Any OpenAI client (the `openai` SDK, Open WebUI, kotaemon...) can use rqa as its backend. The last
user message is the question; the answer text carries its [n] markers, and the citations (paper,
title, section, pages, chunk text) and checks come in an extra `rqa` field of the response, or of
the last streamed chunk. Same rate limit as the chat; with `RQA_API_KEYS` set, a request needs
`Authorization: Bearer KEY`. Errors are OpenAI-style objects: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from rqa.answer import Answer, answer_stream, remove_links
from rqa.conversation import content_text
from rqa.errors import Cancelled, QuestionError, RequestError
from rqa.service import AppState, Refused, admit, client_id, match_secret
from rqa.types import Sampling

log = logging.getLogger("rqa.api")
MODEL_ID = "rqa"
MAX_BODY_BYTES = 1 << 20


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


# The roles of OpenAI's chat messages ("function" is the older name of "tool"). rqa answers the last
# user message and reads the earlier ones; the others are accepted and not read.
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def parse_question(body) -> tuple[str, list[str]]:
    """The last user message's text, and the earlier user messages' (a follow-up may lean on them,
    rqa.conversation); raises RequestError with an OpenAI-style message."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", param=None)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array")
    texts = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"message {i}: each message must be an object with a string 'role'")
        if m["role"] not in ROLES:
            raise RequestError(f"message {i}: unknown role {m['role'][:40]!r} (one of {', '.join(ROLES)})")
        if m["role"] == "user":
            texts.append(message_text(m.get("content"), i))
        elif not (m.get("content") is None or isinstance(m["content"], str) or
                  isinstance(m["content"], list) and all(isinstance(p, dict) for p in m["content"])):
            raise RequestError(f"message {i}: 'content' must be a string, null or an array of content parts")
    if not texts:
        raise RequestError("'messages' holds no user message to answer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestError("'stream' must be a boolean", param="stream")
    return texts[-1], [t for t in texts[:-1] if t.strip()]


def message_text(content, i: int) -> str:
    """A user message's text: a string, or an array of text parts ({"type": "text", "text": ...},
    rqa.conversation.content_text joins them); anything else, an image among them, is refused by
    name rather than dropped unread."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"message {i}: the user message's 'content' must be a string or an array of text parts")
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise RequestError(f"message {i}: content part {j} must be an object")
        if part.get("type", "text") != "text":
            raise RequestError(f"message {i}: content part {j} is of type {str(part.get('type'))[:40]!r}; "
                               "rqa reads text parts only")
        if not isinstance(part.get("text"), str):
            raise RequestError(f"message {i}: content part {j}'s 'text' must be a string")
    return content_text(content)


def extra(answer: Answer) -> dict:
    """What an OpenAI response has no field for. `text` is the answer with the sources the model named
    after it, the citations rqa attributed and the quoted sentences (a stream carries the model's
    text as it wrote it, then the quotes); `model_text` is the model's, with the sources it named."""
    full = answer.to_json()
    return {"text": full["answer"], **{k: full[k] for k in ("citations", "checks", "uncited", "model_text", "quotes")}}


# OpenAI request fields rqa cannot honour: refused with a 400 rather than silently ignored. Fields
# that change nothing of the answer (user, metadata, store, service_tier...) are accepted and ignored.
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs", "response_format",
               "audio", "modalities", "prediction", "logit_bias", "web_search_options")
OPENAI_DEFAULTS = (None, False, [], {}, "none", "auto", {"type": "text"}, ["text"])  # ["text"]: modalities
MAX_TOKENS_CAP = 1024  # a request may ask for fewer new tokens than the server's setting, or up to this
MAX_STOPS, MAX_STOP_CHARS = 4, 100  # OpenAI's count; a stop string is a marker, not a text
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a str holds them only unpaired


def number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"'{name}' must be a number from {low:g} to {high:g}", name)
    return float(value)


def stop_strings(value) -> tuple[str, ...]:
    """OpenAI's `stop`: null, a string, or an array of up to 4 strings."""
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOPS \
            or not all(isinstance(x, str) and 0 < len(x) <= MAX_STOP_CHARS for x in stops):
        raise RequestError(f"'stop' must be a string or an array of up to {MAX_STOPS} strings, "
                           f"each 1 to {MAX_STOP_CHARS} characters", "stop")
    if any(LONE_SURROGATE.search(x) for x in stops):  # JSON's "\ud800": no UTF-8 encoder takes it
        raise RequestError("'stop' holds a lone surrogate (a \\uD800-\\uDFFF escape without its pair): "
                           "not valid Unicode", "stop")
    return tuple(dict.fromkeys(stops))



def generation_settings(body: dict, settings) -> tuple:
    """The server's settings with the request's `max_tokens` / `max_completion_tokens` applied, and
    how the answer's tokens are drawn (`temperature`, `top_p`, `seed`, the two penalties, `stop`);
    raises RequestError for what is out of range or not supported."""
    for name in UNSUPPORTED:
        if body.get(name) not in OPENAI_DEFAULTS:
            raise RequestError(f"'{name}' is not supported by rqa: it answers from the papers with text only", name)
    n = body.get("n")
    if n is not None and (n != 1 or isinstance(n, bool)):
        raise RequestError("'n' must be 1: rqa writes one answer per question", "n")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not body.get("stream")
                                or not isinstance(options.get("include_usage", False), bool)):
        raise RequestError("'stream_options' is allowed only with 'stream': true, as an object whose "
                           "'include_usage' is a boolean", "stream_options")
    changes = {}
    for name in ("max_tokens", "max_completion_tokens"):  # each checked; the newer name wins where both are sent
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS_CAP:
            raise RequestError(f"'{name}' must be an integer from 1 to {MAX_TOKENS_CAP}", name)
        changes["max_new_tokens"] = min(value, settings.n_ctx - 256)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not -2**63 <= seed < 2**63):
        raise RequestError("'seed' must be an integer (64-bit)", "seed")
    sampling = Sampling(temperature=settings.temperature if (t := number(body, "temperature", 0, 2)) is None else t,
                        top_p=number(body, "top_p", 0, 1),
                        seed=None if seed is None else seed % (2**32 - 1),  # llama.cpp's seeds; 2^32 - 1 means random
                        presence_penalty=number(body, "presence_penalty", -2, 2) or 0.0,
                        frequency_penalty=number(body, "frequency_penalty", -2, 2) or 0.0,
                        stop=stop_strings(body.get("stop")))
    if sampling.stop:  # OpenAI's text never holds a stop string: nothing is written after the model's
        changes.update(name_sources=False, quotes=0)
    return (dataclasses.replace(settings, **changes) if changes else settings), sampling


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None past `limit` bytes: refused on its Content-Length when it states one,
    else read no further than the limit (a large body never lands in memory whole)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def add_openai_routes(server: FastAPI, app: AppState) -> None:
    # One function: the routes close over the keys and the in-flight semaphore, and `chat`
    # is the order of a request's checks (key, size, JSON, fields, slot, admission), best read in one piece.
    keys = {k.strip() for k in app.settings.api_keys.split(",") if k.strip()}
    in_flight = threading.BoundedSemaphore(app.settings.api_max_in_flight)

    def check_key(request: Request) -> JSONResponse | None:
        """None when the request may go on. Keys are secrets, so they are compared in constant time
        and wrong ones throttled per client, as the papers key and annotator logins are."""
        if not keys:
            return None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        # the scheme is case-insensitive (RFC 7235); any other counts as a wrong key
        matched, wait = match_secret(app, client_id(request, app.settings.trusted_proxies),
                                     key if scheme.lower() == "bearer" else "", keys)
        if wait:
            return error(429, f"too many wrong API keys; try again in {math.ceil(wait)} seconds",
                         code="rate_limit_exceeded", headers={"Retry-After": str(math.ceil(wait))})
        if matched is None:
            return error(401, "invalid or missing API key (Authorization: Bearer KEY)", code="invalid_api_key")
        return None

    def model_entry() -> dict:
        return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "rqa", "rqa_model": app.models.files.q4.name,
                "rqa_adapter": app.models.files.adapter.name if app.models.files.adapter else None}

    @server.get("/v1/models")
    def models(request: Request):
        if refused := check_key(request):
            return refused
        return {"object": "list", "data": [model_entry()]}

    @server.get("/v1/models/{model_id:path}")
    def model(model_id: str, request: Request):  # the OpenAI client's models.retrieve
        if refused := check_key(request):
            return refused
        if model_id != MODEL_ID:
            return error(404, f"The model '{model_id}' does not exist (this server serves '{MODEL_ID}')",
                         param="model", code="model_not_found")
        return model_entry()

    @server.post("/v1/chat/completions")
    async def chat(request: Request):
        if refused := check_key(request):
            return refused
        raw = await read_body(request, MAX_BODY_BYTES)
        if raw is None:
            return error(413, f"request body over {MAX_BODY_BYTES:,} bytes", code="request_too_large")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, 100,000-deep nesting, 5,000-digit integers
            reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            return error(400, f"the request body is not valid JSON ({reason})")
        try:
            question, earlier = parse_question(body)
            settings, sampling = generation_settings(body, app.settings)
        except RequestError as e:
            return error(400, str(e), param=e.param)
        if not in_flight.acquire(blocking=False):  # before the rate limit: a refused question is not charged
            return error(503, f"the server is answering {app.settings.api_max_in_flight} API questions; retry shortly",
                         "server_error", code="overloaded", headers={"Retry-After": "10"})
        release = release_once(in_flight)
        client = client_id(request, app.settings.trusted_proxies)
        try:
            question = admit(app, question, client)
        except Refused as e:
            release()
            return error(e.status, str(e), "rate_limit_error" if e.status == 429 else "invalid_request_error",
                         param="messages" if e.status == 400 else None, code=e.code,
                         headers={"Retry-After": str(e.retry_after)} if e.retry_after else None)
        try:
            # expansion, retrieval and a first embedder load block for seconds: never on the event loop
            stream = await run_in_threadpool(answer_stream, question, app.index, app.models, settings, app.sympy,
                                             sampling, earlier)
        except QuestionError as e:
            release()
            app.limiter.forget(client)
            return error(400, str(e), param="messages", code=e.code)
        except Exception:
            release()
            log.exception("API question failed before generation")
            return error(500, "the server could not answer this question (its log says why)", "server_error")
        except BaseException:
            release()
            raise
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {"id": rid, "created": created, "model": MODEL_ID}
        generation = Generation(stream, release)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return ReleasingStream(sse(generation, base, request, include_usage), generation.close,
                                   media_type="text/event-stream")
        try:
            answer = await answered(generation, request)
        except Exception:
            log.exception("API question failed during generation")
            return error(500, "the server could not answer this question (its log says why)", "server_error")
        finally:
            generation.close()
        if answer is None:  # the client has gone: no one to answer
            return Response(status_code=499)
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": cut_at(answer.text, sampling.stop)},
                             "finish_reason": finish_reason(stream)}],
                "usage": usage(stream, answer),
                "rqa": extra(answer)}

    # Any other /v1 address answers as OpenAI does, with an error object: Gradio, mounted at "/",
    # would answer it with its own page or a bare {"detail": "Not Found"}.
    @server.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown(rest: str, request: Request):
        known = {"models": "GET", "chat/completions": "POST"}
        if rest in known:
            return error(405, f"{request.method} is not allowed on /v1/{rest}; use {known[rest]}",
                         headers={"Allow": known[rest]})
        return error(404, f"Unknown request URL: {request.method} /v1/{rest}. This server offers GET /v1/models, "
                          "GET /v1/models/{model} and POST /v1/chat/completions", code="unknown_url")


END, GONE = object(), object()  # what Generation.next returns after the last piece, and once the client has gone


class Generation:
    """One API answer's pieces, each generated in a worker thread, for a client that may leave.
    Its API place is released when the model is done with it, not before: a worker still inside
    the answer (llama-server reading the prompt) is let finish its step first."""

    def __init__(self, stream, release):
        self.stream, self.release = stream, release
        self.pieces = iter(stream)
        self.pending: asyncio.Future | None = None  # the worker's call, while one runs
        self.closed = False

    async def next(self, request: Request | None = None):
        """The next piece, END, or GONE once `request`'s client has disconnected (looked at while
        the worker runs). Either way the client's leaving cancels the answer: a question still
        waiting for the model (its lock, a llama-server slot) leaves the queue at once, instead of
        keeping its place, and being read by the model, until a first token no one receives."""
        self.pending = asyncio.ensure_future(run_in_threadpool(next, self.pieces, END))
        try:
            while True:
                done, _ = await asyncio.wait({self.pending}, timeout=CLIENT_CHECK_S)
                if request is not None and await request.is_disconnected():
                    self.stream.cancel()
                    return GONE
                if done:
                    return self.pending.result()
        except asyncio.CancelledError:  # the event stream's client has gone (Starlette cancels the body)
            self.stream.cancel()
            raise

    def close(self) -> None:
        """Close the answer (freeing the model at once) and release the API place: now, or when
        the worker still inside the answer leaves it. Safe to call more than once."""
        if self.closed:
            return
        self.closed = True

        def closed(call: asyncio.Future | None = None) -> None:
            if call is not None and not call.cancelled() and call.exception() is not None \
                    and not isinstance(call.exception(), Cancelled):
                log.warning("an API answer failed after its response had ended: %s", call.exception())
            try:
                self.pieces.close()
            finally:
                self.release()
        if self.pending is not None and not self.pending.done():
            self.stream.cancel()  # whatever ends the response early: a question still queued leaves the queue
            self.pending.add_done_callback(closed)
        else:
            if self.pending is not None and not self.pending.cancelled():
                self.pending.exception()  # retrieved (a piece dropped when the client went): not logged as lost
            closed()


CLIENT_CHECK_S = 0.25  # how often a waiting API request looks whether its client is still there


async def answered(generation: Generation, request: Request) -> Answer | None:
    """The whole answer; None when the client disconnects first: the generation is then cancelled
    or closed, which frees the model (or llama-server's slot) at once, instead of running to the
    token limit for no one while it holds one of the API's places."""
    while (piece := await generation.next(request)) is not END:
        if piece is GONE:
            return None
    return generation.stream.answer


def usage(stream, answer: Answer) -> dict:
    """OpenAI's token counts. The prompt's were counted before the model was asked (a
    chat-completions server behind rqa cannot say: 0 there); without papers no prompt was read."""
    prompt = stream.prompt_tokens or 0
    completion = answer.timings.get("tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def cut_at(text: str, stops: tuple[str, ...]) -> str:
    """The text before its first stop string: the model stopped there, but rqa's attribution may
    have written a citation marker that holds one."""
    return text[:min([text.find(s) for s in stops if s in text], default=len(text))]


def finish_reason(stream) -> str:
    """OpenAI's: "length" when the model says the token limit stopped it, "stop" otherwise."""
    return "length" if stream.finish_reason == "length" else "stop"


def release_once(semaphore: threading.BoundedSemaphore):
    """A release that may be called on every exit path and releases exactly once."""
    lock, done = threading.Lock(), [False]

    def release() -> None:
        with lock:
            if not done[0]:
                done[0] = True
                semaphore.release()
    return release


class ReleasingStream(StreamingResponse):
    """A stream that closes its body and frees its slot however the response ends: a client that
    disconnects before the first chunk leaves the body generator unstarted, so its own `finally`
    never runs, and one that stops reading leaves it suspended until the garbage collector."""

    def __init__(self, content, close, **kwargs):
        super().__init__(content, **kwargs)
        self.close = close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self.close()


async def sse(generation: Generation, base: dict, request: Request | None = None, include_usage: bool = False):
    """Server-sent events, OpenAI's chunk format. Each piece is generated in a worker thread; when
    the client goes, the `finally` closes the answer's generator, which releases the model at once.
    What is sent is the answer with links removed (rqa.answer.remove_links): text before its last
    blank is final, since a URL holds no blank, so only the last word waits for the next piece.
    `include_usage` (OpenAI's stream_options): every chunk says "usage": null, and one more chunk,
    with no choices, carries the token counts before [DONE]."""
    def event(delta: dict, finish: str | None = None, **more) -> str:
        chunk = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(chunk | ({'usage': None} if include_usage else {}), ensure_ascii=False)}\n\n"

    stream = generation.stream
    written, settled, sent = "", "", ""
    try:
        yield event({"role": "assistant", "content": ""})
        while True:
            try:
                # `request` watched too: Starlette cancels the body when the client goes only under
                # ASGI servers older than spec 2.4 (uvicorn says 2.3); newer ones tell it at a write
                piece = await generation.next(request)
            except Exception:  # the stream has started: report in-band, as OpenAI does
                log.exception("API stream failed")
                yield f"data: {json.dumps({'error': {'message': 'the server could not finish this answer (its log says why)', 'type': 'server_error'}})}\n\n"
                return
            if piece is GONE:
                return
            written += "" if piece is END else piece
            # up to the last blank, not with it: the answer's end is stripped, as the plain response's is
            final = written.rstrip() if piece is END else written[:max(written.rfind(" "), written.rfind("\n"), 0)]
            if len(final) > len(settled):  # cleaned again only when a word has been completed
                settled = final
                clean = remove_links(final, stream.hits)[0]
                if clean.startswith(sent) and len(clean) > len(sent):
                    yield event({"content": clean[len(sent):]})
                    sent = clean
            if piece is END:
                break
        if stream.answer.quote_text:  # the sources' sentences come after the model's last word
            yield event({"content": stream.answer.quote_text})
        yield event({}, finish_reason(stream), rqa=extra(stream.answer))
        if include_usage:
            last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage(stream, stream.answer)}
            yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        generation.close()
