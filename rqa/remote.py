"""A model behind HTTP: llama.cpp's llama-server (started by rqa.llama_server, or anyone's) or any
OpenAI-compatible server (vLLM, another llama-server) named by the `llm_url` setting.

It streams like the in-process model (rqa.llm.Model) and satisfies the same ChatModel protocol, so
the answer path does not know which one it reads. Two differences matter to users: questions run
in parallel up to the server's slots, and closing the stream (a client that disconnects) closes
the HTTP response, which makes llama-server cancel the generation and free its slot at once.

On the llama-server rqa started, rqa also chooses the slot of each request (`id_slot`): the idle
one whose last text shares the longest start with the new prompt. llama-server chooses the same
way but only among slots it has already released; a stream rqa cuts short (a sentence repeated) is
still being cancelled there when the answer's naming request arrives, so the server gave that
request another slot, which read the whole prompt again (13.6 s instead of 0.1 s). Named, the slot
makes the server wait for its own cancellation instead.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import httpx

from rqa.errors import Cancelled, ModelError
from rqa.types import Sampling

# A request may wait for a free slot behind other users' answers before its first byte arrives.
READ_TIMEOUT_S = 600.0


@dataclass
class RemoteModel:
    url: str  # the server's base URL, without /v1
    name: str  # what the page and the API name: the GGUF file, or the remote model's id
    slots: int = 1  # questions the server answers at once; past them a question waits
    adapter_name: str | None = None
    # Our own turn format, rendered here and sent to /v1/completions, when we know the GGUF (the
    # server we started): the prompt is then the very text the in-process model reads. None: the
    # server applies its own template to /v1/chat/completions (any OpenAI-compatible server).
    render: Callable[[list[dict]], str] | None = None
    stop: tuple[str, ...] = ()
    model_id: str = ""  # the `model` field sent to a chat-completions server
    api_key: str = ""
    on_failure: Callable[[], str] | None = None  # why the server is gone (the supervisor knows), if it is
    server: object = None  # the rqa.llama_server.LlamaServer child behind `url`, when rqa started it
    trust_env: bool = True  # proxies from the environment; never for rqa's own loopback child
    _in_flight: int = field(default=0, init=False, repr=False)
    _count_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _client: httpx.Client = field(init=False, repr=False)
    _slots: list["_Slot"] = field(init=False, repr=False)
    _slot_freed: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)

    def __post_init__(self):
        self.url = self.url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        # Waiting for a connection is waiting for a slot like any other: as long as a read may take.
        self._client = httpx.Client(headers=headers, trust_env=self.trust_env,
                                    timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_S, pool=READ_TIMEOUT_S),
                                    limits=httpx.Limits(max_connections=None))
        self._slots = [_Slot(i) for i in range(self.slots)]

    @property
    def base(self) -> str:
        """Where requests go: the child's current port when rqa started it (a restart takes a new one)."""
        return self.server.url if self.server is not None else self.url

    @property
    def busy(self) -> bool:
        """Every slot is generating for someone: a new question waits for one."""
        return self._in_flight >= self.slots

    def unreachable(self) -> str:
        """Why the server cannot be reached now, or "" (its model list answers)."""
        try:
            response = self._client.get(self.base + "/v1/models", timeout=5)
            return "" if response.status_code == 200 else f"HTTP {response.status_code}"
        except httpx.TransportError as e:
            return type(e).__name__

    def request(self, messages: list[dict], max_tokens: int, sampling: Sampling) -> tuple[str, dict]:
        # No repeat penalty (llama-server's default is 1.0 too): answers repeat the sources' numbers.
        body = {"max_tokens": max_tokens, "stream": True, **sampling.llama_args()}
        if self.render is None:
            stop = {"stop": list(sampling.stop)} if sampling.stop else {}
            return "/v1/chat/completions", {**body, **stop, "model": self.model_id or self.name, "messages": messages}
        # cache_prompt: each slot keeps the previous prompt's KV cache and evaluates only what differs
        return "/v1/completions", {**body, "prompt": self.render(messages), "stop": [*self.stop, *sampling.stop],
                                   "repeat_penalty": 1.0, "cache_prompt": True}

    def stream(self, messages: list[dict], max_tokens: int, sampling: Sampling,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """See ChatModel.stream. A question waiting for a slot leaves once `cancel` is set; one the
        server is already reading stops at its first token (the consumer then closes this)."""
        path, body = self.request(messages, max_tokens, sampling)
        with self._count_lock:
            self._in_flight += 1
        slot, written, read, finish = None, [], False, None
        try:
            slot = self._take_slot(body, cancel)
            if cancel is not None and cancel.is_set():
                raise Cancelled("the asker has gone")
            # Leaving this `with` early (the consumer closed the generator) closes the connection:
            # llama-server notices and cancels the task.
            with self._client.stream("POST", self.base + path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise ModelError(f"the model server refused the request (HTTP {response.status_code}: "
                                     f"{_error_message(response.text)})")
                read = True
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if not data:  # a keep-alive some OpenAI-compatible proxies send
                        continue
                    if data == "[DONE]":
                        break
                    event = _event(data)
                    if "error" in event:
                        raise ModelError(f"the model server failed mid-answer: {_error_message(data)}")
                    choice = (event.get("choices") or [{}])[0]
                    if not isinstance(choice, dict):
                        raise ModelError(f"the model server sent an event rqa cannot read: {data[:120]}")
                    text = choice.get("text") if self.render else (choice.get("delta") or {}).get("content")
                    finish = choice.get("finish_reason") or finish
                    if text:
                        written.append(text)
                        yield text
            return finish  # "stop" or "length", as the server says
        except httpx.TransportError as e:
            why = (self.on_failure() if self.on_failure else "") or f"{type(e).__name__} from {self.base}"
            raise ModelError(f"the model server stopped answering ({why}); ask again in a moment") from None
        finally:
            if slot is not None:  # a slot is named only with our own prompt (/v1/completions)
                self._give_slot(slot, body["prompt"] + "".join(written) if read else None)
            with self._count_lock:
                self._in_flight -= 1

    def count_tokens(self, messages: list[dict]) -> int | None:
        """The prompt's length in tokens, from llama-server's /tokenize; None where the server
        renders the prompt itself (a chat-completions server) or cannot say."""
        if self.render is None:
            return None
        try:
            response = self._client.post(self.base + "/tokenize", timeout=10,
                                         json={"content": self.render(messages), "add_special": True})
            return len(response.json()["tokens"]) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def complete(self, messages: list[dict], prefix: str, max_tokens: int, stop: list[str]) -> str | None:
        """The model's own turn continued greedily from `prefix`, a few tokens; how the answer path
        asks which source a sentence came from (rqa.answer.name_sources). The slot that wrote the
        answer still holds it (cache_prompt; on rqa's own server the request names that slot), so
        only what follows is evaluated, unless another question took that slot meanwhile.
        None where the server renders the prompt: a chat-completions server cannot continue a turn."""
        if self.render is None:
            return None
        body = {"prompt": self.render(messages) + prefix, "max_tokens": max_tokens, "temperature": 0.0,
                "stop": [*stop, *self.stop], "repeat_penalty": 1.0, "cache_prompt": True}
        with self._count_lock:
            self._in_flight += 1
        slot, held = None, None
        try:
            slot = self._take_slot(body)
            response = self._client.post(self.base + "/v1/completions", json=body)
            if response.status_code != 200:
                raise ModelError(f"the model server refused the request (HTTP {response.status_code}: "
                                 f"{_error_message(response.text)})")
            written = str(response.json()["choices"][0]["text"])
            held = body["prompt"] + written
            return written
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
            raise ModelError(f"the model server gave no continuation ({type(e).__name__} from {self.base})") from None
        finally:
            self._give_slot(slot, held)
            with self._count_lock:
                self._in_flight -= 1

    def _take_slot(self, body: dict, cancel: threading.Event | None = None) -> "_Slot | None":
        """On rqa's own llama-server, the idle slot holding the longest start of this prompt (the
        least recently used among equals), named in the request; waits while every slot is taken,
        as the server's queue would (though not first come, first served), until `cancel` is set.
        Elsewhere None: the server chooses."""
        if self.server is None or "prompt" not in body:
            return None
        deadline = time.monotonic() + READ_TIMEOUT_S
        with self._slot_freed:
            while True:
                if cancel is not None and cancel.is_set():  # before taking a slot, which refreshes its use
                    raise Cancelled("the asker has gone")
                if idle := [s for s in self._slots if not s.taken]:
                    break
                if (left := deadline - time.monotonic()) <= 0:
                    raise ModelError(f"every slot of the model server stayed busy for {READ_TIMEOUT_S:.0f} s; "
                                     "ask again later")
                self._slot_freed.wait(min(left, CANCEL_CHECK_S) if cancel is not None else left)
            slot = max(idle, key=lambda s: (len(os.path.commonprefix([s.text, body["prompt"]])), -s.used))
            slot.taken = True
        body["id_slot"] = slot.id
        return slot

    def _give_slot(self, slot: "_Slot | None", held: str | None) -> None:
        """Free the slot; `held`: the text its cache now holds (None: the server refused or failed
        the request, and what it holds is unknown: the old text stays)."""
        if slot is None:
            return
        with self._slot_freed:
            slot.text = slot.text if held is None else held
            slot.used, slot.taken = time.monotonic(), False
            self._slot_freed.notify()


CANCEL_CHECK_S = 0.1  # how often a question waiting for the model looks whether its asker is still there


@dataclass
class _Slot:
    """What rqa knows of one llama-server slot: what it last read and wrote (its cache)."""
    id: int
    text: str = ""
    used: float = 0.0
    taken: bool = False


def _event(data: str) -> dict:
    """One server-sent event's JSON object; anything else is the server's fault, said in one line."""
    try:
        event = json.loads(data)
    except json.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        raise ModelError(f"the model server sent an event rqa cannot read: {data[:120]}")
    return event


def _error_message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
        return (error.get("message") if isinstance(error, dict) else str(error))[:200]
    except (ValueError, AttributeError, TypeError):
        return text[:200]
