"""Command line: `rqa ingest|search|ask|serve ...` (or `python -m rqa ...`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rqa.config import Settings
from rqa.search import MODES
from rqa.text import jsonl_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rqa", description="Answer AI-research questions from papers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="build or extend an index from PDF/.md/.txt/.tex files or folders")
    p.add_argument("paths", nargs="+")
    _common(p)
    p.add_argument("--ann", choices=Settings.__dataclass_fields__["ann"].metadata["choices"], help="FAISS index kind")

    p = sub.add_parser("search", help="print the chunks ranked for a question")
    p.add_argument("question", nargs="?")
    _common(p)
    p.add_argument("--queries", type=Path, help='JSONL file of {"id", "question"} lines (batch mode)')
    p.add_argument("--k", type=int)
    p.add_argument("--mode", choices=MODES, default="hybrid")
    _expansion(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("ask", help="answer a question from the index with the local model")
    p.add_argument("question")
    _common(p)
    p.add_argument("--k", type=int)
    p.add_argument("--model", dest="model_path", help="GGUF file to answer with")
    _expansion(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("serve", help="the web app and its OpenAI-compatible API (as `python app.py`)")
    p.add_argument("--papers", help="a folder of papers to ingest at start (papers already indexed are skipped)")
    p.add_argument("--index", dest="index_dir", type=Path, help="index directory (default .rqa/index)")
    p.add_argument("--index-uri", dest="index_uri", help="the index on Milvus: a Milvus Lite file (*.db) or http://host:19530")

    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items()
                 if k in Settings.__dataclass_fields__ and v is not None}
    try:
        settings = Settings.load(**overrides)
        return {"ingest": cmd_ingest, "search": cmd_search, "ask": cmd_ask, "serve": cmd_serve}[args.command](args, settings)
    except Exception as e:  # one clear line, not a traceback, for user errors
        from rqa.errors import USER_ERRORS

        if isinstance(e, USER_ERRORS):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=Path, dest="index_dir", help="index directory (default .rqa/index)")
    p.add_argument("--index-uri", dest="index_uri", help="the index on Milvus: a Milvus Lite file (*.db) or http://host:19530")
    # an index is searched with the embedder and chunking it was built with; others are refused
    p.add_argument("--embedder", help="sentence-transformers model name or folder")
    p.add_argument("--chunk-size", type=int, dest="chunk_size")
    p.add_argument("--overlap", type=int)
    p.add_argument("--method-chunk-factor", type=float, dest="method_chunk_factor")


def _expansion(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expand-tokens", type=int, dest="expand_tokens",
                   help="length of the passage a model writes for BM25 to search with (rqa.expand); 0: the question alone")
    p.add_argument("--expand-with", dest="expand_with", help="offline model name or GGUF path that writes it")


def cmd_ingest(args, settings: Settings) -> int:
    from rqa.collection import ingest_paths

    report = ingest_paths(args.paths, settings)
    for path in report.same_content:
        print(f"{path}: same content as a paper already indexed; stored once", file=sys.stderr)
    replaced = f", {report.papers_removed} old versions removed" if report.papers_removed else ""
    print(f"{report.files} files, {report.papers_added} papers added ({report.pages} pages, "
          f"{report.chunks_added} chunks){replaced}, {len(report.skipped)} skipped -> {settings.index_uri or settings.index_dir}")
    return 0 if report.files > len(report.skipped) or report.files == 0 else 1


def cmd_search(args, settings: Settings) -> int:
    from rqa.collection import open_index
    from rqa.expand import expand
    from rqa.llm import ModelPool
    from rqa.search import retrieve

    if not args.question and not args.queries:
        print("error: give a QUESTION or --queries FILE.jsonl", file=sys.stderr)
        return 2
    index = open_index(settings)
    models = ModelPool(settings)

    def run(question: str) -> tuple[str, list]:
        expansion, notice = expand(question, models, settings) if args.mode != "dense" else ("", None)
        if notice:
            print(f"warning: {notice}", file=sys.stderr)
        return expansion, retrieve(index, question, settings, k=args.k, mode=args.mode, expansion=expansion)

    if args.queries:
        try:
            lines = jsonl_lines(args.queries.read_text(encoding="utf-8"))
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
            print(f"error: {args.queries}: not a readable JSONL file ({type(e).__name__})", file=sys.stderr)
            return 2
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                question = str(q["question"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                print(f"error: {args.queries}:{n}: not a {{\"id\", \"question\"}} line ({e})", file=sys.stderr)
                return 2
            expansion, hits = run(question)
            record = {"id": q.get("id"), "question": question, "expansion": expansion,
                      "hits": [h.to_json() for h in hits]}
            print(json.dumps(record, ensure_ascii=False) if args.json else _format(question, expansion, hits))
        return 0
    expansion, hits = run(args.question)
    if args.json:
        print(json.dumps({"question": args.question, "expansion": expansion, "hits": [h.to_json() for h in hits]},
                         ensure_ascii=False))
    else:
        print(_format(args.question, expansion, hits))
    return 0


def _format(question: str, expansion: str, hits) -> str:
    lines = [f"Q: {question}"] + ([f"(searched with the expected passage: {expansion})"] if expansion else [])
    for n, h in enumerate(hits, start=1):
        c = h.chunk
        lines.append(f"\n[{n}] {c.title} | {c.section} | p. {c.pages} | {c.paper} | score {h.score:.4f}")
        lines.append("    " + c.text[:400].replace("\n", " ") + ("..." if len(c.text) > 400 else ""))
    return "\n".join(lines)


def cmd_serve(args, settings: Settings) -> int:
    from rqa.server import serve

    return serve(settings)


def cmd_ask(args, settings: Settings) -> int:
    from rqa.cli_ask import ask

    return ask(args, settings)


if __name__ == "__main__":
    sys.exit(main())
