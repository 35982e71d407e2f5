"""llama.cpp's own server (`llama-server`) as a supervised child process of the app.

Why: llama-cpp-python runs one generation at a time per loaded model, so concurrent users queue
behind a lock. llama-server answers several at once (parallel slots, continuous batching), keeps
each slot's prompt cache, cancels a generation when its client disconnects, and is built at
install with runtime CPU dispatch (each machine loads its best kernels; the wheel is an AVX2 floor).

The child listens on loopback only, dies with the app (SIGKILL as the parent-death signal on Linux,
and a SIGTERM at exit), and is restarted when it crashes; the crash is logged and named to the user
whose answer it cut.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from rqa.errors import ServerError

log = logging.getLogger("rqa.llama_server")

START_TIMEOUT_S = 300.0  # loading a 1 GB model from a cold disk
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


def find_binary(configured: str = "") -> Path | None:
    """The `llama_server` setting, else the one `make install` builds into the virtual
    environment, else one on PATH."""
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    built = Path(sys.prefix) / "llama-server" / "llama-server"
    if built.is_file():
        return built
    found = shutil.which("llama-server")
    return Path(found) if found else None


# Resolved here, once: the child between fork and exec must not load a library (in a threaded
# parent that can deadlock on the loader's lock).
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # SIGKILL, not SIGTERM: after a SIGTERM llama-server's graceful shutdown sometimes hangs (seen
    # 2 of 3 times under the test suite), and an orphan then holds the model's memory and its port.
    # Its KV cache is all it would lose. (`stop`, the app's own way out, still asks first.)
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One llama-server child serving one GGUF (and adapter) on 127.0.0.1:`port`."""

    def __init__(self, binary: Path, model: Path, adapter: Path | None = None, slots: int = 4,
                 n_ctx: int = 2048, threads: int = 0, adapter_scale: float = 1.0):
        self.binary, self.model, self.adapter, self.slots = Path(binary), Path(model), adapter, slots
        self._take_port()
        threads = threads or os.cpu_count() or 1
        # -c is the context of all slots together: each slot gets n_ctx, as in-process.
        self.args = [str(self.binary), "--model", str(model), "--host", "127.0.0.1",
                     "--ctx-size", str(n_ctx * slots), "--parallel", str(slots), "--threads", str(threads),
                     "--threads-batch", str(threads), "--flash-attn", "on", "--no-webui", "--slots"]
        if adapter:  # FNAME:SCALE, a comma-separated list to llama-server
            if set(str(adapter)) & {":", ","}:
                raise ServerError(f"llama-server cannot read a scaled adapter whose path holds ':' or ',' ({adapter})")
            self.args += ["--lora-scaled", f"{adapter}:{adapter_scale}"]
        self.crashes = 0
        self.last_crash = ""
        self._proc: subprocess.Popen | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=30)
        self._ready = threading.Event()
        self._started = threading.Event()
        self._start_error: ServerError | None = None
        self._stopping = False

    def _take_port(self) -> None:
        """A free port, taken at the start and again before each restart: once the child is gone
        its port is free for any process to take, and a restart bound to it would fail for ever (or
        reach that process). Clients read `url` at each request (rqa.remote)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "LlamaServer":
        """Start the child and wait until it answers /health; ServerError (with the end of its log)
        if it cannot start. Every spawn happens on the supervising thread: the kernel's parent-death
        signal follows the thread that forked, so a request thread must never be the parent."""
        threading.Thread(target=self._supervise, name=f"llama-server:{self.port}", daemon=True).start()
        self._started.wait()
        if self._start_error:
            raise self._start_error
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def status(self) -> str:
        """Why answers are failing right now, or "" when the server is up."""
        proc = self._proc
        if proc is not None:
            # Called when a request failed: the dropped connection may come before the supervising
            # thread has reaped the child (and holds its lock meanwhile), so give it a moment.
            try:
                return f"llama-server exited with code {proc.wait(timeout=2)}; it is being restarted"
            except subprocess.TimeoutExpired:
                pass
        if self._ready.is_set():
            return ""
        return f"{self.last_crash or 'llama-server is not running'}; it is being restarted"

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    # --- the supervising thread ----------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            self._run()
        finally:  # whatever happened, start() must not wait for ever
            if not self._started.is_set() and self._start_error is None:
                self._start_error = ServerError("llama-server's supervisor stopped (the log says why)")
            self._started.set()

    def _run(self) -> None:
        while not self._stopping:
            try:
                proc = self._spawn()
                self._wait_healthy(proc)
            except Exception as e:  # noqa: BLE001 (a supervisor that dies would leave the app waiting)
                error = e if isinstance(e, ServerError) else ServerError(f"llama-server: {type(e).__name__}: {e}")
                if not self._started.is_set():  # the first start: start() reports it
                    self._start_error = error
                    return
                self.crashes += 1
                log.error("llama-server could not be restarted: %s", error)
                self._backoff()
                continue
            self._ready.set()
            self._started.set()
            code = proc.wait()
            self._ready.clear()
            if self._stopping:
                return
            self.crashes += 1
            self.last_crash = f"llama-server exited with code {code}"
            log.error("%s (crash %d); restarting. Its last lines:\n%s", self.last_crash, self.crashes,
                      "\n".join(self._log_tail))
            self._backoff()

    def _backoff(self) -> None:  # after the crashes-th failure (1, 2, ...)
        time.sleep(RESTART_BACKOFF_S[min(self.crashes, len(RESTART_BACKOFF_S)) - 1])
        self._take_port()

    def _spawn(self) -> subprocess.Popen:
        # the CPU-variant kernels (libggml-cpu-*.so) and shared libraries sit beside the binary
        env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (str(self.binary.parent), os.environ.get("LD_LIBRARY_PATH", "")) if p)}
        try:
            proc = subprocess.Popen([*self.args, "--port", str(self.port)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, text=True, errors="replace",
                                    preexec_fn=_die_with_parent if _PRCTL else None)
        except OSError as e:
            raise ServerError(f"cannot start llama-server ({e.strerror}); rebuild it with `make install`, "
                             "or set RQA_ENGINE=in-process") from None
        self._proc = proc
        threading.Thread(target=self._read_log, args=(proc,), daemon=True).start()
        return proc

    def _read_log(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self._log_tail.append(line.rstrip())
            log.debug("%s", line.rstrip())

    def _wait_healthy(self, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                time.sleep(0.2)  # let the log reader catch the last lines
                tail = " | ".join(line for line in list(self._log_tail)[-3:] if line)
                raise ServerError(f"llama-server exited at start (code {proc.returncode}): {tail[-300:]}")
            try:  # never through a proxy the environment names: this is our own loopback child
                if httpx.get(self.url + "/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        proc.kill()
        proc.wait()
        raise ServerError(f"llama-server did not become ready in {START_TIMEOUT_S:.0f} s")
