"""The offline teacher: an offline GGUF served by the vendored llama-server (`rqa.llama_server`, the
app's own engine, built by `make install`) on 127.0.0.1, so that the dataset stage writes QA pairs
offline through exactly the client path it uses for Groq or any other endpoint.

One slot: on 2 cores llama-server wrote 7.8 pairs a minute with one slot and 6.6 with four (8 chunks
each; batching buys nothing when the cores are the limit); llama-cpp-python's own server, the teacher
before, wrote 5.4 in the cpu pipeline's run (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from build.generate import TEACHER_PROMPT, ApiGenerator, GenerationFailed, openai_generator
from rqa.config import Settings
from rqa.errors import ServerError
from rqa.llama_server import LlamaServer, find_binary
from rqa.models import offline_model_path

TEACHER = "qwen2.5-coder-1.5b-instruct"


@contextmanager
def local_teacher(model: str = TEACHER, n_ctx: int = 2048) -> Iterator[str]:
    """Serve an offline model (a name in rqa.models or a GGUF path); yields the /v1 base URL once
    the server answers, and stops the server on exit (or when this process dies, however)."""
    path = Path(model) if Path(model).suffix == ".gguf" else offline_model_path(model)
    binary = find_binary(Settings.load().llama_server)
    if binary is None:
        raise GenerationFailed("the offline teacher needs llama-server: build it with `make install`")
    try:
        server = LlamaServer(binary, path, slots=1, n_ctx=n_ctx).start()
    except ServerError as e:
        raise GenerationFailed(f"the teacher server did not start: {e}") from None
    try:
        yield server.url + "/v1"
    finally:
        server.stop()


@contextmanager
def teacher_generator(model: str = TEACHER) -> Iterator[ApiGenerator]:
    """The dataset stage's generator for `--generator teacher`: the offline model served by
    local_teacher, asked with TEACHER_PROMPT (concise answers, 300 tokens at most)."""
    name = Path(model).stem if model.endswith(".gguf") else model
    with local_teacher(model) as base_url:
        generator = openai_generator(base_url, name, prompt=TEACHER_PROMPT, max_tokens=300)
        generator.name = f"teacher:{name}"  # not the server's passing port: cards and rows name the model
        yield generator
