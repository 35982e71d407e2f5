"""How much of the answer the model is shown: for each way of cutting the sources into the prompt,
the dev questions whose key facts all appear in it (the README's fact matching), against the
prompt's length. No model answers, so this is the ceiling a prompt sets, measured in seconds; the
answer benchmark then says how much of it a model turns into right answers.

Retrieval is the app's (rqa.search.retrieve, hybrid). With `--answers FILE` (a bench.answers
output) each question is searched with the expansion recorded there, as the app searched it;
without, with the question alone.

    .venv/bin/python -m bench.prompt_facts --index DIR [--answers FILE.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.common import DEV, dev_questions
from rqa.collection import load_at
from rqa.config import Settings
from rqa.metrics import fact_in
from rqa.prompt import build_messages
from rqa.search import retrieve

# (sources, characters of each): the default, then the same prompt length cut other ways
LAYOUTS = [(5, 600), (5, 450), (5, 800), (5, 1000), (4, 600), (4, 800), (4, 1000), (3, 1000), (6, 600)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--set", type=Path, default=DEV)
    ap.add_argument("--answers", type=Path, help="a bench.answers JSONL: search with its recorded expansions")
    args = ap.parse_args()
    index, questions, settings = load_at(args.index), dev_questions(args.set), Settings()
    expansions = {}
    if args.answers:
        expansions = {r["id"]: r.get("expansion", "") for r in map(json.loads, args.answers.read_text().splitlines())}
    hits = [retrieve(index, q["question"], settings, k=10, expansion=expansions.get(q["id"], "")) for q in questions]
    how = "with the recorded expansions" if expansions else "on the question alone"
    print(f"dev: {len(questions)} questions, hybrid {how}\n")
    print("| sources x characters | facts all in the prompt | in the whole chunks | prompt characters, mean |")
    print("|---|---|---|---|")
    for k, chars in LAYOUTS:
        shown = whole = 0
        lengths = []
        for q, hs in zip(questions, hits):
            prompt = build_messages(q["question"], hs[:k], source_chars=chars)[1]["content"]
            chunks = "\n".join(h.chunk.text for h in hs[:k])
            shown += all(fact_in(f, prompt) for f in q["facts"])
            whole += all(fact_in(f, chunks) for f in q["facts"])
            lengths.append(len(prompt))
        print(f"| {k} x {chars} | {shown} | {whole} | {np.mean(lengths):,.0f} |")


if __name__ == "__main__":
    main()
