"""The answer benchmark: what a researcher reads, measured over ../shared/eval/dev.jsonl.

Every candidate model answers every question through `answer_stream` (the app's own path: same
retrieval, prompt, decoding, attribution and checks) over an index of the shared corpus. Each model
runs in its own process, so its peak RSS is its own. Metrics as ../shared/eval/README.md defines
them (rqa.metrics): fact accuracy and recall, answers citing, citation precision, evidence cited,
abstention; over the equation questions, the share whose answer holds an equation the app's check
verifies against a source, and one SymPy finds equal to the reference `latex`; plus time to first
token p50, decode tokens/s and peak RSS (of the benchmark's own process: with the app's engine,
llama-server, the model lives in a child not counted there). The model generates as in the app: on llama-server, or in-process with `--setting engine=in-process`.

    .venv/bin/python -m rqa ingest ../shared/corpus/papers --index .rqa/corpus
    .venv/bin/python -m bench.answers --index .rqa/corpus \
        --models qwen2.5-coder-1.5b-instruct,qwen2.5-coder-0.5b-instruct [--source-chars 700] [--k 5] \
        [--expand-tokens 0,32]

`--expand-tokens 0,32` runs every model on the question alone (the default) and with 32 tokens of
query expansion (rqa.expand).

`--answers FILE.jsonl` keeps every answer for reading; `--set FILE.jsonl` runs another question set.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


from bench.common import DEV, percentile
from rqa.config import Settings

# model_citing: the model's own citations, in its answer or named after it; model_citing_in_answer: in its answer
COLUMNS = ["fact_accuracy", "fact_accuracy_model", "fact_recall", "answers_citing", "model_citing",
           "model_citing_in_answer", "citation_precision", "evidence_cited", "abstention", "unsourced_numbers",
           "equations_verified", "equations_reference", "ttft_p50_s", "decode_tok_s", "naming_p50_s", "words", "peak_rss_mb"]


def run_one(args) -> dict:
    from rqa.answer import answer_stream
    from rqa.equations import SympyWorker, equals_reference
    from rqa.index import load_index
    from rqa.llm import ModelPool
    from rqa.metrics import score_answer, summarize_answers

    model = args.one
    overrides = {"model_path": model} if model.endswith(".gguf") else {"model": model}
    extra = dict(kv.split("=", 1) for kv in args.setting)
    settings = Settings.load(index_dir=args.index, source_chars=args.source_chars, k=args.k, **extra,
                             max_new_tokens=args.max_new_tokens, expand_tokens=int(args.expand_tokens),
                             expand_with=args.expand_with, **overrides)
    index = load_index(settings.index_dir, settings.embedder)
    pool = ModelPool(settings, engine=settings.engine)  # the app's: llama-server unless --setting engine=in-process
    pool.get()
    if settings.expand_tokens:
        pool.expander()  # loaded before the first question, as the app does at start
    questions = [json.loads(line) for line in Path(args.set).read_text().splitlines() if line.strip()][: args.limit]
    sympy = SympyWorker(settings.sympy_timeout_s)
    rows, ttft, rates, words, model_citing, in_answer, naming = [], [], [], [], [], [], []
    out = open(args.answers, "a", encoding="utf-8") if args.answers else None
    try:
        for q in questions:
            stream = answer_stream(q["question"], index, pool, settings, sympy)
            answer = stream.run()
            t = answer.timings
            ttft.append(t.get("first_token_s") or t["total_s"])
            if t.get("tokens", 0) > 1:
                rates.append((t["tokens"] - 1) / max(t["total_s"] - t["first_token_s"], 1e-9))
            words.append(len(answer.text.split()))
            # the model's own citations: written in its answer, or named when asked after it (rqa.answer.name_sources)
            model_citing.append(any(c.origin in ("model", "named") for c in answer.citations))
            in_answer.append(any(c.origin == "model" for c in answer.citations))
            if "naming_s" in t:
                naming.append(t["naming_s"])
            row = score_answer(q, answer)
            if q.get("type") == "equation":  # an equation the app's check verifies; one equal to the reference
                row["equation_verified"] = any(e.status == "matches source" for e in answer.equations)
                row["equation_reference"] = equals_reference(answer.body, q["latex"], sympy)  # not the quotes'
            rows.append(row)
            if out:
                out.write(json.dumps({"model": model, "expand_tokens": settings.expand_tokens, "id": q["id"],
                                      "question": q["question"], "facts": q.get("facts"),
                                      "answer": answer.text, "body": answer.body, "model_text": answer.model_text,
                                      **row,
                                      "equations": [e.to_json() for e in answer.equations],
                                      "expansion": answer.expansion, "ttft_s": round(ttft[-1], 2),
                                      "naming_s": round(t.get("naming_s", 0.0), 2),
                                      "named": [c.n for c in answer.citations if c.origin == "named"],
                                      "cited": [{"n": c.n, "paper": c.hit.chunk.paper, "text": c.hit.chunk.text}
                                                for c in answer.citations]},
                                     ensure_ascii=False) + "\n")
                out.flush()
            print(f"{q['id']}: correct={row['correct']} cites={row['cites']} ttft={ttft[-1]:.1f}s", file=sys.stderr)
    finally:
        sympy.close()
        pool.close()
        if out:
            out.close()
    summary = summarize_answers(rows)
    eq = [r for r in rows if "equation_verified" in r]
    summary.update(equations_verified=sum(r["equation_verified"] for r in eq) / len(eq) if eq else None,
                   equations_reference=sum(r["equation_reference"] for r in eq) / len(eq) if eq else None)
    summary.update(model_citing=sum(model_citing) / max(len(rows), 1),
                   model_citing_in_answer=sum(in_answer) / max(len(rows), 1),
                   naming_p50_s=percentile(naming, 50) if naming else None, ttft_p50_s=percentile(ttft, 50),
                   decode_tok_s=sum(rates) / max(len(rates), 1), words=sum(words) / max(len(words), 1),
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True)
    p.add_argument("--models", default="qwen2.5-coder-1.5b-instruct")
    p.add_argument("--set", default=str(DEV))
    p.add_argument("--source-chars", type=int, default=Settings().source_chars, help="default: the app's")
    p.add_argument("--k", type=int, default=Settings().k, help="sources shown; default: the app's")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--limit", type=int)
    p.add_argument("--answers", help="append every answer to this JSONL file")
    p.add_argument("--expand-tokens", default=str(Settings().expand_tokens),
                   help="comma-separated; 0: the question alone; default: the app's")
    p.add_argument("--expand-with", help="model writing the expansion (default: the offline default model)")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="any other rqa setting, e.g. --setting grounding=sentences --setting answer_style=quote")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)))
        return
    results = {}
    for model, tokens in [(m, t) for m in args.models.split(",") for t in args.expand_tokens.split(",")]:
        label = f"{model}, " + (f"expansion {tokens} tokens" if int(tokens) else "question alone")
        cmd = [sys.executable, "-m", "bench.answers", "--one", model, "--expand-tokens", tokens, "--index", args.index,
               "--set", args.set,
               "--source-chars", str(args.source_chars), "--k", str(args.k), "--max-new-tokens", str(args.max_new_tokens)]
        cmd += (["--limit", str(args.limit)] if args.limit else []) + (["--answers", args.answers] if args.answers else [])
        cmd += ["--expand-with", args.expand_with] if args.expand_with else []
        cmd += [f"--setting={kv}" for kv in args.setting]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{label}: failed (exit {out.returncode})", file=sys.stderr)
            continue
        results[label] = json.loads(line[len("RESULT "):])
    print(f"\n### Answers on {Path(args.set).name} (k={args.k}, source_chars={args.source_chars}"
          + "".join(f", {kv}" for kv in args.setting) + ")\n")
    print("| model | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS))
    for model, r in results.items():
        cells = ["–" if r.get(c) is None else f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
