"""An OpenAI-compatible API on the app's own server: `GET /v1/models`, `POST /v1/chat/completions`.

Any OpenAI client (the `openai` SDK, Open WebUI, kotaemon...) can use rqa as its backend. The last
user message is the question; the answer text carries its [n] markers, and the citations (paper,
title, section, pages, chunk text) and checks come in an extra `rqa` field of the response, or of
the last streamed chunk. Same rate limit as the chat; with `RQA_API_KEYS` set, a request needs
`Authorization: Bearer KEY`. Errors are OpenAI-style objects: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from rqa.answer import Answer, QuestionError, answer_stream
from rqa.errors import USER_ERRORS

if TYPE_CHECKING:
    from rqa.web import AppState

MODEL_ID = "rqa"
MAX_BODY_BYTES = 1 << 20


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


def parse_question(body) -> str:
    """The last user message's text; raises ValueError with an OpenAI-style message."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError("each message must be an object with a string 'role'")
    user = [m for m in messages if m["role"] == "user"]
    if not user:
        raise ValueError("'messages' holds no user message to answer")
    content = user[-1].get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        if not all(isinstance(p, dict) for p in content):
            raise ValueError("message content parts must be objects")
        content = " ".join(p["text"] for p in content if p.get("type") == "text" and isinstance(p.get("text"), str))
    if not isinstance(content, str):
        raise ValueError("the user message's 'content' must be a string or an array of text parts")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ValueError("'stream' must be a boolean")
    return content


def extra(answer: Answer) -> dict:
    """What an OpenAI response has no field for. `text` is the answer with the citations rqa
    attributed (a stream carries the model's own text)."""
    return {"citations": [c.to_json() for c in answer.citations], "checks": answer.checks(),
            "uncited": [c.to_json() for c in answer.uncited], "text": answer.text, "model_text": answer.model_text}


def add_openai_routes(server: FastAPI, app: "AppState") -> None:
    from rqa.web import client_id

    keys = {k.strip() for k in app.settings.api_keys.split(",") if k.strip()}

    def check_key(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization", "")
        if keys and (not auth.startswith("Bearer ") or auth[len("Bearer "):].strip() not in keys):
            return error(401, "invalid or missing API key (Authorization: Bearer KEY)", code="invalid_api_key")
        return None

    def admit(request: Request) -> JSONResponse | None:
        if refused := check_key(request):
            return refused
        wait = app.limiter.check(client_id(request, app.settings.trusted_proxies))
        if wait:
            return error(429, f"rate limit: {app.settings.rate_limit_per_minute} questions per minute; retry in "
                         f"{math.ceil(wait)} s", "rate_limit_error", code="rate_limit_exceeded",
                         headers={"Retry-After": str(math.ceil(wait))})
        return None

    @server.get("/v1/models")
    def models(request: Request):
        if refused := check_key(request):
            return refused
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "rqa",
                                            "rqa_model": app.models.files.q4.name}]}

    @server.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return error(413, f"request body over {MAX_BODY_BYTES:,} bytes", code="request_too_large")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return error(400, f"the request body is not valid JSON ({e})")
        try:
            question = parse_question(body)
        except ValueError as e:
            return error(400, str(e), param="messages")
        if len(question) > app.settings.max_question_chars:
            return error(400, f"the question is {len(question):,} characters; at most "
                         f"{app.settings.max_question_chars:,} are answered", param="messages",
                         code="context_length_exceeded")
        if refused := admit(request):
            return refused
        try:
            stream = answer_stream(question, app.index, app.models, app.settings, app.sympy)
        except QuestionError as e:
            return error(400, str(e), param="messages")
        except USER_ERRORS as e:
            return error(500, str(e), "server_error")
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        base = {"id": rid, "created": created, "model": MODEL_ID}
        if body.get("stream"):
            return StreamingResponse(sse(stream, base), media_type="text/event-stream")
        answer = await run_in_threadpool(stream.run)
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": answer.timings.get("tokens", 0),
                          "total_tokens": answer.timings.get("tokens", 0)},
                "rqa": extra(answer)}


def sse(stream, base: dict):
    """Server-sent events, OpenAI's chunk format; a sync generator, so Starlette runs it in a thread."""
    def event(delta: dict, finish: str | None = None, **more) -> str:
        chunk = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    try:
        for piece in stream:
            yield event({"content": piece})
    except Exception as e:  # the stream has started: report in-band, as OpenAI does
        yield f"data: {json.dumps({'error': {'message': f'{type(e).__name__}: {e}', 'type': 'server_error'}})}\n\n"
        return
    yield event({}, "stop", rqa=extra(stream.answer))
    yield "data: [DONE]\n\n"

