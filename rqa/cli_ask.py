"""`python -m rqa ask`: the app's answer path in the terminal."""

from __future__ import annotations

import json
import sys

from rqa.answer import answer_stream
from rqa.config import Settings
from rqa.collection import open_index
from rqa.equations import SympyWorker
from rqa.llm import ModelPool


def ask(args, settings: Settings) -> int:
    index = open_index(settings)
    models = ModelPool(settings)
    sympy = SympyWorker(settings.sympy_timeout_s)
    try:
        stream = answer_stream(args.question, index, models, settings, sympy)
        streamed = []
        for piece in stream:
            streamed.append(piece)
            if not args.json:
                print(piece, end="", flush=True)
        answer = stream.answer
    finally:
        sympy.close()
    if args.json:
        print(json.dumps(answer.to_json(), ensure_ascii=False))
        return 0
    if answer.body != "".join(streamed).strip():  # sources named after the answer, attributions, lists dropped
        print("\n\nThe answer as checked, with its citations:\n" + answer.body)
    if answer.quotes:
        print("\n\nFrom the sources:" + answer.quote_text)
    print("\n\nSources:")
    for c in answer.citations:
        ch = c.hit.chunk
        origin = {"attributed": " (attributed by rqa)",
                  "named": " (named by the model after its answer)"}.get(c.origin, "")
        print(f"  [{c.n}] {ch.title} | {ch.section} | p. {ch.pages}" + (f" | {c.arxiv_url}" if c.arxiv_url else "")
              + origin)
    if answer.uncited:
        print("Retrieved, not cited: " + ", ".join(f"[{c.n}] {c.hit.chunk.title}" for c in answer.uncited))
    checks = answer.checks()
    for n in checks["notices"]:
        print(f"note: {n}", file=sys.stderr)
    if checks["invalid_citations"]:
        print(f"warning: citations to missing sources: {checks['invalid_citations']}")
    for s in checks["unsupported_sentences"]:
        print(f"unsupported: {s}")
    for e in answer.equations:
        print(f"equation {e.status}: {e.latex}")
    return 0
