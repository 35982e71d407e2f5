"""The answer path after generation, replayed over recorded answers: what the model wrote in a
bench.answers file (`model_text`) finished again by today's `rqa.answer.finish` (source lists
dropped, links removed, citations attributed, sources' sentences quoted, numbers checked) against
the sources searched again with the recorded expansion, and scored as bench.answers scores it. No
model runs, so a change to what happens after the last token is measured on the same 100 answers
in about a minute, one row per value of a setting.

    .venv/bin/python -m bench.replay --index DIR --answers FILE.jsonl --setting quotes=0,1,2 [--with k=5]

Columns: fact accuracy of the answer as shown and of the model's words alone (without the
quotes), fact recall, answers citing, citation precision, evidence cited, unsourced numbers, words
shown, and the correct answers by question type. The equation check is bench.checks's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import DEV, dev_questions
from rqa.answer import finish, stored_vectors
from rqa.collection import load_at
from rqa.config import Settings
from rqa.metrics import score_answer, summarize_answers
from rqa.search import retrieve

COLUMNS = ["fact_accuracy", "fact_accuracy_model", "fact_recall", "answers_citing", "citation_precision",
           "evidence_cited", "unsourced_numbers", "words"]


def replay(rows: list[dict], questions: dict, index, settings: Settings) -> dict:
    scored, words, by_type = [], [], {}
    for r in rows:
        q = questions[r["id"]]
        hits = retrieve(index, r["question"], settings, expansion=r.get("expansion", ""))
        answer = finish(r["question"], r["model_text"].strip(), hits, r["model"], settings, None, [], {},
                        stored_vectors(index, hits),  # as the app's answer path: the same support scores
                        set(r.get("named", [])))
        scored.append(score_answer(q, answer))
        words.append(len(answer.text.split()))
        by_type.setdefault(q["type"], []).append(scored[-1]["correct"])
    by_type = ", ".join(f"{t} {sum(v)}/{len(v)}" for t, v in sorted(by_type.items()))
    return {**summarize_answers(scored), "words": sum(words) / max(len(words), 1), "by_type": by_type}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--answers", type=Path, required=True, help="a bench.answers --answers file")
    ap.add_argument("--set", type=Path, default=DEV)
    ap.add_argument("--setting", default="quotes=2", help="NAME=V1,V2,...: one row per value")
    ap.add_argument("--with", dest="fixed", action="append", default=[],
                    help="NAME=VALUE for every row: what the recorded run was given (k=5 for a 5-source run)")
    args = ap.parse_args()
    name, values = args.setting.split("=", 1)
    questions = {q["id"]: q for q in dev_questions(args.set)}
    rows = [json.loads(line) for line in args.answers.read_text().splitlines() if line.strip()]
    index = load_at(args.index)
    print(f"{args.answers.name}: {len(rows)} recorded answers\n")
    print(f"| {name} | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " | correct by type |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for value in values.split(","):
        fixed = dict(kv.split("=", 1) for kv in args.fixed)
        summary = replay(rows, questions, index, Settings.load(**{**fixed, name: value}))
        print(f"| {value} | " + " | ".join(f"{summary[c]:.2f}" for c in COLUMNS) + f" | {summary['by_type']} |",
              flush=True)


if __name__ == "__main__":
    main()
