"""The offline teacher: an offline GGUF served by llama-cpp-python's own OpenAI-compatible server
(`python -m llama_cpp.server`, its [server] extra) on 127.0.0.1, so that the dataset stage writes
QA pairs offline through exactly the client path it uses for Groq or any other endpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from build.generate import TEACHER_PROMPT, ApiGenerator, GenerationFailed, openai_generator
from rqa.models import offline_model_path

TEACHER = "qwen2.5-coder-1.5b-instruct"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies, even by a signal that
    skips our `finally` (a killed dataset stage must not leave a 2 GB server behind)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def local_teacher(model: str = TEACHER, n_ctx: int = 2048, log: Path | None = None,
                  start_timeout_s: float = 180) -> Iterator[str]:
    """Serve an offline model (a name in rqa.models or a GGUF path); yields the /v1 base URL once
    the server answers, and stops the server on exit."""
    path = Path(model) if Path(model).suffix == ".gguf" else offline_model_path(model)
    port = _free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", path.stem,
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
                             "--n_threads", str(os.cpu_count() or 1)],  # the server's default is half the cores
                            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise GenerationFailed(f"the teacher server exited with code {proc.returncode} "
                                       f"(`python -m llama_cpp.server --model {path}`{'; see ' + str(log) if log else ''})")
            try:
                urllib.request.urlopen(base + "/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise GenerationFailed(f"the teacher server did not answer within {start_timeout_s:.0f} s") from None
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()


@contextmanager
def teacher_generator(model: str = TEACHER, log: Path | None = None) -> Iterator[ApiGenerator]:
    """The dataset stage's generator for `--generator teacher`: the offline model served by
    local_teacher, asked with TEACHER_PROMPT (concise answers, 300 tokens at most)."""
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    name = Path(model).stem if model.endswith(".gguf") else model
    with local_teacher(model, log=log) as base_url:
        generator = openai_generator(base_url, name, prompt=TEACHER_PROMPT, max_tokens=300)
        generator.name = f"teacher:{name}"  # not the server's passing port: cards and rows name the model
        yield generator
