"""The answer checks over recorded answers: a bench.answers file checked again with today's numbers
and equation checks, so that a change to a check is measured on the same answers in seconds, and
answer files written before it compare with those written after. No model runs.

- Numbers (rqa.numbers): answers with a number that no source it cites holds, over all questions.
- Equations (rqa.equations), over the equation questions, against the sources the app showed
  (searched again with the recorded expansion, k from the settings): answers holding an equation,
  answers with an equation the check verifies against a source ("matches source", what the app
  shows), and answers with an equation SymPy finds equal to the question's reference `latex` (the
  eval README's key fact for equation questions); and the equation check's time an answer.

    .venv/bin/python -m bench.checks --index DIR --answers FILE.jsonl [--show]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import DEV, dev_questions, percentile
from rqa.collection import load_at
from rqa.config import Settings
from rqa.equations import SympyWorker, check_equations, equals_reference
from rqa.numbers import check_numbers
from rqa.search import retrieve


def unsourced(row: dict) -> bool:
    """Whether the recorded answer states a number no source it cites holds (the file records the
    cited sources' texts, all the check reads)."""
    cited = {c["n"]: c["text"] for c in row["cited"]}
    sources = [cited.get(n, "") for n in range(1, max(cited, default=0) + 1)]
    return any(not c.found for c in check_numbers(body(row), sources, row["question"]))


def body(row: dict) -> str:
    """The answer without the sources' sentences quoted under it: what the checks judge."""
    return row.get("body", row["answer"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--answers", type=Path, required=True)
    ap.add_argument("--set", type=Path, default=DEV)
    ap.add_argument("--show", action="store_true", help="print every equation and its status")
    args = ap.parse_args()
    settings = Settings()
    questions = {q["id"]: q for q in dev_questions(args.set) if q["type"] == "equation"}
    every = [json.loads(line) for line in args.answers.read_text().splitlines() if line.strip()]
    flagged = sum(map(unsourced, every))
    rows = [r for r in every if r["id"] in questions]
    index, worker = load_at(args.index), SympyWorker(settings.sympy_timeout_s)
    worker.call("parse", "a = b")  # started, so the times below are the check's own
    recorded = holding = verified = reference = 0
    seconds = []
    try:
        for r in every:  # every answer for the check's cost; the counts over the equation questions
            hits = retrieve(index, r["question"], settings, k=settings.k, expansion=r.get("expansion", ""))
            start = time.perf_counter()
            checks = check_equations(body(r), [h.chunk.text for h in hits], worker)
            seconds.append(time.perf_counter() - start)
            if r["id"] not in questions:
                continue
            q = questions[r["id"]]
            recorded += any(e["status"] == "matches source" for e in r.get("equations", []))
            holding += bool(checks)
            verified += any(c.status == "matches source" for c in checks)
            reference += equals_reference(body(r), q["latex"], worker)
            if args.show:
                print(r["id"], *(f"\n    [{c.status}] {c.latex}" for c in checks))
    finally:
        worker.close()
    n = len(rows)
    print(f"\n{args.answers.name}: {len(every)} answers, {flagged} ({flagged / max(len(every), 1):.2f}) with a "
          f"number no cited source holds (recorded: {sum(r.get('unsourced_number', False) for r in every)})")
    print(f"\n{n} equation questions\n")
    print("| answers | with an equation | verified against a source | equal to the reference | "
          "verified when answered (recorded) |")
    print("|---|---|---|---|---|")
    print(f"| {n} | {holding} | {verified} ({verified / max(n, 1):.2f}) | {reference} ({reference / max(n, 1):.2f}) "
          f"| {recorded} |")
    print(f"\nThe equation check, every answer against its shown sources: p50 {percentile(seconds, 50) * 1000:.0f} ms, "
          f"p90 {percentile(seconds, 90) * 1000:.0f} ms, max {max(seconds, default=0):.2f} s")


if __name__ == "__main__":
    main()
