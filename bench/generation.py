"""Generation benchmark on the default model (`model` setting) over the primer index.

1. Time to first token and decode rate through rqa's answer path vs the same prompt through raw
   llama-cpp-python, in the same run on the same loaded model.
2. Peak RSS of `python app.py` (process tree) while it answers.
3. 1 and 8 concurrent chat sessions through gradio_client on loopback, for each engine (in-process
   llama-cpp-python, llama-server): answered/failed, time until each session's sources are shown,
   until its first token (queue wait + expansion + retrieval + prefill) and total, p50/p95; the
   aggregate decode rate; how many sessions saw their first token before any session had finished.
   Peak RSS is of the app's whole process tree (llama-server included).
4. The default model's start: its GGUF header read by gguf's reader and by rqa's, and the time
   until the pool's first model answers, for each engine (the default's adapter applied).
5. A continuation right after a stream cut short (what the answer path does when an answer repeats
   a sentence, then names its sources), on llama-server: the slot named by rqa against the slot
   chosen by the server, in turn on the same questions.

    .venv/bin/python -m bench.generation [--part load] [--engines in-process,server] [--sessions 1,8]
    .venv/bin/python -m bench.generation --part start
    .venv/bin/python -m bench.generation --part continuation
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


import psutil

from bench.common import ROOT, percentile
from rqa.answer import answer_stream
from rqa.config import PRIMER_DIR, Settings
from rqa.collection import ingest_paths
from rqa.search import retrieve
from rqa.index import load_index
from rqa.llm import ModelPool
from rqa.prompt import build_messages
from rqa.types import GREEDY

QUESTIONS = ["Why are dot products scaled in scaled dot-product attention?",
             "How does LoRA initialise its low-rank matrices?",
             "What is the brevity penalty in BLEU?",
             "How does NF4 place its quantization levels?"]
TOKENS = 96


def raw_vs_rqa(settings: Settings) -> None:
    # the answer path's own overhead: query expansion, one more generation, is measured by
    # bench/retrieval.py and bench/answers.py
    settings = dataclasses.replace(settings, expand_tokens=0)
    index = load_index(settings.index_dir)
    pool = ModelPool(settings)
    model = pool.get()
    rows = {"raw": [], "rqa": []}
    for q in QUESTIONS * 2:
        # raw: the exact prompt rqa builds, straight into llama-cpp-python
        hits = retrieve(index, q, settings)
        prompt = model.fmt.render(build_messages(q, hits, settings.source_chars))
        model.llm.reset()  # no KV-cache reuse between the two paths: both pay the full prefill
        t0 = time.perf_counter()
        first, n = None, 0
        for part in model.llm.create_completion(prompt, max_tokens=TOKENS, temperature=0.0, repeat_penalty=1.0,
                                                stop=list(model.fmt.stop), stream=True):
            first = first or time.perf_counter()
            n += 1
        end = time.perf_counter()
        rows["raw"].append((first - t0, (n - 1) / max(end - first, 1e-9), 0.0))
        # rqa: retrieval + prompt + streaming + the same generation (checks excluded from timing);
        # Model.stream starts every prompt from an empty context, as the raw path above did
        t0 = time.perf_counter()
        first, n = None, 0
        stream = answer_stream(q, index, pool, settings)
        for _ in stream:
            first = first or time.perf_counter()
            n += 1
            end = time.perf_counter()
        rows["rqa"].append((first - t0, (n - 1) / max(end - first, 1e-9), stream.timings["retrieval_s"]))
    print("\n### Streaming: rqa vs raw llama-cpp-python (same prompt, same model, 8 questions)\n")
    print("| path | TTFT p50 ms | decode tokens/s (mean) | retrieval ms (mean) |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {percentile([x[0] * 1000 for x in r], 50):.0f} | {sum(x[1] for x in r) / len(r):.1f} | "
              f"{sum(x[2] for x in r) / len(r) * 1000:.1f} |")
    raw_rate = sum(x[1] for x in rows["raw"]) / len(rows["raw"])
    rqa_rate = sum(x[1] for x in rows["rqa"]) / len(rows["rqa"])
    print(f"\nrqa decode rate / raw decode rate = {rqa_rate / raw_rate:.3f}")
    ttft_ratio = percentile([x[0] for x in rows["rqa"]], 50) / (percentile([x[0] for x in rows["raw"]], 50)
                                                                 + sum(x[2] for x in rows["rqa"]) / len(rows["rqa"]))
    print(f"rqa TTFT / (raw prefill + retrieval) = {ttft_ratio:.3f}")


def message_text(message: dict) -> str:
    """A chat message's text: Gradio 6 may send content as a list of typed parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in parts)


def app_under_load(index_dir: Path, sessions: int, engine: str, count_tokens) -> None:
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "RQA_INDEX_DIR": str(index_dir),
           "RQA_DB_PATH": str(tmp / "r.sqlite"), "RQA_RATE_LIMIT_PER_MINUTE": "0",
           "RQA_MAX_NEW_TOKENS": str(TOKENS), "GRADIO_ANALYTICS_ENABLED": "False", "RQA_ENGINE": engine}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    peak = [0]
    stop = threading.Event()

    def sample():
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        results = []

        def session(i: int):
            client = Client(url, verbose=False)
            t0 = time.perf_counter()
            job = client.submit(QUESTIONS[i % len(QUESTIONS)], [], api_name="/ask")
            first = shown = token = None
            while not job.done():
                outputs = job.outputs()
                if first is None and outputs:
                    first = time.perf_counter() - t0
                if shown is None and outputs and "Sources (" in str(outputs[-1][1]):
                    shown = time.perf_counter() - t0  # the retrieved sources are on the page
                if token is None and outputs and not message_text(outputs[-1][0][-1]).startswith("*"):
                    token = time.perf_counter() - t0  # the placeholder notice is in italics
                time.sleep(0.01)
            end = time.perf_counter() - t0
            try:
                out = job.result()
                ok = bool(out[0]) and "failed" not in str(out[0][-1]["content"])
                tokens = count_tokens(message_text(out[0][-1]))
            except Exception:
                ok, tokens = False, 0
            results.append((ok, first or end, shown or end, token or end, end, tokens, t0))

        threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    ok = sum(r[0] for r in results)
    firsts, shown, tokens, totals = ([r[i] for r in results] for i in (1, 2, 3, 4))
    # aggregate decode rate: answer tokens of all sessions over the span from the first session's
    # first token to the last session's end (answers stream while others still prefill)
    start = min(r[6] + r[3] for r in results)
    span = max(r[6] + r[4] for r in results) - start
    first_end = min(r[6] + r[4] for r in results)
    early = sum(r[6] + r[3] < first_end for r in results)
    print(f"| {engine} | {sessions} | {ok} | {len(results) - ok} | {percentile(shown, 50):.1f} | "
          f"{percentile(tokens, 50):.1f} | {percentile(tokens, 95):.1f} | {percentile(totals, 50):.1f} | "
          f"{percentile(totals, 95):.1f} | {sum(r[5] for r in results) / span:.1f} | {early} | {peak[0] / 2**20:.0f} |",
          flush=True)


def continuation_after_cut(settings: Settings, rounds: int = 3) -> None:
    from rqa.remote import RemoteModel

    pool = ModelPool(dataclasses.replace(settings, slots=2), engine="server")
    named = pool.get()
    assert isinstance(named, RemoteModel), "llama-server did not start"
    # the same server; a RemoteModel that did not start it leaves the choice of slot to the server
    chosen = RemoteModel(named.url, named.name, 2, render=named.render, stop=named.stop, trust_env=False)
    index = load_index(settings.index_dir)
    times: dict[str, list[float]] = {"named by rqa": [], "chosen by the server": []}
    try:
        for _ in range(rounds):
            for question in QUESTIONS:
                messages = build_messages(question, retrieve(index, question, settings), settings.source_chars)
                for label, model in (("named by rqa", named), ("chosen by the server", chosen)):
                    stream = model.stream(messages, TOKENS, GREEDY)
                    pieces = [piece for _, piece in zip(range(24), stream)]
                    stream.close()  # cut, as on a repeated sentence
                    text = "".join(pieces)
                    if len(pieces) < 24 or " " not in text:
                        continue  # the answer ended before the cut: nothing to measure
                    start = time.perf_counter()
                    model.complete(messages, text[: text.rfind(" ")] + " [", 3, ["]"])
                    times[label].append(time.perf_counter() - start)
    finally:
        pool.close()
    print(f"\n### A continuation right after a stream cut short (llama-server, 2 slots, {rounds} x "
          f"{len(QUESTIONS)} questions)\n")
    print("| slot | continuations | p50 s | max s | over 1 s (the prompt read again) |\n|---|---|---|---|---|")
    for label, ts in times.items():
        print(f"| {label} | {len(ts)} | {percentile(ts, 50):.2f} | {max(ts):.2f} | {sum(t > 1 for t in ts)} |")


def model_start(settings: Settings) -> None:
    from gguf import GGUFReader

    from rqa.gguf_header import read_header
    from rqa.remote import RemoteModel

    files = ModelPool(settings).files
    read_header(files.q4)  # the file in the page cache for both readers alike
    print(f"\n### The default model's start ({files.q4.name}, adapter {files.adapter.name if files.adapter else 'none'})\n")
    print("| step | seconds (best of 3) |\n|---|---|")
    for label, read in (("gguf's GGUFReader", GGUFReader), ("rqa.gguf_header.read_header", read_header)):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            read(files.q4)
            times.append(time.perf_counter() - t)
        print(f"| {label}: the model's header | {min(times):.2f} |")
    for engine in ("server", "in-process"):
        t = time.perf_counter()
        pool = ModelPool(settings, engine=engine)
        try:
            model = pool.get()
            "".join(model.stream([{"role": "user", "content": "Hi"}], 1, GREEDY))
            ran = "server" if isinstance(model, RemoteModel) else "in-process"  # llama-server may be missing
            print(f"| {engine} ({ran} ran): from the pool's creation to one token | {time.perf_counter() - t:.2f} |")
        finally:
            pool.close()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["all", "streaming", "load", "start", "continuation"], default="all")
    parser.add_argument("--engines", default="in-process,server", help="engines the load part compares")
    parser.add_argument("--sessions", default="1,8", help="concurrent sessions, one row each")
    args = parser.parse_args()
    part = args.part
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(index_dir=Path(tmp) / "index", max_new_tokens=TOKENS, temperature=0.0)
        ingest_paths([PRIMER_DIR], settings, progress=False)
        if part in ("all", "streaming"):
            raw_vs_rqa(settings)
        if part in ("all", "load"):
            from llama_cpp import Llama

            vocab = Llama(model_path=str(ModelPool(settings).files.q4), vocab_only=True, verbose=False)
            count = lambda text: len(vocab.tokenize(text.encode(), add_bos=False))  # noqa: E731
            print(f"\n### The app under concurrent sessions (gradio_client, loopback, {TOKENS} new tokens at most)\n")
            print("| engine | sessions | answered | failed | sources shown p50 s | first token p50 s | p95 s | "
                  "total p50 s | p95 s | aggregate decode tokens/s | first token before any session ended | "
                  "peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
            for n in map(int, args.sessions.split(",")):
                for engine in args.engines.split(","):
                    app_under_load(settings.index_dir, n, engine, count)
        if part in ("all", "start"):
            model_start(settings)
        if part in ("all", "continuation"):
            continuation_after_cut(settings)


if __name__ == "__main__":
    main()
