"""The OpenAI-compatible API, driven by the official `openai` SDK: against the running app on
127.0.0.1, and in-process (scripted model) for keys and the rate limit."""

import json

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rqa.api import add_openai_routes
from rqa.config import Settings
from rqa.collection import Collection, open_index
from rqa.ratelimit import RateLimiter
from rqa.ratings import RatingsDB
from rqa.service import AppState
from tests.conftest import ScriptedModel, ScriptedPool, running_app


@pytest.fixture(scope="module")
def api_app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("api"), RQA_RATE_LIMIT_PER_MINUTE="0") as url:
        yield url


def test_models_and_a_plain_answer(api_app):
    client = openai.OpenAI(base_url=api_app + "/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["rqa"]
    reply = client.chat.completions.create(model="rqa", messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What does LoRA train instead of the full weights?"}])
    assert reply.object == "chat.completion" and reply.choices[0].message.content.strip()
    extra = reply.model_extra["rqa"]
    assert set(extra) >= {"citations", "checks", "uncited", "text"}
    shown = extra["citations"] + extra["uncited"]
    assert shown and {"paper", "title", "section", "pages", "text"} <= set(shown[0])


def test_streamed_answer_ends_with_citations(api_app):
    client = openai.OpenAI(base_url=api_app + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="rqa", stream=True, messages=[
        {"role": "user", "content": [{"type": "text", "text": "How is BM25's term frequency saturated?"}]}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    # the test app's model gets 40 tokens: "length" when they ran out (test_http checks which is which)
    assert text.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "checks" in chunks[-1].model_extra["rqa"]


@pytest.mark.parametrize("body, status, message", [
    ({"model": "rqa"}, 400, "'messages' must be a non-empty array"),
    ({"messages": []}, 400, "'messages' must be a non-empty array"),
    ({"messages": "hi"}, 400, "'messages' must be a non-empty array"),
    ({"messages": [{"content": "no role"}]}, 400, "string 'role'"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "no user message"),
    ({"messages": [{"role": "user", "content": 42}]}, 400, "must be a string"),
    # every message is checked, not only the user's: a role rqa does not know is named, not skipped
    ({"messages": [{"role": "wizard", "content": "x"}, {"role": "user", "content": "q"}]}, 400,
     "message 0: unknown role 'wizard'"),
    ({"messages": [{"role": "assistant", "content": 5}, {"role": "user", "content": "q"}]}, 400,
     "message 0: 'content' must be a string, null or an array"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, 400,
     "content part 0's 'text' must be a string"),
    # an image is refused by name, alone or beside text, rather than dropped unread
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in it?"},
                                                {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "content part 1 is of type 'image_url'; rqa reads text parts only"),
    ({"messages": [{"role": "user", "content": "   "}]}, 400, "type a question"),
    ({"messages": [{"role": "user", "content": "q"}], "stream": "yes"}, 400, "'stream' must be a boolean"),
    ({"messages": [{"role": "user", "content": "x" * 5000}]}, 400, "at most 2,000 are answered"),
    ({"messages": [{"role": "user", "content": "x" * 2_000_000}]}, 413, "request body over"),
])
def test_bad_requests_get_openai_error_objects(api_app, body, status, message):
    client = openai.OpenAI(base_url=api_app + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:  # the SDK's own request path, without its argument checks
        client.post("/chat/completions", cast_to=httpx.Response, body=body)
    assert err.value.status_code == status
    assert message in err.value.body["message"] and err.value.body["type"]


def test_malformed_json_body(api_app):
    r = httpx.post(api_app + "/v1/chat/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


@pytest.fixture
def in_process(shared_index, tmp_path):
    def make(**settings):
        s = Settings.load(index_dir=shared_index.index_dir, **settings)
        app = AppState(settings=s, collection=Collection(s, open_index(s)), models=ScriptedPool(ScriptedModel("Scripted [1].")),
                       db=RatingsDB(tmp_path / "r.sqlite"), limiter=RateLimiter(s.rate_limit_per_minute), sympy=None)
        server = FastAPI()
        add_openai_routes(server, app)
        return TestClient(server)
    return make


def test_wrong_api_keys_are_throttled_per_client(in_process):
    """API keys are secrets like the papers key: past 5 wrong ones a minute, a client waits, even with
    the right key (a guesser learns nothing from trying it then), whatever X-Forwarded-For it forges."""
    http = in_process(api_keys="k1,k2")
    body = {"model": "rqa", "messages": [{"role": "user", "content": "What is BM25?"}]}
    for _ in range(5):
        r = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer guess"})
        assert r.status_code == 401
    r = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer k1"})
    assert r.status_code == 429 and r.json()["error"]["message"].startswith("too many wrong API keys; try again in")
    assert int(r.headers["Retry-After"]) > 0
    other = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer k1",
                                                                   "X-Forwarded-For": "10.0.0.9"})
    assert other.status_code == 429  # an untrusted client's forwarded-for header changes nothing
    assert http.get("/v1/models").status_code == 429


def test_api_keys(in_process):
    http = in_process(api_keys="k1,k2")
    bad = openai.OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=http, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="rqa", messages=[{"role": "user", "content": "What is BM25?"}])
    assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url="http://testserver/v1", api_key="k2", http_client=http)
    reply = good.chat.completions.create(model="rqa", messages=[{"role": "user", "content": "What is BM25?"}])
    assert reply.choices[0].message.content.startswith('Scripted [1].\n\n> "BM25')
    # the prompt's tokens as the model counts them (the scripted one: a word a token); it said 0
    assert reply.usage.prompt_tokens > 50 and reply.usage.completion_tokens == 2
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 2
    # a stream carries the model's words, then the cited sources' sentences quoted under them
    chunks = list(good.chat.completions.create(model="rqa", stream=True,
                                               messages=[{"role": "user", "content": "What is BM25?"}]))
    quotes = chunks[-1].model_extra["rqa"]["quotes"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert quotes and reply.choices[0].message.content.endswith(f'> "{quotes[-1]["sentence"]}" [{quotes[-1]["n"]}]')


def test_api_shares_the_chat_rate_limit(in_process):
    http = in_process(rate_limit_per_minute=2)
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="rqa", messages=[{"role": "user", "content": "What is BM25?"}])
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="rqa", messages=[{"role": "user", "content": "What is BM25?"}])
    assert err.value.status_code == 429 and "questions per minute" in err.value.body["message"]
    assert int(err.value.response.headers["retry-after"]) > 0
    assert json.loads(err.value.response.text)["error"]["code"] == "rate_limit_exceeded"
